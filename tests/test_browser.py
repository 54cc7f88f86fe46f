"""A notebook in a real browser, as a new user runs it: JupyterLab in headless Chromium, every cell run,
then the slice browser's slider dragged, and the picture must change (compared by screenshot).

Needs Debian's ``chromium`` (``apt-get install chromium``), the ``playwright`` package (its own browser
download is not used) and ``jupyterlab``; skipped where any is missing. ``.ci/run`` installs all three.
The notebook runs on a copy in a temporary folder, with its own data roots, so nothing in the clone
changes. About 80 s on 2 CPU cores for the two notebooks.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The notebooks to open: the quickstart, the first one a new user opens (it ends on the prediction in a
# slice browser), and 01_data, where the slice browser is taught (its browser has the dataset's label names).
BROWSER_NOTEBOOKS = ["00_quickstart", "01_data"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(condition, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free port, serving ``tmp_path/work``; yields (base URL, token, folder)."""
    pytest.importorskip("jupyterlab")
    work, token, port = tmp_path / "work", uuid.uuid4().hex, _free_port()
    work.mkdir()
    env = {
        **os.environ,
        # the notebook's own data roots: a fresh demo build, nothing shared with the clone
        **{
            var: str(tmp_path / "data" / sub)
            for var, sub in zip(
                ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), ("raw", "preprocessed", "results")
            )
        },
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_PATH": os.pathsep.join(
            filter(None, [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")])
        ),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TQDM_DISABLE": "1",
        # one torch thread unless told otherwise: the kernel shares the cores with Chromium, JupyterLab and
        # its own loader workers (00_quickstart on 2 cores: 82 s with torch's default threads, 26 s with 1)
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands without clicking menus
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--allow-root",  # offline; CI containers run as root
    ]  # fmt: skip
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                return response.status == 200
        except OSError:
            return server.poll() is not None and pytest.fail((tmp_path / "jupyterlab.log").read_text())

    try:
        _wait_until(ready, 60, "JupyterLab to start")
        yield url, token, work
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _slice_slider_and_image(page):
    """The first slice browser (its outer VBox), its 'slice' slider and its first panel (an Image)."""
    browser = page.locator(".widget-vbox", has=page.locator(".widget-image")).filter(
        has=page.locator("label", has_text=re.compile(r"^slice$"))
    )
    slider = browser.first.locator(
        ".widget-hslider", has=page.locator("label", has_text=re.compile(r"^slice$"))
    )
    return browser.first, slider.first, browser.first.locator(".widget-image").first


@pytest.mark.parametrize("name", BROWSER_NOTEBOOKS)
def test_notebook_runs_in_jupyterlab_and_its_slice_browser_responds(jupyterlab, name, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, token, work = jupyterlab
    shutil.copy(REPO / "notebooks" / f"{name}.ipynb", work / f"{name}.ipynb")
    results = work / "runs" / name / "results.json"  # the notebook's last cell writes it

    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{name}.ipynb?token={token}", timeout=60_000)
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.connectionStatus"
                " === 'connected'",
                timeout=60_000,
            )
            started = time.monotonic()
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            _wait_until(results.is_file, 240, f"{name} to run to its last cell", step=1)
            run_seconds = time.monotonic() - started
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks[:1]

            widget, slider, image = _slice_slider_and_image(page)
            slider.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            widget.screenshot(path=str(tmp_path / "widget.png"))  # to look at: legend, widths, readouts
            cut_short = widget.evaluate(
                "w => [...w.querySelectorAll('.widget-label, .widget-readout, .widget-label-basic')]"
                ".filter(e => e.offsetWidth > 0 && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)"
            )
            assert not cut_short, f"text cut short in the widget: {cut_short}"
            assert int(slider.bounding_box()["width"]) >= 400  # a usable slider for 70-90 slices
            before = image.screenshot()
            handle = slider.locator(".noUi-handle, .ui-slider-handle").first  # ipywidgets 8, 7
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            _wait_until(lambda: image.screenshot() != before, 30, "the slice browser to show another slice")
            after = image.screenshot()
        finally:
            chromium.close()

    assert before != after
    assert json.loads(results.read_text())["profile"] == "quick"
    (tmp_path / "before.png").write_bytes(before)  # kept with the test's tmp folder, to look at
    (tmp_path / "after.png").write_bytes(after)
    print(f"{name}: ran in {run_seconds:.0f} s in JupyterLab")
