"""Sphinx extension: the book serves its own browser code, so it works with no network.

Copied into the HTML output, outside ``_static/`` (Jupyter Book adds every script there
to every page, and a widget manager loaded twice draws every widget twice):

- ``_vendor/``: RequireJS, the Jupyter widget manager, MathJax and onnxruntime-web,
  installed from npm by ``npm ci`` (pinned in package.json and package-lock.json), and
  the ipycanvas widget code from the pinned Python package, the same version as the
  notebooks' kernel side;
- ``_demo/``: the live demo's scripts and style (this folder) and the ONNX model
  written by ``python -m mnist_tutorial export-onnx --inside`` (without ``--inside``
  the demo shows the probabilities only).

``_config.yml`` points myst-nb's widget scripts and Sphinx's MathJax at ``_vendor/``.

It also keeps sphinx-thebe's scripts off the pages while Thebe is off
(``launch_buttons: thebe: false``). Jupyter Book always loads sphinx-thebe, which
registers an inline script (``const THEBE_JS_URL = ...``) after the builder has started:
Sphinx then adds it to every page twice, and the second copy throws "Identifier
'THEBE_JS_URL' has already been declared" in every reader's console. With Thebe on, the
copies are reduced to one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent

#: (folder under node_modules, file patterns, folder under _vendor) per npm package.
NPM_FILES = [
    ("requirejs", ["require.js"], "requirejs"),
    # The widget manager finds its icon fonts beside its own script.
    (
        "@jupyter-widgets/html-manager/dist",
        ["embed-amd.js", "*.woff", "*.woff2", "*.ttf", "*.eot", "*.svg"],
        "html-manager",
    ),
    # The combined TeX component, and what it loads on demand: TeX extensions, fonts,
    # menu, accessibility.
    (
        "mathjax/es5",
        [
            "tex-mml-chtml.js",
            "input/**/*",
            "output/chtml.js",
            "output/chtml/**/*",
            "ui/**/*",
            "a11y/**/*",
            "sre/**/*",
            "adaptors/**/*",
        ],
        "mathjax",
    ),
    # The WebAssembly build only (one CPU thread: a static page is not cross-origin
    # isolated).
    (
        "onnxruntime-web/dist",
        [
            "ort.wasm.min.js",
            "ort-wasm-simd-threaded.mjs",
            "ort-wasm-simd-threaded.wasm",
        ],
        "onnxruntime-web",
    ),
]
#: Third-party widget modules: name -> its AMD script in the package's nbextension.
WIDGET_MODULES = {"ipycanvas": "ipycanvas/index.js"}
#: The demo's own files, from this folder.
DEMO_FILES = ["demo.js", "demo.css", "preprocess.js", "widget-modules.js"]


def _copy(source: Path, destination: Path) -> None:
    """Copy a file unless an identical copy (same size and time) is already there."""
    if destination.is_file():
        have, want = destination.stat(), source.stat()
        if have.st_size == want.st_size and int(have.st_mtime) == int(want.st_mtime):
            return
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def _nbextension(relative: str) -> Path | None:
    """Return the installed nbextension file (e.g. ipycanvas/index.js), or None."""
    from jupyter_core.paths import jupyter_path

    for folder in [
        *jupyter_path("nbextensions"),
        str(Path(sys.prefix) / "share" / "jupyter" / "nbextensions"),
    ]:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def plan(root: Path, node_modules: Path, model: Path) -> dict[Path, Path]:
    """Return every file to serve (path in the HTML output -> source).

    Raises ExtensionError naming the fix when one is missing.
    """
    if not node_modules.is_dir():
        raise ExtensionError(
            f"{node_modules} is missing: run `npm ci` in {root} first (the site serves "
            "its widget, MathJax and ONNX scripts from there)"
        )
    files: dict[Path, Path] = {}
    for package, patterns, target in NPM_FILES:
        folder = node_modules / package
        found = [
            path
            for pattern in patterns
            for path in folder.glob(pattern)
            if path.is_file()
        ]
        if not found:
            raise ExtensionError(
                f"{folder} is missing or empty: run `npm ci` in {root} (package.json "
                "pins it)"
            )
        files.update(
            {Path("_vendor", target, path.relative_to(folder)): path for path in found}
        )
    for module, relative in WIDGET_MODULES.items():
        script = _nbextension(relative)
        if script is None:
            raise ExtensionError(
                f"the {module} widget code ({relative}) is not installed: run `pip "
                "install -r requirements.txt`"
            )
        files[Path("_vendor", "widgets", f"{module}.js")] = script
    if not model.is_file():
        raise ExtensionError(
            f"the demo's model {model} is missing: run `python -m mnist_tutorial "
            f"export-onnx --inside --out {model}` in {root}"
        )
    # The demo loads it under this name whatever the configured file is called.
    files[Path("_demo", "mnist_cnn.onnx")] = model
    files.update({Path("_demo", name): HERE / name for name in DEMO_FILES})
    return files


def copy_assets(app: Sphinx) -> None:
    """Copy the served files into the HTML output before the pages are written.

    Copied first, they get cache-busting checksums.
    """
    if app.builder.format != "html":
        return
    root = Path(app.srcdir)
    files = plan(
        root,
        root / app.config.offline_assets_node_modules,
        root / app.config.offline_assets_model,
    )
    for target, source in files.items():
        _copy(source, Path(app.outdir) / target)
    logger.info("offline assets: %d files in _vendor/ and _demo/", len(files))


def _thebe_enabled(app: Sphinx) -> bool:
    """Return whether _config.yml turns Thebe on (``launch_buttons: thebe``)."""
    options = app.config.html_theme_options or {}
    return bool((options.get("launch_buttons") or {}).get("thebe"))


def _is_thebe_asset(asset: Any) -> bool:
    """Return whether a page's script or style sheet is sphinx-thebe's."""
    filename = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", ""))
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body


def _asset_key(asset: Any) -> tuple[str, str]:
    """Identify a script or style sheet by its file and inline body."""
    attributes = getattr(asset, "attributes", {})
    return (str(getattr(asset, "filename", "") or ""), str(attributes.get("body", "")))


def tidy_page_assets(
    app: Sphinx,
    pagename: str,
    templatename: str,
    context: dict[str, Any],
    doctree: Any,
) -> None:
    """Give a page each script and style sheet once; none of Thebe's while it is off."""
    drop_thebe = not _thebe_enabled(app)
    for key in ("script_files", "css_files"):
        if key not in context:
            continue
        seen: set[tuple[str, str]] = set()
        kept = []
        for asset in context[key]:
            if (drop_thebe and _is_thebe_asset(asset)) or _asset_key(asset) in seen:
                continue
            seen.add(_asset_key(asset))
            kept.append(asset)
        context[key] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the configuration values and the copy step."""
    app.add_config_value("offline_assets_node_modules", "node_modules", "env", [str])
    app.add_config_value(
        "offline_assets_model", "build/demo/mnist_cnn.onnx", "env", [str]
    )
    app.connect("builder-inited", copy_assets)
    app.connect("html-page-context", tidy_page_assets)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
