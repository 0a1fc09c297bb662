"""The book builds cleanly with Jupyter Book 1, and every page shows the outputs its notebook stores."""

import ast
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
    "book/08_beyond_the_notebook",
    # The live demo: a part of its own, between the chapters and the reference pages.
    "book/demo",
    "book/model_card",
    "book/glossary",
    "book/references",
]
CHAPTERS = PAGES[1:9]
# Paths of the machine that executed a notebook must not be published with it.
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|[A-Z]:\\\\Users)")


def source_of(page: str) -> Path:
    """The .ipynb or .md file of a TOC entry."""
    return next(
        path for path in (ROOT / f"{page}.ipynb", ROOT / f"{page}.md") if path.exists()
    )


def notebooks() -> list[Path]:
    """Every notebook the TOC lists."""
    return [
        ROOT / f"{page}.ipynb" for page in PAGES if (ROOT / f"{page}.ipynb").exists()
    ]


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
    chapters, try_it, reference = toc["parts"]
    assert chapters["numbered"] is True
    assert not try_it.get("numbered") and not reference.get("numbered")
    listed = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    assert [toc["root"], *listed] == PAGES
    for page in PAGES:
        assert source_of(page)


def test_config_builds_stored_outputs_only() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert {
        ".venv",
        "_build",
        "README.md",
        "tests",
        "benchmarks",
        "node_modules",
    } <= set(config["exclude_patterns"])


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda path: path.stem)
def test_stored_outputs_are_clean(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"cell {index} stores an error"
            text = json.dumps(
                {
                    key: value
                    for key, value in output.get("data", {}).items()
                    if key.startswith("text/")
                }
            )
            text += "".join(output.get("text", ""))
            assert not MACHINE_PATH.search(text), (
                f"cell {index} shows a machine path: {MACHINE_PATH.search(text)[0]}"
            )


@pytest.mark.slow  # builds the whole book
@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_built_with_its_figures(built_html: Path, page: str) -> None:
    html_file = built_html / f"{page}.html"
    assert html_file.is_file(), f"{page}.html was not built"
    html = html_file.read_text()
    source = source_of(page)
    if source.suffix == ".ipynb":
        expected = figure_count(source)
        shown = len(re.findall(r"<img\b", html))
        assert shown >= expected, (
            f"{page}: {expected} figures stored, {shown} <img> tags in the page"
        )
    assert "<h1>" in html


@pytest.mark.slow  # builds the whole book
def test_book_has_a_landing_page(built_html: Path) -> None:
    assert (built_html / "index.html").is_file()
    assert (
        "Handwritten digits with PyTorch"
        in (built_html / "book" / "intro.html").read_text()
    )


SHORT_NAMES = [
    "exploring",
    "cnn",
    "training",
    "mistakes",
    "digits",
    "experiments",
    "scratch",
    "beyond",
]


def cells_of(page: str) -> list[dict]:
    """The cells of a chapter's notebook."""
    return json.loads((ROOT / f"{page}.ipynb").read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def statements(cell: dict) -> list[ast.stmt]:
    """The top-level statements of a code cell (none for a cell that is not plain Python)."""
    try:
        return ast.parse(source(cell)).body
    except SyntaxError:
        return []


@pytest.mark.parametrize("page", CHAPTERS)
def test_test_scaffolding_stays_out_of_the_readers_way(page: str) -> None:
    """nbval markers are cell tags, and asserts live in cells the website removes."""
    for index, cell in enumerate(cells_of(page)):
        if cell["cell_type"] != "code":
            continue
        assert "NBVAL_" not in source(cell), (
            f"cell {index}: use an nbval cell tag, not a # NBVAL_ comment"
        )
        if "remove-cell" in tags(cell):
            assert statements(cell), (
                f"cell {index} is removed from the page but holds no code"
            )
        else:
            shown = [node for node in statements(cell) if isinstance(node, ast.Assert)]
            assert not shown, (
                f"cell {index}: a reader sees an assert; move it to a cell tagged "
                "remove-cell"
            )


@pytest.mark.parametrize("page", CHAPTERS)
def test_every_ignored_output_is_asserted(page: str) -> None:
    """nbval does not compare these outputs, so a hidden cell right after must check what matters."""
    code = [cell for cell in cells_of(page) if cell["cell_type"] == "code"]
    for ignored, following in zip(code, [*code[1:], None], strict=True):
        if "nbval-ignore-output" in tags(ignored) and "hide-cell" not in tags(ignored):
            assert following is not None and "remove-cell" in tags(following), (
                f"{source(ignored)[:60]!r}: its output is ignored and no hidden assert "
                "cell follows"
            )
            assert any(isinstance(node, ast.Assert) for node in statements(following))


@pytest.mark.parametrize(
    ("page", "short"), list(zip(CHAPTERS, SHORT_NAMES, strict=True))
)
def test_chapters_close_with_summary_questions_and_executed_exercises(
    page: str, short: str
) -> None:
    cells = cells_of(page)
    markdown = "\n".join(
        source(cell) for cell in cells if cell["cell_type"] == "markdown"
    )
    order = ["## Summary", f"(sec-{short}-check)=", f"(sec-{short}-exercises)="]
    assert all(mark in markdown for mark in order), f"missing one of {order}"
    assert sorted(order, key=markdown.index) == order, (
        f"the chapter must close with {order}, in that order"
    )
    assert not re.search(r"^\s*(```|~~~)\s*python", markdown, re.MULTILINE), (
        "solution code must be an executed cell"
    )
    exercises = [
        index
        for index, cell in enumerate(cells)
        if source(cell).startswith(f"(ex-{short}-")
    ]
    assert exercises, "the chapter has no labelled exercises"
    for index in exercises:
        your_turn = cells[index + 1]
        assert your_turn["cell_type"] == "code" and not your_turn.get("outputs"), (
            f"exercise at cell {index}: no empty 'your turn' cell"
        )
    solutions = [cell for cell in cells if "hide-cell" in tags(cell)]
    assert len(solutions) >= len(exercises), (
        "each exercise needs an executed, folded solution"
    )
    for cell in solutions:
        assert cell["execution_count"] and cell["metadata"].get("jupyter", {}).get(
            "source_hidden"
        ), "fold solutions in JupyterLab too"
