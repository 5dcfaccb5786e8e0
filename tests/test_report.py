"""`al-loop report` (issue 36): a static page of where the loop stands, opened in headless
Chromium from the file: no console errors, every image loads, and its numbers are those of
`al-loop status --json`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from al_loop.evaluation.metrics import FIGURE5, TABLE
from al_loop.loop.outputs import record_output, recorded_outputs
from al_loop.loop.workspace import AnswerRecord, RoundPlan, StateUpdate, Workspace, WorkspaceConfig

from .conftest import cli_here, write_png

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    """A workspace three rounds in, recorded through its own API (what next-batch records)."""
    import numpy as np

    ws = Workspace(tmp_path / "ws")
    roles = [(i, f"/data/local-files/?d=t{i}.png", "validation" if i <= 3 else "pool") for i in range(1, 13)]
    ws.create(WorkspaceConfig("http://127.0.0.1:8080", 7, settings={"encoder": "filterbank"}), roles)
    ws.record_plan(RoundPlan(0, "typiclust", 3, 0, None, StateUpdate({}), {}, [(4, None), (5, None), (6, None)], {}))
    ws.finish_round(0, 11)
    for number in (1, 2):
        labelled = {t: "labelled" for t in range(1, 4 + 3 * number)}
        chosen = [(7 + 3 * (number - 1) + k, 0.2 + 0.1 * k + number / 10) for k in range(3)]
        metrics = {m: 0.2 * number + 0.01 * i for i, m in enumerate(dict.fromkeys((*FIGURE5, *TABLE)))}
        if number == 2:  # the stopping rule's measure, as next-batch records it among the round's metrics
            metrics.update(stop_kappa=0.8, stop_object_f1=0.7)
        ws.record_plan(RoundPlan(number, "hybrid", 3, 3 * number, f"round-{number}.pt", StateUpdate(labelled), {},
                                 chosen, metrics, validation={"scored": [1, 2, 3] if number == 2 else [1, 2], "of": 3}))
        ws.finish_round(number, 11 + number)
    # what the pushed predictions held, and who answered what (next-batch records both)
    ws.record_prediction(2, 10, 101, {"pit": 2, "skylight": 1})
    ws.record_prediction(2, 11, 102, {"pit": 1})
    ws.record_answers(AnswerRecord([(1, 1, 5, "a@team", 30.0), (2, 2, 5, "a@team", 50.0), (3, 3, 6, "b@team", None)]))
    quicklook = write_png(tmp_path / "map.png", (np.random.default_rng(0).random((64, 64)) * 255).astype("uint8"))
    (tmp_path / "pits.gpkg").write_bytes(b"")
    record_output(ws.root, "map", "ESP_033211_1670", [tmp_path / "pits.gpkg"], {"pits": 12}, quicklook)
    return ws


def test_the_report_page_shows_the_status_numbers_and_its_images_load(workspace, tmp_path):
    out = tmp_path / "report"
    run = cli_here("report", "--workspace", str(workspace.root), "--out", str(out))
    assert run.returncode == 0, run.stderr
    index = out / "index.html"
    assert str(index) in run.stdout
    status = cli_here("status", "--workspace", str(workspace.root), "--json")
    assert status.returncode == 0, status.stderr
    expected = json.loads(status.stdout)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does on Debian)")
    api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the test extra)")
    with api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(index.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        cells = page.eval_on_selector_all("[data-status]", "els => els.map(e => [e.dataset.status, e.textContent])")
        embedded = json.loads(page.inner_text("#status"))
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert len(images) >= 3 and all(width > 0 for _, width in images), images  # curve, batch scores, the map's quicklook
    assert embedded["counts"] == expected["counts"] and embedded["rounds"] == expected["rounds"]
    shown = dict(cells)
    assert shown["counts.labelled"] == str(expected["counts"]["labelled"])
    assert shown["rounds.length"] == str(len(expected["rounds"])) == "3"
    assert shown["settings.strategy"] == str(expected["settings"]["strategy"])
    assert shown["curve.2.miou"] == f"{expected['last_metrics']['miou']:.3f}"
    assert shown["agreement.2"] == "0.800" and expected["stopping"]["history"][-1] == [2, 6, 0.8]
    assert shown["expected.2"] == "pit 3, skylight 1 (on 2 of 3 tasks)" and shown["expected.0"] == "-"
    assert (shown["tiles.a@team"], shown["tiles.b@team"]) == ("2", "1")
    assert {e["annotator"]: e["seconds_per_tile"] for e in expected["team"]["experts"]} == {"a@team": 40.0, "b@team": None}


def test_report_on_a_fresh_workspace_says_what_to_do(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.create(WorkspaceConfig("http://127.0.0.1:8080", 1), [(1, "a", "validation"), (2, "b", "pool")])
    run = cli_here("report", "--workspace", str(ws.root))
    assert run.returncode == 0, run.stderr
    page = (ws.root / "report" / "index.html").read_text()
    assert "No evaluated round yet" in page and "No decoder trained yet" in page and "No map recorded yet" in page


def test_a_damaged_output_record_is_named_and_skipped(tmp_path):
    (tmp_path / "outputs.jsonl").write_text('{"kind": "map", "title": "a"}\nnot json\n')
    problems: list[str] = []
    assert [r["title"] for r in recorded_outputs(tmp_path, problems)] == ["a"]
    assert problems == [f"{tmp_path / 'outputs.jsonl'}:2: not an output record"]
