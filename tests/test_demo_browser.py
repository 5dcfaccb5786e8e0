"""`al-loop demo --keep-running`, then what the expert sees, in headless Chromium.

The demo runs as the user runs it (a child process); the browser logs in with the user
and password it printed, opens a task of the last round's tab and checks the decoder's
pre-annotation in the region list; then it sends, from the logged-in page, the request
Label Studio's smart box sends, and checks the SAM mask that comes back. Ctrl-C stops
both servers. Screenshots go to artifacts/browser/.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A running demo: its printed lines parsed; stopped with Ctrl-C afterwards."""
    if not (Path(sys.executable).parent / "label-studio").exists():
        pytest.skip("label-studio is not installed (pip install -e '.[test]')")
    from al_loop.demo.servers import free_port

    root = tmp_path_factory.mktemp("demo") / "al-demo"
    port = free_port()
    env = {**os.environ, "AL_LOOP_CACHE_DIR": str(root.parent / "cache"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "al_loop.cli", "demo", "--model", "tiny", "--rounds", "2", "--batch-size", "3",
               "--epochs", "40", "--port", str(port), "--demo-dir", str(root), "--keep-running", "--quiet",
               "--json", str(root.parent / "demo.json")]
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if "Ctrl-C stops them" in line:
            break
    else:
        pytest.fail("the demo ended before it was ready:\n" + "\n".join(lines))
    output = "\n".join(lines)
    login = re.search(r"Label Studio: (\S+)\s+user (\S+)\s+password (\S+)", output)
    tab = re.search(r"open the tab 'Round (\d+)' \((\S+)\)", output)
    token = re.search(r"LABEL_STUDIO_API_KEY=(\w+)", output)
    backend = re.search(r"ML backend: (\S+)", output)
    info = {"proc": proc, "output": output, "url": login[1], "user": login[2], "password": login[3],
            "round": int(tab[1]), "tab_url": tab[2], "root": root, "token": token[1], "backend": backend[1], "seconds": time.monotonic() - started}
    yield info
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_demo_prints_the_curve_the_login_and_a_tab(demo):
    out = demo["output"]
    assert "tiny SAM with random weights" in out and "filterbank" in out  # says plainly what it runs
    rows = [line for line in out.splitlines() if re.match(r"\s+[12]\s+\d+\s+[\d.]+", line)]
    assert len(rows) == 2  # two evaluated rounds after round 0
    assert (demo["root"] / "workspace" / "curve.png").stat().st_size > 10_000
    assert demo["round"] == 2 and "/data?tab=" in demo["tab_url"]
    assert requests.get(f"{demo['url']}/health", timeout=5).ok and requests.get(f"{demo['backend']}/health", timeout=5).ok


def test_each_round_prints_its_report_page_and_the_json_says_the_database(demo):
    reports = re.findall(r"report: (\S+index\.html)", demo["output"])
    assert len(reports) >= 3 and Path(reports[-1]).is_file()  # rounds 0, 1, 2, and the summary's line
    summary = json.loads((demo["root"].parent / "demo.json").read_text())
    assert summary["database"] == "sqlite" and [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["report"] == reports[-1]


def test_the_report_page_opens_from_its_file_without_errors(demo, browser):
    index = Path(re.findall(r"report: (\S+index\.html)", demo["output"])[-1])
    errors: list[str] = []
    browser.on("pageerror", lambda e: errors.append(str(e)))
    browser.goto(index.as_uri())
    widths = browser.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths) and not errors
    assert browser.inner_text("[data-status='rounds.length']") == "3"


@pytest.fixture(scope="module")
def browser(demo):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver (make test does on Debian)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the test extra)")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = chromium.new_page(viewport={"width": 1500, "height": 950})
        page.goto(f"{demo['url']}/user/login/")
        page.fill("input[name=email]", demo["user"])
        page.fill("input[name=password]", demo["password"])
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/projects.*|.*/$"), timeout=60_000)
        yield page
        chromium.close()


def pushed_task(demo) -> tuple[int, int]:
    from al_loop.loop.workspace import Workspace

    workspace = Workspace(demo["root"] / "workspace")
    row = workspace.read("SELECT task_id FROM round_tasks WHERE round = ? ORDER BY rank LIMIT 1", (demo["round"],))[0]
    return workspace.config().project, row["task_id"]


def test_a_pushed_task_shows_the_pre_annotation(demo, browser):
    project, task = pushed_task(demo)
    page = browser
    page.goto(f"{demo['tab_url']}&task={task}")
    page.wait_for_selector("text=Regions", timeout=120_000)
    regions = page.locator(".lsf-outliner-item")  # one per region in the Regions panel
    regions.first.wait_for(timeout=60_000)
    texts = [t.strip() for t in regions.all_inner_texts()]
    assert texts and all("pit" in t for t in texts), texts
    # The predictions' tab is the round's model version, as Label Studio lists it.
    assert page.get_by_text(f"round-{demo['round']}").first.is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"demo-round-{demo['round']}-task-{task}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 50_000
    # The same regions as the prediction the loop uploaded: one brush region per pit.
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=demo["url"], api_key=demo["token"])
    prediction = [p for p in client.predictions.list(task=task) if p.model_version == f"round-{demo['round']}"]
    assert len(prediction) == 1 and len(prediction[0].result) == len(texts)
    assert all(r["type"] == "brushlabels" and r["value"]["brushlabels"] == ["pit"] for r in prediction[0].result)


def test_a_smart_box_comes_back_as_a_sam_mask(demo, browser):
    """What the smart rectangle tool sends (POST /api/ml/{id}/interactive-annotating), sent
    from the logged-in page with its session and CSRF token, answered by the backend through
    Label Studio."""
    project, task = pushed_task(demo)
    page = browser
    page.goto(f"{demo['url']}/projects/{project}/data?task={task}")
    page.wait_for_selector("text=Regions", timeout=120_000)
    box = {"x": 20.0, "y": 20.0, "width": 45.0, "height": 45.0, "rotation": 0, "rectanglelabels": ["pit"]}
    reply = page.evaluate(
        """async ([project, task, box]) => {
            const csrf = document.cookie.split('; ').find(c => c.startsWith('csrftoken='))?.split('=')[1];
            const ml = await (await fetch(`/api/ml?project=${project}`)).json();
            const context = {result: [{from_name: 'box', to_name: 'image', type: 'rectanglelabels',
                                       original_width: 512, original_height: 512, value: box}]};
            const r = await fetch(`/api/ml/${ml[0].id}/interactive-annotating`, {
                method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRFToken': csrf},
                body: JSON.stringify({task, context})});
            return {status: r.status, body: await r.json()};
        }""",
        [project, task, box],
    )
    assert reply["status"] == 200, reply
    results = reply["body"]["data"]["result"]
    assert results and results[0]["type"] == "brushlabels" and results[0]["value"]["brushlabels"] == ["pit"]
    from al_loop.studio.regions import brush_to_mask

    mask = brush_to_mask(results[0])
    assert mask.shape == (512, 512) and mask.any()
    ys, xs = np.nonzero(mask)
    # Inside the box (20 % .. 65 % of 512 px): box-prompted masks are clipped to the box.
    assert xs.min() >= int(0.20 * 512) and xs.max() < int(0.65 * 512) + 1
    assert ys.min() >= int(0.20 * 512) and ys.max() < int(0.65 * 512) + 1
    (ARTIFACTS / "smart-box-reply.json").write_text(json.dumps({"task": task, "box": box, "pixels": int(mask.sum())}))


def test_ctrl_c_stops_both_servers(demo):
    proc = demo["proc"]
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=90)[0]
    assert proc.returncode == 0 and "stopped" in rest
    for url in (demo["url"], demo["backend"]):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/health", timeout=5)
