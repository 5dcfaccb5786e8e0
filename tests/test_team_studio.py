"""A team of two on a real Label Studio, on PostgreSQL where the machine has it (issue 39).

Two users with a token each answer the same tasks; the loop waits for both, measures their
agreement (squares whose IoU and kappa tests/helpers.py works out by hand), sends the disputed
task to the Review tab, trains on a reviewer's later answer, and says when an answer it learned
from is deleted. Both experts saving at the same moment lose nothing, and a second next-batch
in a row pushes nothing twice.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

import pytest

from al_loop.loop.workspace import Workspace
from al_loop.studio.client import annotated_tasks, connect, create_annotation, find_view, view_task_ids
from al_loop.studio.label_config import parse_label_config
from al_loop.studio.regions import mask_to_brush
from al_loop.studio.team import REVIEW_TAB

from .conftest import cli_here, write_tiles
from .helpers import KAPPA, MEAN_IOU, TEAM_A, TEAM_B

ROOT = Path(__file__).resolve().parents[1]


def run(*argv, env: dict):
    proc = cli_here(*argv, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"al-loop {' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def brush(schema, pits) -> list[dict]:
    return [mask_to_brush(mask, schema.mask_control, label) for mask, label in pits]


def predictions(client, task_ids: list[int]) -> int:
    return sum(len(list(client.predictions.list(task=t))) for t in task_ids)


@pytest.fixture
def team(label_studio, tmp_path):
    """A workspace made by ``init --annotators 2`` on 12 generated tiles, round 0 pushed, and the
    second user's client."""
    tag = uuid.uuid4().hex[:8]
    tiles = label_studio.document_root / f"team-{tag}"
    write_tiles(tiles, 12, size=256, seed=300)
    for extra in tiles.glob("*.npy"):
        extra.unlink()
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(tmp_path / "cache")}
    workspace = tmp_path / "workspace"
    run("init", "--label-studio-url", label_studio.url, "--images", tiles, "--workspace", workspace, "--annotators", 2,
        "--types", "pit,skylight", "--encoder", "filterbank", "--model", "tiny", "--epochs", 5, "--batch-size", 3,
        "--quiet", env=env)
    run("next-batch", "--workspace", workspace, "--quiet", env=env)
    second = label_studio.add_user(f"second-{tag}@team.test")
    return Workspace(workspace), env, connect(label_studio.url, label_studio.token), connect(label_studio.url, second.token)


def test_a_team_of_two_waits_agrees_reviews_and_says_what_was_deleted(label_studio, team):
    workspace, env, first, second = team
    folder = workspace.root
    url, project = label_studio.url, workspace.config().project
    assert first.projects.get(project).maximum_annotations == 2  # Label Studio's overlap, set by init
    schema = parse_label_config(first.projects.get(project).label_config)
    tasks = [r["task_id"] for r in workspace.pushed(0)]
    disputed = tasks[0]
    answer_of = {first: brush(schema, TEAM_A), second: brush(schema, TEAM_B)}

    def answer(client, task_ids):
        for task in task_ids:
            create_annotation(client, url, task, answer_of[client] if task == disputed else [])

    half = len(tasks) // 2
    answer(first, tasks[:half])
    waiting = run("next-batch", "--workspace", folder, "--quiet", env=env)
    # every task still lacks the second expert's answer
    assert f"{len(tasks)} pushed task(s) still await an answer from 2 different experts" in waiting.stdout, waiting.stdout
    status = run("status", "--workspace", folder, "--json", env=env)
    experts = {e["annotator"]: e for e in json.loads(status.stdout)["team"]["experts"]}
    assert sorted(experts[label_studio.username]["done"]) == sorted(tasks[:half])
    assert sorted(experts[label_studio.username]["awaited"]) == sorted(tasks[half:])

    # both experts save at the same moment: nothing is lost
    start = threading.Barrier(2)
    threads = [threading.Thread(target=lambda c=c, ts=ts: (start.wait(), answer(c, ts)))
               for c, ts in ((first, tasks[half:]), (second, tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    users = {int(t["id"]): {a["completed_by"] for a in t["annotations"]} for t in annotated_tasks(first, project, url)}
    assert all(len(users[t]) == 2 for t in tasks), users

    run("next-batch", "--workspace", folder, "--quiet", env=env)  # round 1: the team's consensus trains
    record = workspace.team_records()[disputed]
    assert record["agreement"]["mask_iou"] == pytest.approx(MEAN_IOU, abs=1e-6)
    assert record["agreement"]["type_kappa"] == pytest.approx(KAPPA, abs=1e-6)
    assert (record["agreement"]["pits"], record["agreement"]["pits_by_one"]) == (4, 1)
    assert record["review"] == "pending"
    assert view_task_ids(first, url, project, find_view(first, url, project, REVIEW_TAB)) == [disputed]
    assert workspace.team_rounds()[0]["mask_iou"] == pytest.approx(MEAN_IOU, abs=1e-6)

    # next-batch again at once: the new batch is unanswered, nothing is pushed twice
    batch = [r["task_id"] for r in workspace.pushed(1)]
    before = predictions(first, batch)
    again = run("next-batch", "--workspace", folder, "--quiet", env=env)
    assert len(workspace.rounds()) == 2 and predictions(first, batch) == before, again.stdout

    # an answer round 1 learned from is deleted, and a reviewer answers the disputed task
    learned = next(r for r in workspace.answer_rows() if r["trained_round"] == 1 and r["task_id"] != disputed)
    first.annotations.delete(learned["annotation_id"])
    reviewed = [(TEAM_A[0][0], "pit"), (TEAM_A[1][0], "skylight")]
    create_annotation(first, url, disputed, brush(schema, reviewed))
    forced = run("next-batch", "--workspace", folder, "--force", "--quiet", env=env)
    said = forced.stdout + forced.stderr
    assert f"annotation {learned['annotation_id']}" in said and "deleted in Label Studio" in said, said
    assert workspace.team_records()[disputed]["review"] == "reviewed"
    assert view_task_ids(first, url, project, find_view(first, url, project, REVIEW_TAB)) == []
