"""`al-loop demo --annotators 2 --database postgresql` (issue 39's done-means): a simulated team
of two with habits of their own (one misses small pits, one draws loose outlines) on Label Studio
on PostgreSQL; each round's agreement is printed, is in the --json file, and is on the report
page, which is opened in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def team_demo(tmp_path_factory) -> dict:
    from al_loop.demo.servers import free_port, postgres_bin
    from al_loop.errors import ServerError

    if not (Path(sys.executable).parent / "label-studio").exists():
        pytest.skip("label-studio is not installed (pip install -e '.[test]')")
    try:
        postgres_bin()
    except ServerError:
        pytest.skip("no PostgreSQL server on this machine: `make postgres`")
    root = tmp_path_factory.mktemp("team-demo")
    out = root / "out.json"
    env = {**os.environ, "AL_LOOP_CACHE_DIR": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "al_loop.cli", "demo", "--annotators", "2", "--database", "postgresql", "--rounds", "2",
         "--json", str(out), "--batch-size", "4", "--epochs", "30", "--no-keep-running", "--quiet",
         "--demo-dir", str(root / "al-demo"), "--port", str(free_port())],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return {"proc": proc, "json": json.loads(out.read_text()) if out.is_file() else None, "root": root / "al-demo"}


def test_the_team_demo_exits_0_and_its_json_holds_each_rounds_agreement(team_demo):
    proc, summary = team_demo["proc"], team_demo["json"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary["database"] == "postgresql" and [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    for row in summary["rounds"]:
        agreement = row["agreement"]
        assert 0.0 <= agreement["mask_iou"] <= 1.0 and agreement["type_kappa"] is not None, row
        # the loose outliner's masks are wider than the other's: never a perfect match
        assert agreement["mask_iou"] < 1.0
    # the expert who misses small pits leaves some out: pits drawn by one expert only
    assert sum(r["agreement"]["pits_by_one"] for r in summary["rounds"]) > 0
    printed = re.findall(r"team agreement on round (\d+)'s \d+ tasks: mask IoU ([\d.]+)", proc.stdout)
    assert [int(n) for n, _ in printed] == [0, 1, 2], proc.stdout
    assert "misses small pits" in proc.stdout and "draws loose outlines" in proc.stdout


def test_the_report_page_shows_who_labelled_what(team_demo):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the test extra)")
    index = team_demo["root"] / "workspace" / "report" / "index.html"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index.as_uri())
        assert not errors
        assert page.is_visible("h2:has-text('Who labelled what')")
        experts = page.eval_on_selector_all("[data-status^='iou.']", "els => els.map(e => e.dataset.status)")
        assert sorted(experts) == ["iou.expert2@al-loop.local", "iou.expert@al-loop.local"]
        shown = float(page.inner_text("[data-status='team_iou.0']"))
        assert shown == pytest.approx(team_demo["json"]["rounds"][0]["agreement"]["mask_iou"], abs=0.005)
        browser.close()
