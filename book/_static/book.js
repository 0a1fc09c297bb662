// The book's tables and figures (issue 16): a column whose cells are all numbers is
// right-aligned, its header with it, and a header row with nothing but an empty corner and one
// column name over key/value pairs (the model card's tables) is marked so that book.css hides
// it. Each figure links to its picture at full size.
(function () {
  "use strict";

  // 0.9961, 99,442, -1.5e-03, 12.3 %, 245.6 s, nan: figures a reader compares down a column.
  const NUMBER = /^[-+\u2212]?(\d[\d,]*(\.\d+)?|\.\d+)([eE][-+]?\d+)?\s*(%|s|ms|min)?$|^(nan|NaN|inf|-inf)$/;

  function isNumber(text) {
    return NUMBER.test(text.trim());
  }

  function tidy(table) {
    const body = table.tBodies[0];
    if (!body) return;
    const rows = Array.from(body.rows);
    const columns = Math.max(0, ...rows.map((row) => row.cells.length));
    for (let column = 0; column < columns; column++) {
      const cells = rows.map((row) => row.cells[column]).filter((cell) => cell && cell.tagName === "TD");
      const filled = cells.filter((cell) => cell.textContent.trim() !== "");
      // A column of sentences (chapter 4's "what it measures") keeps a readable width on a
      // phone: the table scrolls sideways rather than squeeze it to a word a line.
      if (filled.some((cell) => cell.textContent.trim().length > 40)) {
        cells.forEach((cell) => cell.classList.add("book-prose"));
      }
      if (!filled.length || !filled.every((cell) => isNumber(cell.textContent))) continue;
      cells.forEach((cell) => cell.classList.add("book-num"));
      if (table.tHead) {
        for (const row of table.tHead.rows) {
          if (row.cells.length === columns && row.cells[column]) row.cells[column].classList.add("book-num");
        }
      }
    }
    // A pandas key/value table: a header row of an empty corner and a single column name,
    // over rows whose first cell names the value.
    if (table.classList.contains("dataframe") && table.tHead && table.tHead.rows.length === 1) {
      const header = table.tHead.rows[0];
      const allText = rows.every((row) => row.cells.length === 2 && !isNumber(row.cells[0].textContent));
      if (header.cells.length === 2 && header.cells[0].textContent.trim() === "" && allText &&
          rows.some((row) => !isNumber(row.cells[1].textContent))) {
        header.classList.add("book-empty-header");
      }
    }
  }

  // A figure (a cell's PNG output) is made to fit a desktop's column at its own size; on a
  // phone it shrinks to the screen. A tap on it opens the picture itself, at full size, where
  // the reader can pan and zoom.
  function linkFigure(img) {
    if (img.closest("a, .widget-subarea")) return;
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "book-figure-link";
    link.title = "Open the figure at full size";
    img.parentNode.insertBefore(link, img);
    link.appendChild(img);
  }

  function run() {
    document.querySelectorAll(".bd-content table").forEach(tidy);
    document.querySelectorAll(".bd-content div.cell_output img").forEach(linkFigure);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
