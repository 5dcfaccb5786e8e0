"""`al-loop next-batch` and `al-loop curve` against a real Label Studio, with a simulated expert.

In the three-round test each round and the curve run in a process of their own (a restart
each time; its waiting run, status and the round after run in this process). The other tests
set themselves up, and meet the errors that stop before any work, through the same ``main``
in this process (``al_loop_here``: a child costs CI some 6-10 s of imports and proves nothing
more there), and keep a child for what they are about (the killed run's rerun, the token kept
out of stderr, the first run on a labelled project). The expert answers through
label-studio-sdk, and the checks read Label Studio itself: tabs, predictions, annotations.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from al_loop.demo.expert import SimulatedExpert, dataset_boxes
from al_loop.loop.workspace import Workspace
from al_loop.studio.client import view_task_ids
from al_loop.studio.label_config import parse_label_config

from .conftest import HIRISE, cli_here, write_tiles

TILES = 20
ROOT = Path(__file__).resolve().parents[1]


def al_loop(*argv, env: dict, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"al-loop {' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def al_loop_here(*argv, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """``al_loop`` run by ``al_loop.cli.main`` in this process (conftest's ``cli_here``)."""
    proc = cli_here(*argv, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"al-loop {' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tiles(label_studio, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], str]:
    """A folder of tiles under Label Studio's document root and their expert boxes by file name.

    Real HiRISE tiles (a copy of 20 valid-split tiles into the test's temporary folder) where
    ../shared is present, generated tiles otherwise.
    """
    folder = label_studio.document_root / "loop-tiles"
    if (HIRISE / "data.yaml").is_file():
        boxes = dataset_boxes(HIRISE, ("valid",))
        folder.mkdir(parents=True)
        for name in sorted(boxes)[:TILES]:
            shutil.copy(HIRISE / "valid" / "images" / name, folder / name)
        return folder, {n: boxes[n] for n in sorted(boxes)[:TILES]}, "hirise"
    paths = write_tiles(folder, TILES, size=256, seed=200)
    boxes = {p.name: np.load(p.with_suffix(".boxes.npy")) for p in paths}
    for p in paths:
        p.with_suffix(".boxes.npy").unlink()
    return folder, boxes, "generated"


@pytest.fixture
def env(label_studio, shared_cache) -> dict:
    """The session's shared cache: the real tiles' filter-bank entries outlive a test (the rounds
    here encode the same 20 tiles), and test_pit_types.py's have them already."""
    return {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(shared_cache),
            "PYTHONUNBUFFERED": "1"}


def client_for(label_studio):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


def expert_for(label_studio, workspace: Workspace, boxes) -> SimulatedExpert:
    client = client_for(label_studio)
    schema = parse_label_config(client.projects.get(workspace.config().project).label_config)
    return SimulatedExpert(client, label_studio.url, schema, boxes)


def answer_round(expert: SimulatedExpert, workspace: Workspace, number: int, skip: set[int] = frozenset()) -> list[int]:
    rows = workspace.read("SELECT rt.task_id, t.image, t.height, t.width FROM round_tasks rt JOIN tasks t USING (task_id) "
                          "WHERE rt.round = ?", (number,))
    for row in rows:
        if row["task_id"] in skip:
            expert.skip(row["task_id"])
        else:
            expert.answer(row["task_id"], row["image"], (row["height"], row["width"]))
    return [r["task_id"] for r in rows]


def workspace_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def init(label_studio, folder: Path, ws: Path, env: dict, val_size: int = 4, run=al_loop) -> Workspace:
    run("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", val_size, "--workspace", ws,
            "--title", f"al-loop {ws.parent.name}"[:50], env=env)
    return Workspace(ws)


def project_with_expert(label_studio, tiles, env, tmp_path, run=al_loop):
    """A fresh workspace and project on the tiles, the expert who answers it, and a client."""
    folder, boxes, _ = tiles
    ws = tmp_path / "ws"
    workspace = init(label_studio, folder, ws, env, run=run)
    return ws, workspace, expert_for(label_studio, workspace, boxes), client_for(label_studio), workspace.config().project


def next_batch(ws: Path, env: dict, *extra, check: bool = True, run=al_loop) -> subprocess.CompletedProcess:
    return run("next-batch", "--workspace", ws, "--batch-size", 3, "--epochs", 15, "--quiet", *extra, env=env, check=check)


def test_three_rounds_with_a_simulated_expert(label_studio, tiles, env, tmp_path):
    ws, workspace, expert, client, project = project_with_expert(label_studio, tiles, env, tmp_path)
    validation = {r["task_id"] for r in workspace.read("SELECT task_id FROM tasks WHERE role = 'validation'")}

    # Round 0: the validation tiles plus three picked for variety; no decoder yet, so no predictions.
    out = json.loads(next_batch(ws, env, "--json").stdout)
    assert out["status"] == "pushed" and out["round"] == 0 and out["predictions"] == 0
    pushed0 = [t for t, _ in out["chosen"]]
    assert set(pushed0) >= validation and len(pushed0) == len(validation) + 3

    # Nothing answered yet: next-batch waits, exit 0, no new round.
    waiting = next_batch(ws, env, run=al_loop_here)
    assert "still await" in waiting.stdout and len(workspace.read("SELECT * FROM rounds")) == 1

    answer_round(expert, workspace, 0)
    pushed = {0: pushed0}
    for number in (1, 2, 3):
        out = json.loads(next_batch(ws, env, "--json").stdout)
        assert out["status"] == "pushed" and out["round"] == number and out["model_version"] == f"round-{number}"
        assert out["metrics"]["tiles"] == len(validation) and 0 <= out["metrics"]["miou"] <= 1
        pushed[number] = [t for t, _ in out["chosen"]]
        assert len(pushed[number]) == 3 and out["predictions"] == 3
        # One pushed task is skipped in round 1: answered, so not awaited, never trained on or picked again.
        skip = {pushed[1][0]} if number == 1 else set()
        answer_round(expert, workspace, number, skip)

    # A tab per round holding exactly the pushed tasks.
    views = {v.data["title"]: v.id for v in client.views.list(project=project)}
    for number, ids in pushed.items():
        assert view_task_ids(client, label_studio.url, project, views[f"Round {number}"]) == sorted(ids)
    # A prediction per pushed task with the round's model_version, and only one.
    for number in (1, 2, 3):
        for task in pushed[number]:
            versions = [p.model_version for p in client.predictions.list(task=task)]
            assert versions.count(f"round-{number}") == 1, (task, versions)
    # No task pushed twice; validation tiles only in round 0 and never trained on.
    every = [t for ids in pushed.values() for t in ids]
    assert len(every) == len(set(every))
    assert not validation & {t for n in (1, 2, 3) for t in pushed[n]}
    labelled = [r["labelled"] for r in workspace.read("SELECT labelled FROM rounds ORDER BY round")]
    assert labelled == [0, 3, 5, 8]  # round 0's three picks; +3 answered; +3 with one skipped; +3
    states = {r["task_id"]: r["state"] for r in workspace.read("SELECT task_id, state FROM tasks")}
    assert states[pushed[1][0]] == "skipped" and states[pushed[1][1]] == "labelled"

    # The curve (a fresh process, reading only the workspace): three evaluated rounds.
    rows = json.loads(al_loop("curve", "--workspace", ws, "--json", "--png", tmp_path / "curve.png", env=env).stdout)
    assert [r["round"] for r in rows] == [1, 2, 3] and [r["labelled"] for r in rows] == [3, 5, 8]
    assert all({"miou", "micro_f1", "accuracy", "micro_precision", "micro_recall"} <= set(r) for r in rows)
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    status = json.loads(al_loop_here("status", "--workspace", ws, "--json", env=env).stdout)
    assert len(status["rounds"]) == 4 and status["last_metrics"]["round"] == 3

    # Round 4 takes what is left of the pool (20 - 4 validation - 12 pushed = 4 tiles, the skipped one not among them).
    out = json.loads(next_batch(ws, env, "--json", run=al_loop_here).stdout)
    left = set(states) - validation - set(every)
    assert [t for t, _ in out["chosen"]] and set(t for t, _ in out["chosen"]) <= left


def test_a_killed_next_batch_is_finished_by_the_rerun(label_studio, tiles, env, tmp_path):
    ws, workspace, expert, client, project = project_with_expert(label_studio, tiles, env, tmp_path, run=al_loop_here)
    next_batch(ws, env, run=al_loop_here)
    answer_round(expert, workspace, 0)

    # Kill round 1 once its plan is recorded, while it pushes predictions.
    proc = subprocess.Popen([sys.executable, "-m", "al_loop.cli", "next-batch", "--workspace", str(ws), "--batch-size", "3",
                             "--epochs", "15", "--quiet"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        with sqlite3.connect(ws / "state.sqlite") as db:
            if db.execute("SELECT 1 FROM rounds WHERE round = 1").fetchone():
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [(finished,)] = sqlite3.connect(ws / "state.sqlite").execute("SELECT finished_at FROM rounds WHERE round = 1").fetchall()
    assert finished is None, "the kill came after the round was finished: nothing was tested"
    chosen = [r["task_id"] for r in workspace.read("SELECT task_id FROM round_tasks WHERE round = 1 ORDER BY rank")]

    # The narrowest window: Label Studio stored a prediction, the workspace had not recorded it yet.
    unrecorded = workspace.read("SELECT task_id FROM round_tasks WHERE round = 1 AND prediction_id IS NULL ORDER BY rank")
    if unrecorded:
        client.predictions.create(task=unrecorded[0]["task_id"], result=[], score=0.5, model_version="round-1")
    else:
        with workspace.transaction() as db:
            db.execute("UPDATE round_tasks SET prediction_id = NULL WHERE round = 1 AND task_id = ?", (chosen[0],))
    assert "still await" not in next_batch(ws, env, "--json").stdout  # no waiting: it resumes

    rounds = workspace.read("SELECT round, finished_at, view_id FROM rounds ORDER BY round")
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["finished_at"] is not None
    assert [r["task_id"] for r in workspace.read("SELECT task_id FROM round_tasks WHERE round = 1 ORDER BY rank")] == chosen
    for task in chosen:
        assert [p.model_version for p in client.predictions.list(task=task)].count("round-1") == 1
    titles = [v.data["title"] for v in client.views.list(project=project)]
    assert titles.count("Round 1") == 1
    assert view_task_ids(client, label_studio.url, project, rounds[1]["view_id"]) == sorted(chosen)
    # Running again now only waits for the expert.
    assert "still await" in next_batch(ws, env, run=al_loop_here).stdout


def test_bad_input_leaves_the_workspace_as_it_was(label_studio, tiles, env, tmp_path):
    """Each refusal exits 2 naming the cause and leaves the workspace byte for byte as it was. They
    run in this process (main's exit code and stderr) but the wrong token's, which runs in a child
    so that nothing, a library's log line included, can print the token unseen."""
    ws, workspace, expert, client, _ = project_with_expert(label_studio, tiles, env, tmp_path, run=al_loop_here)
    next_batch(ws, env, run=al_loop_here)
    answered = answer_round(expert, workspace, 0)
    before = workspace_digest(ws)

    # A label the config does not know.
    task = answered[0]
    bad = {"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": 8, "original_height": 8,
           "value": {"format": "rle", "rle": [0, 0], "brushlabels": ["crater"]}}
    annotation = client.annotations.create(id=task, result=[bad])
    proc = next_batch(ws, env, check=False, run=al_loop_here)
    assert proc.returncode == 2 and f"task {task}" in proc.stderr and "'crater'" in proc.stderr
    assert workspace_digest(ws) == before
    client.annotations.delete(id=annotation.id)

    # A task deleted in Label Studio between rounds.
    gone = answered[-1]
    client.tasks.delete(id=str(gone))
    proc = next_batch(ws, env, check=False, run=al_loop_here)
    assert proc.returncode == 2 and str(gone) in proc.stderr and "--accept-deleted" in proc.stderr
    assert workspace_digest(ws) == before

    # Unreachable Label Studio and a wrong token.
    config = ws / "config.yaml"
    text = config.read_text()
    config.write_text(text.replace(label_studio.url, "http://127.0.0.1:9"))
    proc = next_batch(ws, env, check=False, run=al_loop_here)
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    config.write_text(text.replace(f"project: {workspace.config().project}\n", "project: 99999\n"))
    proc = next_batch(ws, env, check=False, run=al_loop_here)
    assert proc.returncode == 2 and "404" in proc.stderr and "project" in proc.stderr
    config.write_text(text)
    proc = next_batch(ws, {**env, "LABEL_STUDIO_API_KEY": "not-a-token"}, check=False)
    assert proc.returncode == 2 and "401" in proc.stderr and "not-a-token" not in proc.stderr
    assert workspace_digest(ws) == before

    # Accepting the deletion goes on without it.
    out = json.loads(next_batch(ws, env, "--accept-deleted", "--json", run=al_loop_here).stdout)
    assert out["round"] == 1 and gone not in [t for t, _ in out["chosen"]]
    assert any(str(gone) in w for w in out["warnings"])
    assert workspace.read("SELECT state FROM tasks WHERE task_id = ?", (gone,))[0]["state"] == "deleted"


def test_a_project_labelled_ahead_of_the_rounds_trains_and_pushes_nothing(label_studio, tiles, env, tmp_path):
    """Every task answered before the loop asks: next-batch trains at once (round 1: with answers
    already there, a round 0 would learn nothing), evaluates and records each round, says nothing
    is left, exits 0, however often it is run (the first run in a child, the reruns in this process)."""
    ws, workspace, expert, client, project = project_with_expert(label_studio, tiles, env, tmp_path, run=al_loop_here)
    from PIL import Image

    for row in workspace.tasks():
        with Image.open(label_studio.document_root / row["image"].split("?d=")[1]) as im:
            expert.answer(row["task_id"], row["image"], (im.height, im.width))
    for number in range(3):
        out = next_batch(ws, env, run=al_loop if number == 0 else al_loop_here)
        assert "nothing left to push" in out.stdout, out.stdout
    rounds = workspace.rounds()
    assert [r["round"] for r in rounds] == [1, 2, 3] and all(r["finished_at"] for r in rounds)
    assert rounds[0]["labelled"] == len(workspace.tasks()) - 4  # every pool tile trained on
    assert workspace.curve() and workspace.pushed() == []
