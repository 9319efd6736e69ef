"""The report's page in a real browser (headless Chromium, Debian's `chromium` package): every image
loads, the screenshot is not blank, and the page writes nothing to the console.

One Chromium run per page gives all three: `--screenshot` writes the window's pixels, `--dump-dom` prints
the DOM after the page's scripts ran (the page's own script marks <body data-images="ok"> once every
<img> has loaded, or "failed:N"), and `--enable-logging=stderr --v=0` copies every console message
(console.log/error, uncaught exceptions) to stderr as lines holding ":CONSOLE". The checks are first
shown to catch a page that breaks each of them, so that passing on the report means something.

Skipped when chromium or matplotlib is missing (scripts/install-deps.sh installs both)."""

import html.parser
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")  # reads the screenshot; matplotlib depends on Pillow

from dynascope import report  # noqa: E402
from test_report import make_run  # noqa: E402  the synthetic run folder of the report's own tests

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                                "chromium; scripts/install-deps.sh installs it)")

WINDOW = (1280, 2400)
CONSOLE = re.compile(r":CONSOLE[:(]")


class _Page(html.parser.HTMLParser):
    """The <body>'s attributes and every <img>'s src in a DOM dump."""

    def __init__(self):
        super().__init__()
        self.body, self.images = None, []

    def handle_starttag(self, tag, attrs):
        if tag == "body" and self.body is None:
            self.body = dict(attrs)
        elif tag == "img":
            self.images.append(dict(attrs).get("src"))


def open_in_chromium(page, work):
    """Loads `page` (a file) in headless Chromium; returns (body attributes, img srcs, console lines,
    screenshot as an RGB array)."""
    work = pathlib.Path(work)
    work.mkdir(parents=True, exist_ok=True)
    shot = work / "screenshot.png"
    # A profile and HOME of its own: nothing is written to the user's, and runs side by side (ctest -j)
    # do not hand their page to one another's browser. As root in a container Chromium needs
    # --no-sandbox; --disable-dev-shm-usage because /dev/shm is small there. The virtual time budget
    # lets the page's load event and scripts run before the DOM is dumped.
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={work / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=15000", f"--screenshot={shot}",
           "--dump-dom", pathlib.Path(page).resolve().as_uri()]
    env = dict(os.environ, HOME=str(work), XDG_CONFIG_HOME=str(work / "config"), XDG_CACHE_HOME=str(work / "cache"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"chromium failed ({r.returncode}):\n{r.stderr[-4000:]}"
    parsed = _Page()
    parsed.feed(r.stdout)
    assert parsed.body is not None, f"no <body> in chromium's DOM dump:\n{r.stdout[:2000]}\n{r.stderr[-4000:]}"
    assert shot.exists(), f"chromium wrote no screenshot:\n{r.stderr[-4000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    console = [line for line in r.stderr.splitlines() if CONSOLE.search(line)]
    return parsed.body, parsed.images, console, pixels


def blank(pixels):
    """Whether the screenshot shows (nearly) nothing: fewer than 1% of its pixels differ from the
    most common colour, or the intensities hardly vary."""
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    differ = np.any(np.abs(flat - background) > 8, axis=1).mean()
    return differ < 0.01 or pixels.std() < 5.0


def test_checks_catch_a_broken_page(tmp_path):
    """The three checks fail on a page that breaks each of them: a missing image (marker "failed:1"),
    console output and an uncaught exception, a blank window. The marker script is the report's own
    convention: body[data-images] set on the load event."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><script>"
        "window.addEventListener('load', function () { var bad = 0;"
        " for (var i = 0; i < document.images.length; i++) { var img = document.images[i];"
        "  if (!(img.complete && img.naturalWidth > 0)) bad++; }"
        " document.body.dataset.images = bad ? 'failed:' + bad : 'ok'; });"
        "</script></head><body style='background:#fff'>"
        "<img src='missing.png' style='display:none'>"
        "<script>console.error('broken on purpose'); undefinedFunction();</script></body></html>")
    body, images, console, pixels = open_in_chromium(page, tmp_path / "chromium")
    assert body.get("data-images") == "failed:1"
    assert images == ["missing.png"]
    assert any("broken on purpose" in line for line in console), console
    assert any("undefinedFunction" in line for line in console), console
    assert blank(pixels)


def _check_report_page(index, work):
    """Opens a report's index.html: every image loads (and each is a file of the report folder, so the page
    is self-contained), the screenshot is not blank, the console stays empty."""
    index = pathlib.Path(index)
    body, images, console, pixels = open_in_chromium(index, work)
    assert body.get("data-images") == "ok", f"images did not all load: {body.get('data-images')!r} ({images})"
    figures = sorted(p.name for p in index.parent.glob("*.png"))
    assert figures, "the report wrote no PNG figure"
    srcs = [urllib.parse.unquote(s) for s in images]
    for s in srcs:
        assert "/" not in s and ":" not in s, f"image {s!r} is not a file of the report folder"
    assert sorted(srcs) == figures, "the page should show every PNG figure of the report folder, once"
    assert console == [], "the page wrote to the console:\n" + "\n".join(console)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert not blank(pixels), "the screenshot is blank"
    # The figures are in colour (the runs' lines, heat maps): a page of text only would be grey.
    rgb_spread = pixels.max(axis=2) - pixels.min(axis=2)
    assert (rgb_spread > 40).mean() > 0.005, "no coloured pixels in the screenshot"
    return figures


def test_report_of_a_full_run_opens_in_chromium(tmp_path):
    run = make_run(tmp_path / "run")
    index = report(str(run))
    figures = _check_report_page(index, tmp_path / "chromium")
    assert "region_maps.png" in figures and "hessian_density.png" in figures, figures


def test_report_of_two_runs_opens_in_chromium(tmp_path):
    """Two overlaid runs (one colour per run, a legend), the report written to --out."""
    a = make_run(tmp_path / "a", seed=1, parts=("train", "evals", "ntk", "lc"))
    b = make_run(tmp_path / "b", seed=2, parts=("train", "evals", "ntk", "lc"))
    index = report([str(a), str(b)], out=str(tmp_path / "both"))
    assert pathlib.Path(index) == tmp_path / "both" / "index.html"
    _check_report_page(index, tmp_path / "chromium")
