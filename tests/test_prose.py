"""The book's words agree with its numbers: every figure the prose states is printed by a cell.

A figure is a number with decimals (99.61 %, 0.0978, 2.9x, 15.4 s), or a whole-number
ratio or time (12x, 3 times, 15 s, 4 min). Each one in a chapter's markdown must appear
in the outputs that chapter's notebook stores, at the precision the sentence uses (a
fraction printed as 0.9961 backs "99.61 %", and the reverse); a figure on a Markdown
page (intro, model card, demo) may come from any chapter. A bare decimal below 1 (a
setting such as a learning rate of 0.01) may instead stand in the page's code. Figures
quoted from the literature are listed in LITERATURE with the reference the sentence
cites. Placeholders ("to be measured", TODO) never reach a reader."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

UNITS = r"%|x(?![\dx])|×(?!\s*\d)|times\b|ms\b|s\b|sec\b|seconds?\b|min\b|minutes?\b|h\b|hours?\b|points?\b"
# A decimal with or without a unit, or a whole number with a ratio or time unit.
FIGURE = re.compile(
    rf"(?<![\w.,/-])(?P<number>\d{{1,3}}(?:,\d{{3}})*(?:\.\d+)?|\d+(?:\.\d+)?)(?:\s?(?P<unit>{UNITS}))?(?![\w.]\d)"
)
PLACEHOLDER = re.compile(
    r"to\s+be\s+measured|\bTODO\b|\bTBD\b|\bFIXME\b|not\s+(?:yet\s+)?timed",
    re.IGNORECASE,
)
# Markup whose numbers are not statements: inline code, links' targets, HTML, MyST
# labels and directive options, display math (its numbers are in the sentence around
# it).
NOT_PROSE = re.compile(
    r"`[^`\n]*`|\]\([^)]*\)|<[^>]+>|^\([\w-]+\)=$|^\s*:\w[\w-]*:.*$|\$\$.*?\$\$",
    re.DOTALL | re.MULTILINE,
)
FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>\S*)")
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

# Figures quoted from published work: (page, figure as written) -> the bibliography key
# the page cites.
LITERATURE: dict[tuple[str, str], str] = {
    (
        "02_building_a_cnn",
        "0.95",
    ): "lecun1998gradient",  # LeNet-5's test error rate, in %
    (
        "06_experiments",
        "0.23",
    ): "ciresan2012multi",  # a committee of 35 networks' test error rate, in %
}


def markdown_of(page: Path) -> str:
    """The prose of a page: its Markdown cells, or the whole Markdown file."""
    if page.suffix == ".md":
        return page.read_text()
    cells = json.loads(page.read_text())["cells"]
    return "\n\n".join(
        "".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"
    )


def code_of(page: Path) -> str:
    """The source of a notebook's code cells (empty for a Markdown page)."""
    if page.suffix == ".md":
        return ""
    cells = json.loads(page.read_text())["cells"]
    return "\n".join(
        "".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"
    )


def outputs_of(notebook: Path) -> str:
    """Every text a notebook's stored outputs show: streams, plain text, HTML without its tags, Markdown."""
    texts = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/"):
                    texts.append(
                        re.sub(
                            r"<[^>]+>",
                            " ",
                            "".join(value) if isinstance(value, list) else value,
                        )
                    )
    return "\n".join(texts)


def printed_values(text: str) -> set[float]:
    """The numbers a text shows."""
    return {float(match.replace(",", "")) for match in NUMBER.findall(text)}


def backed(figure: str, values: set[float]) -> bool:
    """Whether a value, as it is or as a fraction/percentage of it, rounds to the figure as written."""
    written = figure.replace(",", "")
    decimals = len(written.partition(".")[2])
    target = float(written)
    for value in values:
        for scaled in (value, value * 100, value / 100):
            if (
                abs(scaled - target) < 10**-decimals
                and f"{scaled:.{decimals}f}" == written
            ):
                return True
    return False


def without_code(markdown: str) -> str:
    """The Markdown less its code blocks; a directive's body (a dropdown, a note) stays: it is prose."""
    kept, open_fences = [], []  # each open fence: (its characters, whether it is code)
    for line in markdown.splitlines():
        match = FENCE.match(line)
        if (
            match
            and open_fences
            and match["fence"][0] == open_fences[-1][0][0]
            and not match["info"]
            and len(match["fence"]) >= len(open_fences[-1][0])
        ):
            open_fences.pop()
        elif match and not any(code for _, code in open_fences):
            info = match["info"]
            open_fences.append(
                (match["fence"], not info.startswith("{") or info.startswith("{code"))
            )
        elif not any(code for _, code in open_fences):
            kept.append(line)
    return "\n".join(kept)


def figures(prose: str) -> Iterator[tuple[str, str]]:
    """Each figure the prose states, with the line around it."""
    for line in NOT_PROSE.sub(" ", without_code(prose)).splitlines():
        inline_math = re.sub(
            r"\$[^$]*\$",
            lambda m: m.group(0) if re.search(r"\d\.\d", m.group(0)) else " ",
            line,
        )
        for match in FIGURE.finditer(inline_math):
            number, unit = match.group("number"), match.group("unit")
            if "." in number and (unit or number.startswith("0.")):
                yield number, line.strip()
            elif "." in number and not unit:
                continue  # 3.11, 2.14.1: versions and section numbers, not measurements
            elif unit and unit not in ("%", "points", "point"):
                yield number, line.strip()


PAGES = sorted(BOOK.glob("*.ipynb")) + sorted(BOOK.glob("*.md"))
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


@pytest.fixture(scope="module")
def book_values() -> set[float]:
    return set().union(
        *(printed_values(outputs_of(notebook)) for notebook in NOTEBOOKS)
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_every_figure_is_printed_by_a_cell(page: Path, book_values: set[float]) -> None:
    values = (
        printed_values(outputs_of(page)) if page.suffix == ".ipynb" else book_values
    )
    settings = printed_values(code_of(page))
    unbacked = []
    for figure, line in figures(markdown_of(page)):
        if (page.stem, figure) in LITERATURE or backed(figure, values):
            continue
        if figure.startswith("0.") and backed(figure, settings):
            continue
        unbacked.append(f"{figure} in: {line[:120]}")
    assert not unbacked, (
        f"{page.name}: {len(unbacked)} figures no output prints:\n"
        + "\n".join(unbacked)
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_no_placeholder_reaches_a_reader(page: Path) -> None:
    shown = markdown_of(page) + (outputs_of(page) if page.suffix == ".ipynb" else "")
    holes = [match.group(0) for match in PLACEHOLDER.finditer(shown)]
    assert not holes, f"{page.name}: placeholders {holes}"


def test_quoted_figures_cite_their_source() -> None:
    bibliography = (
        (BOOK / "references.bib").read_text()
        if (BOOK / "references.bib").exists()
        else ""
    )
    for (stem, figure), key in LITERATURE.items():
        page = next(path for path in PAGES if path.stem == stem)
        prose = markdown_of(page)
        assert figure in prose, (
            f"{stem}: allow-listed {figure} no longer appears: remove it from "
            "LITERATURE"
        )
        assert re.search(rf"^@\w+\{{{re.escape(key)},", bibliography, re.MULTILINE), (
            f"{key} is not in book/references.bib"
        )
        assert re.search(rf"\{{cite[:\w]*\}}`[^`]*\b{re.escape(key)}\b", prose), (
            f"{stem} quotes {figure} but never cites {key}"
        )


def test_the_scanner_finds_what_it_must() -> None:
    """The rules above, on sentences whose verdict is known."""
    assert (
        without_code(
            "a\n```{dropdown} Solution\n~~~python\nx = 1.5\n~~~\nIt took 2.5 s.\n```\nb"
        )
        == "a\nIt took 2.5 s.\nb"
    )
    found = [
        figure
        for figure, _ in figures(
            "AdamW scored 98.18 % in 15.4 s, 2.9x faster, 12x in all, 4 times more, "
            "log loss 0.0978; Python 3.11, 28x28 pixels, `lr=0.05`, $\\eta$, 70,000 "
            "digits, 99 % of them, after 3 s."
        )
    ]
    assert found == ["98.18", "15.4", "2.9", "12", "4", "0.0978", "3"]
    assert (
        backed("99.61", {0.99612})
        and backed("0.9961", {99.61})
        and backed("2.9", {2.94})
    )
    assert (
        not backed("98.18", {98.15})
        and not backed("99.61", {99.6})
        and not backed("3", {3.6})
    )
