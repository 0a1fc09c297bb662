"""The book builds cleanly with Jupyter Book 1, and every page shows the outputs its notebook stores."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "book/intro",
    "book/01_exploring_mnist",
    "book/02_building_a_cnn",
    "book/03_training",
    "book/04_mistakes",
    "book/05_your_digits",
    "book/06_experiments",
    "book/07_from_scratch",
    "book/model_card",
]
# Paths of the machine that executed a notebook must not be published with it.
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|[A-Z]:\\\\Users)")


def source_of(page: str) -> Path:
    """The .ipynb or .md file of a TOC entry."""
    return next(path for path in (ROOT / f"{page}.ipynb", ROOT / f"{page}.md") if path.exists())


def notebooks() -> list[Path]:
    """Every notebook the TOC lists."""
    return [ROOT / f"{page}.ipynb" for page in PAGES if (ROOT / f"{page}.ipynb").exists()]


def figure_count(notebook: Path) -> int:
    """How many image outputs the notebook stores."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum(
        1
        for cell in cells
        for output in cell.get("outputs", [])
        if {"image/png", "image/jpeg", "image/svg+xml"} & set(output.get("data", {}))
    )


def test_toc_lists_the_chapters_in_order() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    assert [toc["root"]] + [chapter["file"] for chapter in toc["chapters"]] == PAGES
    for page in PAGES:
        assert source_of(page)


def test_config_builds_stored_outputs_only() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert {".venv", "_build", "README.md", "tests", "benchmarks", "node_modules"} <= set(config["exclude_patterns"])


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda path: path.stem)
def test_stored_outputs_are_clean(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"cell {index} stores an error"
            text = json.dumps({key: value for key, value in output.get("data", {}).items() if key.startswith("text/")})
            text += "".join(output.get("text", ""))
            assert not MACHINE_PATH.search(text), f"cell {index} shows a machine path: {MACHINE_PATH.search(text)[0]}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_built_with_its_figures(built_html: Path, page: str) -> None:
    html_file = built_html / f"{page}.html"
    assert html_file.is_file(), f"{page}.html was not built"
    html = html_file.read_text()
    source = source_of(page)
    if source.suffix == ".ipynb":
        expected = figure_count(source)
        shown = len(re.findall(r"<img\b", html))
        assert shown >= expected, f"{page}: {expected} figures stored, {shown} <img> tags in the page"
    assert "<h1>" in html


def test_book_has_a_landing_page(built_html: Path) -> None:
    assert (built_html / "index.html").is_file()
    assert "Handwritten digits with PyTorch" in (built_html / "book" / "intro.html").read_text()
