"""End to end: start ``pa3d app``, drive it in a real headless Chromium, segment a mesh, check the page.

The browser is Debian's ``chromium`` (``scripts/ci_system_deps.sh`` installs it; nothing is downloaded by a
test tool), driven through Playwright's ``executable_path``. In CI (``CI`` set) the test never skips: a
missing browser is a failure. On failure a screenshot is saved and its path is in the message.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = next((p for p in (os.environ.get("PA3D_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]
PARTS = ["head", "body", "wing", "foot"]


def _need_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (it is in the dev extra: pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run scripts/ci_system_deps.sh (apt-get install chromium)")
        pytest.skip("chromium is not installed (scripts/ci_system_deps.sh installs it)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mesh(tmp_path: Path) -> Path:
    """The penguin from the shared data when present, else a capsule-like mesh written here."""
    root = os.environ.get("PA3D_DATA") or str(Path(__file__).resolve().parents[3] / "shared" / "data")
    penguin = Path(root) / "demo" / "satr" / "penguin.obj"
    if penguin.is_file():
        return penguin
    u, v = np.meshgrid(np.linspace(0, np.pi, 24), np.linspace(0, 2 * np.pi, 48, endpoint=False), indexing="ij")
    verts = np.stack([0.4 * np.sin(u) * np.cos(v), 1.2 * np.cos(u), 0.4 * np.sin(u) * np.sin(v)], -1).reshape(-1, 3)
    faces = []
    for i in range(23):
        for j in range(48):
            a, b, c, d = i * 48 + j, i * 48 + (j + 1) % 48, (i + 1) * 48 + j, (i + 1) * 48 + (j + 1) % 48
            faces += [(a, c, b), (b, c, d)]
    path = tmp_path / "capsule.obj"
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    pytest.importorskip("gradio") if not os.environ.get("CI") else None
    from pa3d_app import launch

    runs = tmp_path_factory.mktemp("runs")  # empty: the app starts in its "untrained" state
    demo = launch("127.0.0.1", _free_port(), block=False, quiet=True, runs_dir=runs, model_name="patchalign3d_tiny",
                  text_model="fixed:64", num_points=1024, workdir=tmp_path_factory.mktemp("app_out"))
    try:
        yield demo.local_url, demo.pa3d_session
    finally:
        demo.close()


def test_app_segments_a_mesh_in_chromium(app_url, tmp_path):
    sync_playwright = _need_browser()
    url, session = app_url
    assert url.startswith("http://127.0.0.1:")
    mesh = _mesh(tmp_path)
    external: list[str] = []
    shot = Path(os.environ.get("PA3D_ARTIFACTS", tmp_path)) / "app_failure.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def guard(route):
            host = route.request.url.split("/")[2] if "://" in route.request.url else ""
            if route.request.url.startswith(("data:", "blob:")) or host.split(":")[0] in ("127.0.0.1", "localhost"):
                return route.continue_()
            external.append(route.request.url)
            return route.abort()

        page.route("**/*", guard)
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=30_000)
            page.wait_for_selector("#pa3d-run", timeout=30_000)
            assert "UNTRAINED" in page.inner_text("#pa3d-status")  # no runs/: the untrained state is announced
            page.set_input_files("#pa3d-upload input[type=file]", str(mesh))
            page.wait_for_selector(f"#pa3d-upload :text('{mesh.name}')", timeout=30_000)
            page.locator("#pa3d-parts textarea, #pa3d-parts input").first.fill(", ".join(PARTS))
            page.locator("#pa3d-calibration label", has_text="prior").click()  # the label rule reaches the run
            page.click("#pa3d-run")
            page.wait_for_selector("#pa3d-legend-box li", timeout=60_000)
            legend = page.inner_text("#pa3d-legend-box")
            for part in PARTS:
                assert part in legend, legend
            assert "UNTRAINED" in page.inner_text("#pa3d-status")
            assert "prior correction" in page.inner_text("#pa3d-status")
            links = page.locator("#pa3d-downloads a")
            links.first.wait_for(timeout=30_000)
            names = " ".join(links.nth(i).inner_text() + " " + (links.nth(i).get_attribute("href") or "")
                             for i in range(links.count()))
            for suffix in ("_parts.glb", "_parts.ply", "_parts.npz"):
                assert suffix in names, names
            canvas = page.locator("#pa3d-view canvas").first
            canvas.wait_for(timeout=30_000)
            colours = _saturated_fraction(canvas)
            assert colours > 0.005, f"the 3D view shows no coloured parts ({colours:.4f} of the canvas)"
            # switching to a heatmap redraws the view and the legend
            page.locator("#pa3d-view-choice label", has_text="heatmap: wing").click()
            page.wait_for_selector("#pa3d-legend-box[data-view=heatmap]", timeout=30_000)
            assert "wing" in page.inner_text("#pa3d-legend-box")
        except Exception:
            page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"browser test failed; screenshot: {shot}") from None
        finally:
            browser.close()
    assert external == [], f"the page asked the network for {external}"


def _saturated_fraction(canvas, tries: int = 20) -> float:
    """Fraction of the canvas's pixels that are clearly coloured (not white, grey or black); waits for the
    WebGL view to draw."""
    import io
    import time

    from PIL import Image

    best = 0.0
    for _ in range(tries):
        img = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
        sat = (img.max(-1) - img.min(-1)) > 60
        best = max(best, float(sat.mean()))
        if best > 0.005:
            break
        time.sleep(0.5)
    return best
