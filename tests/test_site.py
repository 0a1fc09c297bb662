"""The published site in a real browser (Playwright driving Debian's Chromium), with no network.

Every page of the built book loads with no console error, every image, script and style
sheet resolves, the table of contents works (the menu and page-contents buttons on a phone
and a desktop), code fits its column on a desktop, the chapters' widgets and math render,
and the live demo reads drawn and uploaded digits exactly as the Python package does, and
says when it cannot. Screenshots of every page at a desktop's and a phone's width, timings
and the demo's agreement with Python are saved under $MNIST_SITE_ARTIFACTS (default
build/test-artifacts/site)."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import statistics
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

#: Every test here needs the built book and Chromium.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Flags that keep Chromium from calling home, which the offline check would see as
# refused requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: The widths a reader meets the site at: a laptop's screen and a phone's.
WIDTHS = {"desk": (1366, 900), "phone": (390, 844)}
#: Code blocks allowed to be wider than their column at 1366 px, per page: none. The
#: package's source, shown by the chapters, and the chapters' code cells are formatted to
#: 88 columns and set in a font that fits 88 columns, and outputs wrap.
CODE_WIDER_THAN_COLUMN: dict[str, int] = {}
#: Figures allowed to be shown smaller than their natural size at 1366 px, per page. The
#: figures are made to fit the column (mnist_tutorial.plots.MAX_FIGURE_WIDTH_IN), so that
#: their text shows at 9 pt or more. Chapter 6's seven figures are the exception: its
#: stored outputs predate that size and it takes 30 minutes to execute; they are allowed
#: until issue 13 executes chapter 6 again, and this entry must then go.
FIGURES_SHRUNK = {"book/06_experiments.html": 7}
CDN_HOSTS = re.compile(
    r"cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|unpkg\.com|mathjax\.org|googleapis\.com"
)
ARTIFACTS = Path(
    os.environ.get("MNIST_SITE_ARTIFACTS", ROOT / "build" / "test-artifacts" / "site")
)
TIMEOUT_MS = 120_000
SAMPLES = ROOT / "book" / "samples"
# Pen strokes in the unit square (x right, y down), one list of points per stroke.
DRAWINGS: dict[int, list[list[tuple[float, float]]]] = {
    0: [
        [
            (0.5 + 0.2 * np.sin(t), 0.5 - 0.3 * np.cos(t))
            for t in np.linspace(0, 2 * np.pi, 25)
        ]
    ],
    1: [[(0.48, 0.18), (0.52, 0.82)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.42, 0.82)]],
}
# Uploads through the page's file input (true digit in the name).
UPLOADS = ["stroke-092-digit-2.png", "photo-033-digit-3.png", "photo-074-digit-4.png"]


def toc_pages() -> list[str]:
    """Every page the TOC lists (root, each part's chapters and their sections), as paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def walk(entries: list[dict[str, Any]]) -> Iterator[str]:
        for entry in entries:
            yield entry["file"]
            yield from walk(entry.get("sections", []))

    return [
        toc["root"],
        *(page for part in toc["parts"] for page in walk(part["chapters"])),
    ]


@pytest.fixture(scope="module")
def site(built_html: Path) -> Path:
    """The book built once for the session (tests/conftest.py), warnings as errors."""
    return built_html


def built_pages(site: Path) -> list[str]:
    """Every HTML page of the build, relative paths, the served vendor and demo folders left out."""
    skip = ("_static", "_vendor", "_demo", "_sources", "_images")
    return sorted(
        path.relative_to(site).as_posix()
        for path in site.rglob("*.html")
        if path.relative_to(site).parts[0] not in skip
    )


def test_no_page_asks_a_cdn_for_code(site: Path) -> None:
    for page in built_pages(site):
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", (site / page).read_text()):
            assert not CDN_HOSTS.search(tag), f"{page} loads from a CDN: {tag}"


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    """Serve the build on 127.0.0.1 from a thread; return its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, or a skip where it is missing (a failure where MNIST_SITE_TESTS=required, as in CI)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("MNIST_SITE_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


class Visit:
    """A browser page that records what went wrong while it loaded: console errors, failures, outside requests."""

    def __init__(
        self, browser: Any, base: str, width: int = 1280, height: int = 900
    ) -> None:
        phone = width < 600
        self.context = browser.new_context(
            viewport={"width": width, "height": height},
            is_mobile=phone,
            has_touch=phone,
        )
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.broken: list[str] = []
        # No network: anything not served by the test server is refused and recorded.
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on(
            "console",
            lambda message: (
                message.type == "error" and self.errors.append(message.text)
            ),
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "requestfailed",
            lambda request: (
                request.url.startswith(base)
                and self.broken.append(f"{request.url} ({request.failure})")
            ),
        )
        self.page.on(
            "response",
            lambda response: (
                response.status >= 400
                and self.broken.append(f"{response.url} (HTTP {response.status})")
            ),
        )

    def _route(self, route: Any) -> None:
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def visit(browser: Any, server: str) -> Iterator[Visit]:
    """A fresh recorded browser page."""
    recorder = Visit(browser, server)
    yield recorder
    recorder.close()


def artifact(name: str) -> Path:
    """Return a path under the artifacts folder, creating the folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def wait_for_math_and_widgets(page: Any) -> dict[str, int]:
    """Wait until MathJax has typeset and the widget manager has drawn every widget; return what the page holds."""
    counts = page.evaluate("""() => ({
        math: document.querySelectorAll('.math').length,
        views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    })""")
    if counts["math"]:
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
        )
        page.evaluate("() => MathJax.startup.promise")
    if counts["views"]:
        page.wait_for_function(
            "n => document.querySelectorAll('.widget-subarea > *').length >= n",
            arg=counts["views"],
        )
    return counts


# The test server is local: never ask a proxy from the environment for it.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def resolves(url: str) -> bool:
    """Return whether the test server answers the URL with 200."""
    request = urllib.request.Request(url.split("#")[0], method="HEAD")
    with DIRECT.open(request, timeout=60) as response:
        return response.status == 200


def test_every_page_loads_offline_with_no_errors(
    site: Path, server: str, visit: Visit
) -> None:
    pages = built_pages(site)
    assert {f"{page}.html" for page in toc_pages()} <= set(pages)
    checked_urls: set[str] = set()
    report = []
    for page_path in pages:
        page = visit.page
        page.goto(server + page_path, wait_until="load")
        if page_path == "index.html":
            # The landing page is a redirect to the book's first page.
            page.wait_for_url("**/book/intro.html")
            page.wait_for_load_state("load")
        counts = wait_for_math_and_widgets(page)
        state = page.evaluate("""() => ({
            brokenImages: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
            images: document.images.length,
            resources: [...document.querySelectorAll('script[src], link[rel=stylesheet][href], img[src]')]
                .map(e => e.src || e.href),
            unrendered: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container')).length,
            mathErrors: document.querySelectorAll('mjx-merror').length,
            widgets: [...document.querySelectorAll('.widget-subarea')].map(w => {
                const box = w.getBoundingClientRect();
                const error = !!w.querySelector('.jupyter-widgets-error-widget');
                return {width: box.width, height: box.height, error};
            }),
        })""")
        assert not state["brokenImages"], (
            f"{page_path}: images that did not load: {state['brokenImages']}"
        )
        # Pictures drawn by widgets are blob: URLs, checked as images above.
        for url in {
            url for url in state["resources"] if url.startswith("http")
        } - checked_urls:
            assert resolves(url), f"{page_path}: {url} does not resolve"
            checked_urls.add(url)
        assert state["unrendered"] == 0 and state["mathErrors"] == 0, (
            f"{page_path}: {state['unrendered']} of {counts['math']} formulas not "
            f"typeset, {state['mathErrors']} errors"
        )
        assert len(state["widgets"]) == counts["views"], (
            f"{page_path}: {counts['views']} widgets stored, {len(state['widgets'])} "
            "drawn"
        )
        for widget in state["widgets"]:
            assert (
                widget["width"] > 0 and widget["height"] > 0 and not widget["error"]
            ), f"{page_path}: a widget is invisible or failed: {widget}"
        name = page_path.replace("/", "__").removesuffix(".html")
        page.screenshot(path=artifact(f"{name}.png"), full_page=True)
        for index, widget in enumerate(page.locator(".widget-subarea").all()):
            widget.screenshot(path=artifact(f"{name}-widget-{index}.png"))
        report.append(
            {
                "page": page_path,
                "images": state["images"],
                "formulas": counts["math"],
                "widgets": len(state["widgets"]),
            }
        )
        assert not visit.outside, f"{page_path}: asked the network for {visit.outside}"
        assert not visit.broken, f"{page_path}: failed requests: {visit.broken}"
        assert not visit.errors, f"{page_path}: console errors: {visit.errors}"
    artifact("pages.json").write_text(json.dumps(report, indent=2) + "\n")


def test_toc_links_reach_every_page(server: str, visit: Visit) -> None:
    visit.page.goto(server + "book/intro.html", wait_until="load")
    links = visit.page.evaluate("""() => [...document.querySelectorAll('.bd-sidebar a.reference.internal')]
                                   .map(a => a.href)""")
    targets = {urllib.parse.urlsplit(link).path.lstrip("/") for link in links}
    missing = {f"{page}.html" for page in toc_pages()} - targets - {"book/intro.html"}
    assert not missing, f"the sidebar has no link to {sorted(missing)}"
    for link in links:
        assert resolves(link), f"sidebar link {link} does not resolve"
    # A reader can follow the links: chapter 5, then the demo, which has its own place in
    # the sidebar (a part of its own, not folded under chapter 5).
    visit.page.click(".bd-sidebar a.reference.internal[href$='05_your_digits.html']")
    visit.page.wait_for_url("**/book/05_your_digits.html")
    demo_link = visit.page.locator(
        ".bd-sidebar a.reference.internal[href$='demo.html']"
    )
    assert demo_link.is_visible()
    demo_link.click()
    visit.page.wait_for_url("**/book/demo.html")
    assert visit.page.title().startswith("Try it"), visit.page.title()
    # The intro sends readers to it.
    visit.page.goto(server + "book/intro.html", wait_until="load")
    assert visit.page.locator(".admonition a[href$='demo.html']").count() == 1


def test_phone_menu_and_page_contents_open(browser: Any, server: str) -> None:
    visit = Visit(browser, server, *WIDTHS["phone"])
    try:
        page = visit.page
        page.goto(server + "book/03_training.html", wait_until="load")
        # One search box, and one menu and one page-contents button: the theme's scripts
        # bind to the first of each.
        assert page.locator(".primary-toggle").count() == 1
        assert page.locator(".secondary-toggle").count() == 1
        assert page.locator(".search-button__button:visible").count() == 1
        page.tap(".primary-toggle")
        drawer = page.locator("#pst-primary-sidebar-modal")
        page.wait_for_function(
            "() => document.querySelector('#pst-primary-sidebar-modal').open"
        )
        chapters = drawer.locator("a.reference.internal:visible").all_inner_texts()
        for title in ["1. Exploring MNIST", "7. Under the hood", "Try it", "Glossary"]:
            assert any(text.strip().startswith(title) for text in chapters), chapters
        page.screenshot(path=artifact("phone-menu.png"))
        drawer.locator("a.reference.internal[href$='04_mistakes.html']").click()
        page.wait_for_url("**/book/04_mistakes.html")
        page.tap(".secondary-toggle")
        page.wait_for_function(
            "() => document.querySelector('#pst-secondary-sidebar-modal').open"
        )
        sections = page.locator(
            "#pst-secondary-sidebar-modal a:visible"
        ).all_inner_texts()
        assert any(text.startswith("4.1.") for text in sections), sections
        page.screenshot(path=artifact("phone-page-contents.png"))
        assert not visit.errors and not visit.outside and not visit.broken
    finally:
        visit.close()


def test_phone_opens_a_figure_at_full_size(browser: Any, server: str) -> None:
    """On a phone a figure shrinks to the screen; a tap opens the picture itself."""
    visit = Visit(browser, server, *WIDTHS["phone"])
    try:
        page = visit.page
        page.goto(server + "book/04_mistakes.html", wait_until="load")
        links = page.locator(".bd-content div.cell_output a.book-figure-link")
        assert links.count() >= 6  # every figure of the chapter is a link
        figure = links.first.locator("img")
        natural, shown = figure.evaluate(
            "i => [i.naturalWidth, i.getBoundingClientRect().width]"
        )
        assert shown < natural <= 757  # shrunk to the phone, made for the desktop
        links.first.scroll_into_view_if_needed()
        figure.tap()
        page.wait_for_url("**/_images/*.png")
        assert page.evaluate("() => document.images[0].naturalWidth") == natural
        assert not visit.errors and not visit.outside and not visit.broken
    finally:
        visit.close()


def test_desktop_menu_hides_and_shows_the_sidebar(browser: Any, server: str) -> None:
    visit = Visit(browser, server, *WIDTHS["desk"])
    try:
        page = visit.page
        page.goto(server + "book/intro.html", wait_until="load")
        sidebar = page.locator("#pst-primary-sidebar")
        assert page.locator(".search-button__button:visible").count() == 1
        assert sidebar.is_visible()
        page.click(".primary-toggle")
        page.wait_for_function(
            "() => !document.querySelector('#pst-primary-sidebar').offsetWidth"
        )
        page.click(".primary-toggle")
        page.wait_for_function(
            "() => document.querySelector('#pst-primary-sidebar').offsetWidth > 100"
        )
        # A favicon and a logo, both served by the site.
        icon = page.get_attribute("link[rel=icon]", "href")
        assert icon and resolves(urllib.parse.urljoin(page.url, icon))
        logo = page.locator(".navbar-brand img.logo__image:visible")
        assert logo.count() == 1
        assert logo.evaluate("img => img.naturalWidth") > 0
        assert not visit.errors and not visit.outside and not visit.broken
    finally:
        visit.close()


PAGE_PROBE = """() => ({
    cut: [...document.querySelectorAll('article pre')]
        .filter(p => p.scrollWidth > p.clientWidth + 2)
        .map(p => p.textContent.split('\\n').reduce((a, b) => a.length > b.length ? a : b, '')),
    pageScroll: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    figures: [...document.querySelectorAll('.bd-content div.cell_output img')]
        .filter(i => !i.closest('.widget-subarea'))
        .map(i => ({src: i.src.split('/').pop(), natural: i.naturalWidth,
                    shown: Math.round(i.getBoundingClientRect().width * 10) / 10})),
})"""


@pytest.mark.parametrize("width", WIDTHS)
def test_pages_fit_the_screen(browser: Any, server: str, width: str) -> None:
    """Every page at a desktop's and a phone's width: no console error, nothing pushes the
    page sideways, code fits its column on the desktop; a screenshot of each."""
    visit = Visit(browser, server, *WIDTHS[width])
    report = {}
    try:
        for page_path in [f"{page}.html" for page in toc_pages()]:
            page = visit.page
            page.goto(server + page_path, wait_until="load")
            wait_for_math_and_widgets(page)
            page.evaluate("() => document.fonts.ready")
            probe = page.evaluate(PAGE_PROBE)
            shrunk = [
                figure
                for figure in probe["figures"]
                if figure["natural"] > figure["shown"] + 1
            ]
            report[page_path] = {
                "code_wider_than_column": len(probe["cut"]),
                "figures": len(probe["figures"]),
                "figures_shrunk": len(shrunk),
            }
            name = page_path.replace("/", "__").removesuffix(".html")
            page.screenshot(
                path=artifact(f"screen-{width}-{name}.jpg"),
                full_page=True,
                type="jpeg",
                quality=70,
            )
            assert not visit.errors, f"{page_path}: console errors: {visit.errors}"
            assert not visit.outside and not visit.broken, (visit.outside, visit.broken)
            # Wide tables and code scroll inside their own boxes, never the page.
            assert probe["pageScroll"] <= 1, (
                f"{page_path} at {width} is {probe['pageScroll']} px wider than the screen"
            )
            if width == "desk":
                allowed = CODE_WIDER_THAN_COLUMN.get(page_path, 0)
                assert len(probe["cut"]) <= allowed, (
                    f"{page_path}: {len(probe['cut'])} code blocks wider than the column "
                    f"(allowed {allowed}), e.g. {probe['cut'][:3]}"
                )
                # Every figure at its own size (naturalWidth <= shown width + 1): no text
                # in it smaller than MIN_FONT_PT, 12.5 px.
                assert all(figure["natural"] > 0 for figure in probe["figures"])
                allowed = FIGURES_SHRUNK.get(page_path, 0)
                assert len(shrunk) <= allowed, (
                    f"{page_path}: {len(shrunk)} figures shown smaller than their size "
                    f"(allowed {allowed}): {shrunk[:3]}"
                )
    finally:
        artifact(f"code-fit-{width}.json").write_text(
            json.dumps(report, indent=2) + "\n"
        )
        visit.close()


@pytest.fixture()
def demo(visit: Visit, server: str) -> Visit:
    """The live demo page, its model loaded."""
    visit.page.goto(server + "book/demo.html", wait_until="load")
    visit.page.evaluate("() => window.mnistDemo.ready")
    assert visit.page.get_attribute("#mnist-demo", "data-state") == "ready"
    return visit


def python_reading(picture: bytes | Path) -> tuple[np.ndarray, int, np.ndarray]:
    """Return Python's 28x28 picture, digit and probabilities for an image file's bytes or path."""
    from mnist_tutorial.predict import predict_image, preprocess_image

    prediction = predict_image(picture)
    return (
        preprocess_image(picture, keep_steps=True).centred,
        prediction.digit,
        prediction.probabilities,
    )


def compare(browser_result: dict[str, Any], picture: bytes | Path) -> dict[str, Any]:
    """Return how the browser's reading of a picture compares with Python's."""
    centred, digit, probabilities = python_reading(picture)
    browser_centred = np.array(browser_result["centred"], dtype=np.int64).reshape(
        28, 28
    )
    return {
        "max_pixel_difference": int(
            np.abs(browser_centred - centred.astype(np.int64)).max()
        ),
        "browser_digit": browser_result["digit"],
        "python_digit": digit,
        "max_probability_difference": float(
            np.abs(np.array(browser_result["probabilities"]) - probabilities).max()
        ),
    }


def draw(page: Any, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw strokes on the demo's pad with the mouse, as a reader would."""
    box = page.locator(".mnist-demo-pad").bounding_box()
    for stroke in strokes:
        points = [
            (box["x"] + x * box["width"], box["y"] + y * box["height"])
            for x, y in stroke
        ]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=6)
        page.mouse.up()


def test_demo_reads_drawn_digits_like_python(demo: Visit) -> None:
    page = demo.page
    results = []
    for digit, strokes in DRAWINGS.items():
        page.click(".mnist-demo-clear")
        before = page.evaluate("() => window.mnistDemo.count")
        draw(page, strokes)
        reading = page.evaluate("() => window.mnistDemo.idle()")
        assert page.evaluate("() => window.mnistDemo.count") > before, (
            "drawing made no prediction"
        )
        png = base64.b64decode(
            page.evaluate(
                "() => document.querySelector('.mnist-demo-pad').toDataURL('image/png')"
            ).split(",", 1)[1]
        )
        artifact(f"drawn-{digit}.png").write_bytes(png)
        agreement = compare(reading, png)
        results.append(
            {
                "drawn": digit,
                "ms_final_prediction": round(reading["ms"], 2),
                **agreement,
            }
        )
        assert page.text_content(".mnist-demo-answer") == str(reading["digit"])
        assert reading["digit"] == digit, (
            f"the demo read a drawn {digit} as {reading['digit']}"
        )
        assert agreement["python_digit"] == digit
        assert agreement["max_pixel_difference"] == 0, agreement
    page.locator("#mnist-demo").screenshot(path=artifact("demo.png"))
    # Reported, not asserted: the time from the drawing's pixels to the ten
    # probabilities.
    timings = sorted(
        entry["ms"]
        for entry in page.evaluate("() => window.mnistDemo.timings")
        if entry["source"] == "drawing"
    )
    summary = {
        "drawings": results,
        "predictions_while_drawing": len(timings),
        "ms_per_prediction_median": round(statistics.median(timings), 2),
        "ms_per_prediction_p95": round(timings[int(0.95 * (len(timings) - 1))], 2),
        "ms_per_prediction_max": round(timings[-1], 2),
    }
    artifact("demo-drawing.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert not demo.errors and not demo.outside and not demo.broken


def test_demo_reads_uploaded_files_like_python(demo: Visit) -> None:
    page = demo.page
    for name in UPLOADS:
        before = page.evaluate("() => window.mnistDemo.count")
        page.set_input_files(".mnist-demo-upload", str(SAMPLES / name))
        page.wait_for_function("n => window.mnistDemo.count > n", arg=before)
        reading = page.evaluate("() => window.mnistDemo.idle()")
        agreement = compare(reading, SAMPLES / name)
        true_digit = int(re.search(r"digit-(\d)", name)[1])
        assert reading["digit"] == agreement["python_digit"] == true_digit, (
            name,
            agreement,
        )
        assert agreement["max_pixel_difference"] == 0, (name, agreement)
        assert page.text_content(".mnist-demo-answer") == str(true_digit)
    assert not demo.errors and not demo.outside and not demo.broken


DEMO_STATE = """() => ({
    answer: document.querySelector('.mnist-demo-answer').hidden
        ? '' : document.querySelector('.mnist-demo-answer').textContent,
    verdict: document.querySelector('.mnist-demo-verdict').textContent,
    error: document.querySelector('.mnist-demo-error').hidden
        ? '' : document.querySelector('.mnist-demo-error').textContent,
    values: [...document.querySelectorAll('.mnist-demo-value')].map(v => v.textContent),
    fills: [...document.querySelectorAll('.mnist-demo-fill')].map(f => f.style.width),
    file: document.querySelector('.mnist-demo-upload').value,
    result: document.querySelector('#mnist-demo').dataset.result,
    padInk: (() => {
        const pad = document.querySelector('.mnist-demo-pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        return data.some(value => value !== 255);
    })(),
})"""


def assert_no_reading(state: dict[str, Any]) -> None:
    """Nothing of an earlier reading is on screen: no answer, no bars."""
    assert state["answer"] in {"", "…"} and not state["verdict"], state
    assert set(state["values"]) == {"–"}, state
    assert set(state["fills"]) <= {"0", "0px", ""}, state


def test_demo_explains_pictures_it_cannot_read(demo: Visit, tmp_path: Path) -> None:
    page = demo.page
    blank = tmp_path / "blank.png"
    Image.new("RGB", (60, 40), "white").save(blank)
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    for path, message in [
        (blank, "no ink found"),
        (not_a_picture, "not a picture the browser can read"),
    ]:
        # A good picture first: its answer and bars must not survive the bad one.
        before = page.evaluate("() => window.mnistDemo.count")
        page.set_input_files(".mnist-demo-upload", str(SAMPLES / UPLOADS[0]))
        page.wait_for_function("n => window.mnistDemo.count > n", arg=before)
        page.evaluate("() => window.mnistDemo.idle()")
        assert page.evaluate(DEMO_STATE)["answer"] == "2"
        page.set_input_files(".mnist-demo-upload", str(path))
        page.wait_for_function(
            "m => document.querySelector('.mnist-demo-error').textContent"
            ".toLowerCase().includes(m)",
            arg=message,
        )
        state = page.evaluate(DEMO_STATE)
        # The error is where the answer was, and it is the only thing there.
        assert state["result"] == "error" and message in state["error"].lower(), state
        assert_no_reading(state)
        assert page.locator(".mnist-demo-reading .mnist-demo-error").is_visible()
        if path == not_a_picture:
            assert not state["padInk"], "the old picture stayed beside the error"
    page.locator("#mnist-demo").screenshot(path=artifact("demo-error.png"))
    # Clear starts again: empty pad, no error, no file chosen.
    page.click(".mnist-demo-clear")
    state = page.evaluate(DEMO_STATE)
    assert_no_reading(state)
    assert not state["error"] and not state["file"] and not state["padInk"], state
    assert not demo.errors and not demo.outside and not demo.broken


def test_demo_clear_resets_everything(demo: Visit) -> None:
    page = demo.page
    before = page.evaluate("() => window.mnistDemo.count")
    page.set_input_files(".mnist-demo-upload", str(SAMPLES / UPLOADS[1]))
    page.wait_for_function("n => window.mnistDemo.count > n", arg=before)
    page.evaluate("() => window.mnistDemo.idle()")
    state = page.evaluate(DEMO_STATE)
    assert state["answer"] == "3" and state["file"] and state["padInk"], state
    # Keyboard: Clear is a button reached with Tab and pressed with Enter.
    page.focus(".mnist-demo-clear")
    page.keyboard.press("Enter")
    state = page.evaluate(DEMO_STATE)
    assert_no_reading(state)
    assert not state["file"] and not state["padInk"] and state["result"] == "none"
    # The same file can be chosen again straight away, and is read again.
    before = page.evaluate("() => window.mnistDemo.count")
    page.set_input_files(".mnist-demo-upload", str(SAMPLES / UPLOADS[1]))
    page.wait_for_function("n => window.mnistDemo.count > n", arg=before)
    assert not demo.errors and not demo.outside and not demo.broken


def test_demo_shows_doubt_and_is_accessible(demo: Visit) -> None:
    page = demo.page
    # A clear 7 is read with confidence, in full.
    page.click(".mnist-demo-clear")
    draw(page, DRAWINGS[7])
    reading = page.evaluate("() => window.mnistDemo.idle()")
    assert max(reading["probabilities"]) >= 0.6
    state = page.evaluate(DEMO_STATE)
    assert state["verdict"] == "it reads" and state["result"] == "sure", state
    # A plus sign is no digit: the model spreads its probability, and the page says it is
    # guessing, in a lighter, thinner answer.
    page.click(".mnist-demo-clear")
    draw(page, [[(0.2, 0.5), (0.8, 0.5)], [(0.5, 0.2), (0.5, 0.8)]])
    reading = page.evaluate("() => window.mnistDemo.idle()")
    best = max(reading["probabilities"])
    assert best < 0.6, f"a drawn + read as {reading['digit']} with {best:.1%}"
    state = page.evaluate(DEMO_STATE)
    assert state["verdict"] == "not sure: maybe" and state["result"] == "unsure"
    answer = page.locator(".mnist-demo-answer")
    assert int(answer.evaluate("a => getComputedStyle(a).fontWeight")) < 400
    page.locator("#mnist-demo").screenshot(path=artifact("demo-unsure.png"))
    # Every control has a name; the bars have a text alternative; focus is visible.
    assert page.get_attribute(".mnist-demo-pad", "aria-label")
    upload_id = page.get_attribute(".mnist-demo-upload", "id")
    assert page.locator(f"label[for='{upload_id}']").inner_text().strip()
    assert page.get_attribute(".mnist-demo-bars", "aria-label")
    bar = page.locator(".mnist-demo-bar").nth(reading["digit"])
    assert bar.inner_text().replace("\n", " ").strip().endswith("%")
    # Keyboard: from Clear, Tab reaches the upload, drawn as a button with a visible focus.
    page.focus(".mnist-demo-clear")
    page.keyboard.press("Tab")
    assert page.evaluate(
        "() => document.activeElement.classList.contains('mnist-demo-upload')"
    )
    outline = page.evaluate(
        "() => getComputedStyle(document.querySelector('.mnist-demo-upload + label'))"
        ".outlineStyle"
    )
    assert outline not in {"none", ""}, outline
    assert not demo.errors and not demo.outside and not demo.broken


def agreement_pictures(folder: Path) -> list[tuple[str, bytes]]:
    """Return the book's 200 sample pictures, and some of them enlarged, as JPEG and see-through: (name, bytes)."""
    pictures = [
        (path.name, path.read_bytes()) for path in sorted(SAMPLES.glob("*.png"))
    ]
    for path in sorted(SAMPLES.glob("*.png"))[::25]:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")
        # The stroke samples are ink on a transparent layer; on white paper they can be
        # saved without it.
        on_paper = Image.alpha_composite(
            Image.new("RGBA", rgba.size, "white"), rgba
        ).convert("RGB")
        # Large pictures take Pillow's reduce-then-resample path.
        for size in [(640, 480), (333, 1000)]:
            out = folder / f"{path.stem}-{size[0]}x{size[1]}.png"
            rgba.resize(size, Image.Resampling.BICUBIC).save(out)
            pictures.append((out.name, out.read_bytes()))
        # Small JPEGs decode the same in both (Pillow decodes large ones at a reduced
        # scale, the browser cannot).
        out = folder / f"{path.stem}.jpg"
        on_paper.save(out, quality=90)
        pictures.append((out.name, out.read_bytes()))
        # Black ink on a transparent layer takes the flatten-transparency path.
        grey = np.asarray(on_paper.convert("L"))
        layer = np.zeros((*grey.shape, 4), dtype=np.uint8)
        layer[..., 3] = 255 - grey
        out = folder / f"{path.stem}-transparent.png"
        Image.fromarray(layer, "RGBA").save(out)
        pictures.append((out.name, out.read_bytes()))
    return pictures


def test_demo_agrees_with_python_on_every_sample(demo: Visit, tmp_path: Path) -> None:
    page = demo.page
    rows = []
    for name, data in agreement_pictures(tmp_path):
        kind = "image/jpeg" if name.endswith(".jpg") else "image/png"
        reading = page.evaluate(
            "async ([data, type]) => "
            "window.mnistDemo.predictBytes(Uint8Array.from(atob(data), c => "
            "c.charCodeAt(0)), type)",
            [base64.b64encode(data).decode(), kind],
        )
        assert reading is not None, f"the demo found no digit in {name}"
        rows.append({"image": name, **compare(reading, data)})
    worst = max(row["max_pixel_difference"] for row in rows)
    agreeing = sum(row["browser_digit"] == row["python_digit"] for row in rows)
    summary = {
        "images": len(rows),
        "max_pixel_difference": worst,
        "predictions_agreeing": agreeing,
        "max_probability_difference": max(
            row["max_probability_difference"] for row in rows
        ),
        "rows": rows,
    }
    artifact("demo-agreement.json").write_text(json.dumps(summary, indent=2) + "\n")
    # The port reproduces Pillow's and NumPy's arithmetic, so any difference at all is a
    # regression.
    assert worst == 0, [row for row in rows if row["max_pixel_difference"]][:5]
    assert agreeing == len(rows), [
        row for row in rows if row["browser_digit"] != row["python_digit"]
    ][:5]
    assert summary["max_probability_difference"] < 1e-3
    assert not demo.errors and not demo.outside and not demo.broken
