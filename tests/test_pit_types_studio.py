"""Pit types against a real Label Studio: a catalogue's YOLO labels imported as typed
annotations, a typed round (pre-annotations carry types), the backend's typed box prompt,
and a binary workspace from before types still running next-batch."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from al_loop.data.yolo import parse_label_rows
from al_loop.demo.expert import SimulatedExpert, dataset_boxes, dataset_classes
from al_loop.demo.servers import BackendServer
from al_loop.loop.workspace import Workspace
from al_loop.models.decoder import load_decoder
from al_loop.studio.label_config import default_label_config, parse_label_config
from al_loop.studio.regions import brush_to_mask
from al_loop.training.store import DecoderStore

from .conftest import HIRISE
from .test_backend_label_studio import rectangle, wait_for
from .test_loop_rounds import al_loop, al_loop_here, answer_round, client_for, next_batch

pytestmark = pytest.mark.skipif(not (HIRISE / "data.yaml").is_file(), reason=f"the HiRISE dataset is absent ({HIRISE})")
TYPES = tuple(f"type {i}" for i in range(1, 6))
TILES, LABELLED = 20, 14


@pytest.fixture(scope="module")
def catalogue(label_studio, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """20 real valid-split tiles under Label Studio's document root, and a label folder holding
    the YOLO files of 14 of them (plus one for an image that is not there)."""
    folder = label_studio.document_root / "typed-tiles"
    folder.mkdir(parents=True)
    labels = tmp_path_factory.mktemp("catalogue")
    names = sorted(p.name for p in (HIRISE / "valid" / "images").iterdir())[:TILES]
    for name in names:
        shutil.copy(HIRISE / "valid" / "images" / name, folder / name)
    for name in names[:LABELLED]:
        source = HIRISE / "valid" / "labels" / (Path(name).stem + ".txt")
        (labels / source.name).write_text(source.read_text() if source.is_file() else "")
    (labels / "not-a-tile.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return folder, labels, names


@pytest.fixture
def env(label_studio, shared_cache) -> dict:
    """The session's shared cache: both loop tests here encode the same 20 real tiles (the loop
    tests of test_loop_rounds.py too), an entry keyed by the image's bytes and the encoder."""
    import os

    return {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(shared_cache),
            "PYTHONUNBUFFERED": "1"}


def expected_boxes(labels: Path, names: list[str], all_names: bool = False) -> dict[str, int]:
    """Boxes per type an import should make: every row, less those under a pixel (the tiles are 900 px)."""
    counts = dict.fromkeys(TYPES, 0)
    for name in names if all_names else names[:LABELLED]:
        for cls, _, _, w, h in parse_label_rows((labels / (Path(name).stem + ".txt")).read_text()):
            if w * 900 >= 1 and h * 900 >= 1:
                counts[TYPES[int(cls)]] += 1
    return counts


def test_imported_catalogue_starts_a_typed_round_one_without_weights(label_studio, catalogue, env, tmp_path):
    """No SAM weights anywhere: the filterbank learns, imported boxes train as their inscribed
    ellipses, and nothing comes from a SAM with random weights."""
    folder, labels, names = catalogue
    ws = tmp_path / "ws"
    env = {**env, "AL_LOOP_WEIGHTS_DIR": str(tmp_path / "no-weights")}
    out = al_loop("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 4, "--workspace", ws,
                  "--title", "typed import", "--types", HIRISE / "data.yaml", "--labels", labels, env=env)
    assert f"imported {LABELLED} annotation(s)" in out.stdout and "match no task" in out.stderr
    assert "no SAM weights for vit_b" in out.stderr
    workspace = Workspace(ws)
    project = workspace.config().project
    client = client_for(label_studio)
    assert parse_label_config(client.projects.get(project).label_config).type_names == TYPES

    # Label Studio holds one annotation per labelled tile, with a typed box per catalogue row.
    found = dict.fromkeys(TYPES, 0)
    annotated = 0
    for task in client.tasks.list(project=project, fields="all"):
        for annotation in task.annotations or []:
            annotated += 1
            for region in annotation["result"]:
                found[region["value"]["rectanglelabels"][0]] += 1
    assert annotated == LABELLED
    assert found == expected_boxes(labels, names) and sum(found.values()) > 0

    # The first next-batch trains at once: round 1, a five-type decoder, per-type figures.
    proc = next_batch(ws, env, "--json")
    report = json.loads(proc.stdout)
    assert report["status"] == "pushed" and report["round"] == 1 and report["labelled"] > 0
    assert "ellipse inscribed" in proc.stderr  # said, not hidden
    decoder, meta = load_decoder(ws / "decoders" / "round-1.pt")
    assert decoder.types == 5 and meta["encoder"] == "filterbank"
    validation = {r["task_id"] for r in workspace.read("SELECT task_id, state FROM tasks WHERE role = 'validation'")}
    chosen = [t for t, _ in report["chosen"]]
    unlabelled_validation = validation - {t.id for t in client.tasks.list(project=project, fields="all") if t.annotations}
    assert set(chosen[: len(unlabelled_validation)]) == unlabelled_validation  # no round 0 sent them out
    if report["validation"]:
        assert {"typed_object_recall", "object_recall[type 5]", "confusion[type 1>type 2]"} <= set(report["metrics"])
    metrics = workspace.round_metrics(1)
    # Per type, the pits it learned from are the boxes imported on its training (pool) tiles.
    pool = {r["image"].rsplit("/", 1)[-1] for r in workspace.tasks() if r["role"] == "pool"}
    trained = [n for n in names[:LABELLED] if n in pool]
    assert {t: metrics[f"labelled_objects[{t}]"] for t in TYPES} == expected_boxes(labels, trained, all_names=True)
    assert sum(metrics[f"labelled_objects[{t}]"] for t in TYPES) > 0

    # Pre-annotations name the project's types, each region scored by its type's probability.
    labels_used = set()
    for task in chosen:
        for prediction in client.predictions.list(task=task):
            assert prediction.model_version == "round-1"  # the decoder's: never a SAM with random weights
            for region in prediction.result:
                labels_used |= set(region["value"]["brushlabels"])
                assert 0 <= region["score"] <= 1
    assert labels_used and labels_used <= set(TYPES), labels_used
    status = al_loop("status", "--workspace", ws, env=env).stdout
    assert "labelled pits per type" in status and "type 1" in status


def test_backend_gives_a_typed_box_a_mask_of_its_type(label_studio, catalogue, tmp_path):
    from label_studio_sdk import LabelStudio

    folder = catalogue[0]
    backend = BackendServer(tmp_path / "workspace", tmp_path / "cache", model="tiny").start()
    try:
        client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
        project = client.projects.create(title="typed backend", label_config=default_label_config("pit-types.xml"))
        storage = client.import_storage.local.create(project=project.id, path=str(folder), use_blob_urls=True,
                                                     regex_filter=r".*\.jpg", title="tiles")
        client.import_storage.local.sync(id=storage.id)
        task = wait_for(lambda: next(iter(client.tasks.list(project=project.id)), None))
        ml = client.ml.create(project=project.id, url=backend.url, is_interactive=True, title="al-loop SAM")
        for label in ("type 3", "type 5"):
            box = rectangle(20, 25, 40, 35, label=label)
            box["original_width"] = box["original_height"] = 900
            reply = client.ml.with_raw_response.predict_interactive(id=ml.id, task=task.id, context={"result": [box]})
            (region,) = reply.response.json()["data"]["result"]
            assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [label]
            assert brush_to_mask(region).shape == (900, 900)
    finally:
        backend.stop()


def test_binary_workspace_from_before_types_still_runs_next_batch(label_studio, catalogue, env, tmp_path):
    """A one-label project whose decoder files were written before pit types existed (no 'types'
    in them): status reads it, the backend's store loads it, and next-batch goes on. The rounds before
    the files are rewritten run in this process (they only make the workspace); next-batch and status
    on the old files run in children, as a user runs them."""
    folder, _, names = catalogue
    ws = tmp_path / "ws"
    al_loop_here("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 4, "--workspace", ws,
            "--title", "binary before types", env=env)
    workspace = Workspace(ws)
    client = client_for(label_studio)
    schema = parse_label_config(client.projects.get(workspace.config().project).label_config)
    expert = SimulatedExpert(client, label_studio.url, schema, dataset_boxes(HIRISE, ("valid",)),
                             dataset_classes(HIRISE, ("valid",)))  # classes are ignored: the project has one type
    next_batch(ws, env, run=al_loop_here)
    answer_round(expert, workspace, 0)
    assert json.loads(next_batch(ws, env, "--json", run=al_loop_here).stdout)["round"] == 1
    for path in (ws / "decoders").glob("*.pt"):  # as the files were before this change
        blob = torch.load(path, weights_only=True)
        blob.pop("types"), blob.pop("class_weights")
        torch.save(blob, path)
    decoder, _ = DecoderStore(ws).load(DecoderStore(ws).latest())
    assert decoder.types == 1
    answer_round(expert, workspace, 1)
    report = json.loads(next_batch(ws, env, "--json").stdout)
    assert report["status"] == "pushed" and report["round"] == 2 and not any(k.startswith("object_recall[") for k in report["metrics"])
    for task, _ in report["chosen"]:
        for prediction in client.predictions.list(task=task):
            assert all(r["value"]["brushlabels"] == ["pit"] for r in prediction.result)
    assert "DAMAGED" not in al_loop("status", "--workspace", ws, env=env).stdout
