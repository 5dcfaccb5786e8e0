"""Against a real Label Studio: the workspace remembers its settings, init is safe to retry, and
the backend's training never learns from the validation tasks."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from al_loop.demo.expert import SimulatedExpert
from al_loop.demo.servers import BackendServer
from al_loop.loop.workspace import Workspace
from al_loop.studio.label_config import parse_label_config
from ml_backend.telemetry import parse_metrics

from .conftest import write_tiles
from .test_loop_rounds import al_loop, al_loop_here, answer_round, client_for


@pytest.fixture(scope="module")
def tiles(label_studio) -> tuple[Path, dict[str, np.ndarray]]:
    folder = label_studio.document_root / "config-tiles"
    paths = write_tiles(folder, 12, size=256, seed=300)
    boxes = {p.name: np.load(p.with_suffix(".boxes.npy")) for p in paths}
    for p in paths:
        p.with_suffix(".boxes.npy").unlink()
    return folder, boxes


@pytest.fixture
def env(label_studio, tmp_path) -> dict:
    """No cache named anywhere: the default one lives under this test's HOME, to be seen empty."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AL_LOOP_") or k == "AL_LOOP_RUNTIME"}
    return {**base, "HOME": str(tmp_path / "home"), "LABEL_STUDIO_API_KEY": label_studio.token, "PYTHONUNBUFFERED": "1"}


def expert(label_studio, workspace: Workspace, boxes) -> SimulatedExpert:
    client = client_for(label_studio)
    schema = parse_label_config(client.projects.get(workspace.config().project).label_config)
    return SimulatedExpert(client, label_studio.url, schema, boxes)


def test_settings_given_once_hold_for_the_rounds_after(label_studio, tiles, env, tmp_path):
    """Flags given to one next-batch process with --save hold in the next process, and in every run
    after (round 2, config and status read the workspace in this process: al_loop_here, under the
    same environment; a child's start adds only imports)."""
    folder, boxes = tiles
    ws, chosen_cache = tmp_path / "ws", tmp_path / "D"
    al_loop_here("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 2, "--workspace", ws,
            "--title", "settings kept", env=env)
    workspace = Workspace(ws)
    al_loop("next-batch", "--workspace", ws, "--strategy", "margin", "--epochs", 7, "--cache-dir", chosen_cache,
            "--batch-size", 3, "--save", "--quiet", env=env)
    person = expert(label_studio, workspace, boxes)
    for number in (1, 2):  # no flags from here on
        answer_round(person, workspace, number - 1)
        run = al_loop if number == 1 else al_loop_here
        out = json.loads(run("next-batch", "--workspace", ws, "--quiet", "--json", env=env).stdout)
        assert out["round"] == number and out["strategy"] == "margin" and len(out["chosen"]) == 3
    for row in workspace.rounds():
        ran = row["settings"]
        assert (ran["strategy"], ran["epochs"], ran["cache_dir"], ran["batch_size"]) == ("margin", 7, str(chosen_cache), 3)
    assert list(chosen_cache.rglob("*.npy")), "the chosen cache holds the embeddings"
    default_cache = tmp_path / "home" / ".cache" / "al-loop" / "embeddings"
    assert not default_cache.exists() or not list(default_cache.rglob("*.npy"))
    shown = json.loads(al_loop_here("config", "--workspace", ws, "--json", env={**env, "AL_LOOP_BATCH_SIZE": "4"}).stdout)
    assert {k: (shown[k]["value"], shown[k]["source"]) for k in ("strategy", "epochs", "cache_dir", "batch_size")} == {
        "strategy": ("margin", "workspace"), "epochs": (7, "workspace"), "cache_dir": (str(chosen_cache), "workspace"),
        "batch_size": (4, "environment")}
    status = json.loads(al_loop_here("status", "--workspace", ws, "--json", env=env).stdout)
    assert [d["version"] for d in status["decoders"]] == ["round-1", "round-2"]
    validation = {r["task_id"] for r in workspace.tasks() if r["role"] == "validation"}
    for decoder in status["decoders"]:
        assert decoder["trained_on"] and not set(decoder["trained_on"]) & validation
        assert set(decoder["validated_on"]) == validation and decoder["evaluation"]["object_recall"] >= 0


def test_a_retried_init_makes_no_second_project(label_studio, tiles, env, tmp_path):
    folder, _ = tiles
    ws, title = tmp_path / "ws", "init retried"
    outside = tmp_path / "not-served"  # not under Label Studio's document root: its storage is refused
    shutil.copytree(folder, outside)
    failed = al_loop_here("init", "--label-studio-url", label_studio.url, "--images", outside, "--workspace", ws,
                          "--title", title, "--val-size", 2, env=env, check=False)  # the retry runs in a child
    assert failed.returncode == 2 and "local storage" in failed.stderr
    assert not Workspace(ws).exists()
    client = client_for(label_studio)
    made = [p.id for p in client.projects.list() if p.title == title]
    assert len(made) == 1, "the first try made its project before the import failed"
    out = al_loop("init", "--label-studio-url", label_studio.url, "--images", folder, "--workspace", ws,
                  "--title", title, "--val-size", 2, env=env).stdout
    assert "found the project an earlier init made" in out
    assert [p.id for p in client.projects.list() if p.title == title] == made
    assert Workspace(ws).config().project == made[0] and len(Workspace(ws).tasks()) == 12
    assert not (ws / "init-marker").exists()


def _metrics(backend) -> dict:
    return parse_metrics(requests.get(f"{backend.url}/metrics", timeout=10).text)


def _train(backend, project: int, runs: int) -> None:
    reply = requests.post(f"{backend.url}/train", json={"project": project}, timeout=60)
    assert reply.status_code == 201, reply.text
    deadline = time.monotonic() + 240
    while _metrics(backend).get("al_backend_training_runs_total", 0) + _metrics(backend).get(
            "al_backend_training_failures_total", 0) < runs:
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(1)


def test_the_backend_never_trains_on_validation_tasks(label_studio, tiles, env, tmp_path):
    folder, boxes = tiles
    ws = tmp_path / "ws"
    backend = BackendServer(ws, tmp_path / "cache", model="tiny", local_root=label_studio.document_root,
                            extra_env={"LABEL_STUDIO_URL": label_studio.url,
                                       "LABEL_STUDIO_API_KEY": label_studio.token}).start()
    try:
        al_loop_here("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 2, "--workspace",
                     ws, "--title", "backend training", "--backend-url", backend.url, "--cache-dir", tmp_path / "cache",
                     env=env)
        workspace = Workspace(ws)
        project = workspace.config().project
        roles = {r["task_id"]: r for r in workspace.tasks()}
        person = expert(label_studio, workspace, boxes)
        pool = [t for t, r in roles.items() if r["role"] == "pool"][:4]
        validation = [t for t, r in roles.items() if r["role"] == "validation"]
        # Labelled pool tasks but no labelled validation task: the decoder is kept, not used.
        for task in pool:
            person.answer(task, roles[task]["image"], (256, 256))
        _train(backend, project, 1)
        first = json.loads((ws / "decoders" / "backend-1.json").read_text())
        assert sorted(first["trained_on"]) == sorted(pool) and first["metrics"] is None  # the card: not evaluated
        assert requests.get(f"{backend.url}/health", timeout=10).json()["decoder"] is None
        refused = al_loop_here("map", tmp_path / "no-product.tif", "--workspace", ws, "--out", tmp_path / "pits.gpkg",
                               env=env, check=False)
        assert refused.returncode == 2 and "no evaluated decoder" in refused.stderr
        assert not (tmp_path / "pits.gpkg").exists()
        # The validation tasks answered too: they score the next decoder and are never trained on.
        for task in validation:
            person.answer(task, roles[task]["image"], (256, 256))
        _train(backend, project, 2)
        second = json.loads((ws / "decoders" / "backend-2.json").read_text())
        assert sorted(second["trained_on"]) == sorted(pool)
        assert sorted(second["validated_on"]) == sorted(validation) and second["metrics"]["miou"] >= 0
        assert requests.get(f"{backend.url}/health", timeout=10).json()["decoder"] == "backend-2"
        # A project this backend's workspace is not bound to is refused, not trained blind.
        other = client_for(label_studio).projects.create(title="not ours", label_config=client_for(
            label_studio).projects.get(project).label_config)
        reply = requests.post(f"{backend.url}/train", json={"project": other.id}, timeout=60)
        assert reply.status_code == 409 and "al-loop init --project" in reply.json()["error"]
        # Binding the project again (a second workspace) reuses its backend connection.
        al_loop_here("init", "--label-studio-url", label_studio.url, "--project", project, "--val-size", 2,
                     "--workspace", tmp_path / "ws2", "--backend-url", backend.url, env=env)
        assert len(list(client_for(label_studio).ml.list(project=project))) == 1
    finally:
        backend.stop()
