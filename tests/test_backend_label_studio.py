"""The ML backend (gunicorn, tiny SAM) against a real Label Studio 1.23, driven through label-studio-sdk."""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from al_loop.demo.servers import BackendServer
from al_loop.loop.init import init_workspace
from al_loop.loop.workspace import Workspace
from al_loop.studio.label_config import default_label_config
from al_loop.studio.regions import brush_to_mask
from ml_backend.telemetry import parse_metrics

from .conftest import write_tiles

SIZE = 256
BOGUS_TOKEN = "bogus0token0" + "f" * 28


def wait_for(check, timeout=120.0, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def rectangle(x, y, w, h, label="pit"):
    return {
        "original_width": SIZE, "original_height": SIZE, "image_rotation": 0, "from_name": "box", "to_name": "image",
        "type": "rectanglelabels", "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


@pytest.fixture(scope="module")
def setup(label_studio, tmp_path_factory):
    from label_studio_sdk import LabelStudio

    tiles = write_tiles(label_studio.document_root / "backend-tiles", 6, size=SIZE, seed=40)
    work = tmp_path_factory.mktemp("backend-ls")
    # No local root: the backend must fetch /data/local-files URLs from Label Studio with its token.
    backend = BackendServer(work / "workspace", work / "cache", model="tiny").start()
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = client.projects.create(title="backend test", label_config=default_label_config())
    storage = client.import_storage.local.create(
        project=project.id, path=str(tiles[0].parent), use_blob_urls=True, regex_filter=r".*\.png", title="tiles"
    )
    client.import_storage.local.sync(id=storage.id)
    tasks = wait_for(lambda: (t := list(client.tasks.list(project=project.id))) and len(t) == 6 and t)
    tasks = sorted(tasks, key=lambda t: t.id)
    # Two tasks carry imported expert boxes (as predictions), like a DeepLandforms import.
    url = tasks[0].data["image"]
    imported = client.projects.import_tasks(
        project.id,
        request=[{"data": {"image": url}, "predictions": [{"model_version": "expert-boxes", "result": [rectangle(10, 10, 30, 30), rectangle(55, 60, 25, 20)]}]}],
        return_task_ids=True,
    )
    ml = client.ml.create(project=project.id, url=backend.url, is_interactive=True, title="al-loop SAM")
    # The backend trains only the project of its workspace (never on its validation tasks).
    report = init_workspace(Workspace(work / "workspace"), label_studio.url, label_studio.token, project=project.id,
                            val_size=1, settings={"cache_dir": str(work / "cache")})
    yield {"client": client, "project": project, "tasks": tasks, "boxed": imported.task_ids[0], "ml": ml, "backend": backend,
           "ls": label_studio, "validation": report.validation}
    backend.stop()


def backend_metrics(backend) -> dict:
    return parse_metrics(requests.get(f"{backend.url}/metrics", timeout=10).text)


def test_interactive_box_gives_a_mask_inside_the_box(setup):
    client, ml, task = setup["client"], setup["ml"], setup["tasks"][0]
    context = {"result": [rectangle(20, 25, 40, 35)]}
    reply = client.ml.with_raw_response.predict_interactive(id=ml.id, task=task.id, context=context)
    data = reply.response.json()["data"]
    (region,) = data["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["pit"]
    mask = brush_to_mask(region)
    assert mask.shape == (SIZE, SIZE) and mask.any()
    ys, xs = np.nonzero(mask)
    assert xs.min() >= int(0.20 * SIZE) and xs.max() < np.ceil(0.60 * SIZE)
    assert ys.min() >= int(0.25 * SIZE) and ys.max() < np.ceil(0.60 * SIZE)
    assert data["model_version"] == "sam-tiny-seed0"


def test_annotation_reaches_the_webhook_and_training_uses_it(setup):
    client, project, tasks, backend = setup["client"], setup["project"], setup["tasks"], setup["backend"]
    context = {"result": [rectangle(30, 30, 30, 30)]}
    reply = client.ml.with_raw_response.predict_interactive(id=setup["ml"].id, task=tasks[1].id, context=context)
    brush = reply.response.json()["data"]["result"]
    client.annotations.create(id=tasks[1].id, result=[rectangle(30, 30, 30, 30), *brush], project=project.id)
    client.annotations.create(id=tasks[2].id, result=[], project=project.id)  # "no pit here" is an answer too
    for task in set(setup["validation"]) - {tasks[1].id, tasks[2].id}:  # a scored decoder is the one used
        client.annotations.create(id=task, result=[], project=project.id)
    wait_for(lambda: backend_metrics(backend).get('al_backend_webhooks_total{action="ANNOTATION_CREATED"}', 0) >= 2, 60)
    client.ml.train(id=setup["ml"].id)  # Label Studio's "Start Training"
    health = wait_for(lambda: (h := requests.get(f"{backend.url}/health", timeout=10).json())["decoder"] and h, 180)
    assert health["decoder"] == "backend-1"
    assert backend_metrics(backend)["al_backend_training_runs_total"] == 1


def test_retrieve_predictions_stores_one_per_task(setup):
    client, project = setup["client"], setup["project"]
    wait_for(lambda: requests.get(f"{setup['backend'].url}/health", timeout=10).json()["decoder"], 240)
    ids = [t.id for t in setup["tasks"]] + [setup["boxed"]]
    client.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": False, "included": ids})
    by_task = {i: list(client.predictions.list(task=i)) for i in ids}
    ours = {i: [p for p in preds if p.model_version != "expert-boxes"] for i, preds in by_task.items()}
    assert all(len(p) >= 1 for p in ours.values()), {i: len(p) for i, p in ours.items()}
    # Tasks holding boxes (imported predictions, or the annotation with a box) get SAM masks per box.
    with_boxes = {setup["boxed"], setup["tasks"][1].id}
    for i in with_boxes:
        (sam_from_boxes,) = ours[i]
        assert sam_from_boxes.model_version == "sam-tiny-seed0"
        assert 1 <= len(sam_from_boxes.result) <= 2 and sam_from_boxes.result[0]["type"] == "brushlabels"
    # The others get the decoder trained on START_TRAINING.
    decoder_versions = {p.model_version for i, preds in ours.items() if i not in with_boxes for p in preds}
    assert decoder_versions == {"backend-1"}


def test_uploaded_images_are_fetched_from_label_studio(setup):
    client, ls, project = setup["client"], setup["ls"], setup["project"]
    png = next((ls.document_root / "backend-tiles").glob("*.png")).read_bytes()
    reply = requests.post(
        f"{ls.url}/api/projects/{project.id}/import?return_task_ids=true",
        headers={"Authorization": f"Token {ls.token}"},
        files={"file": ("uploaded.png", png, "image/png")},
        timeout=60,
    )
    assert reply.status_code == 201, reply.text
    (task_id,) = reply.json()["task_ids"]
    task = client.tasks.get(task_id)
    assert task.data["image"].startswith("/data/upload/")
    answer = client.ml.with_raw_response.predict_interactive(
        id=setup["ml"].id, task=task_id, context={"result": [rectangle(20, 20, 40, 40)]}
    )
    assert answer.response.json()["data"]["result"][0]["type"] == "brushlabels"


def test_label_studio_errors_become_clear_backend_errors(setup):
    backend, ls, task = setup["backend"], setup["ls"], setup["tasks"][0]
    config = default_label_config()
    context = {"result": [rectangle(20, 25, 40, 35)]}
    body = {"tasks": [{"id": task.id, "data": task.data}], "label_config": config, "params": {"context": context}}
    # A wrong token: Label Studio answers 401 for the image, the backend says so.
    requests.post(f"{backend.url}/setup", json={"project": "4242.1", "schema": config, "hostname": ls.url, "access_token": BOGUS_TOKEN}, timeout=10)
    reply = requests.post(f"{backend.url}/predict", json={**body, "project": "4242.1"}, timeout=30)
    assert reply.status_code == 401 and "refused" in reply.json()["error"]
    # A file Label Studio does not have: 404 (local files) or its own 500 (uploads) -> 502.
    project = f"{setup['project'].id}.0"
    missing = {**body, "project": project, "tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=backend-tiles/gone.png"}}]}
    reply = requests.post(f"{backend.url}/predict", json=missing, timeout=30)
    assert reply.status_code == 404 and "not found" in reply.json()["error"]
    missing_upload = {**missing, "tasks": [{"id": 1, "data": {"image": "/data/upload/1/not-there.png"}}]}
    reply = requests.post(f"{backend.url}/predict", json=missing_upload, timeout=30)
    assert reply.status_code == 502 and "failed with HTTP 500" in reply.json()["error"]
    # Label Studio unreachable.
    requests.post(f"{backend.url}/setup", json={"project": "4343.1", "schema": config, "hostname": "http://127.0.0.1:9", "access_token": BOGUS_TOKEN}, timeout=10)
    reply = requests.post(f"{backend.url}/predict", json={**body, "project": "4343.1"}, timeout=30)
    assert reply.status_code == 502 and "unreachable" in reply.json()["error"]
    assert requests.get(f"{backend.url}/health", timeout=10).status_code == 200


def test_no_token_in_the_backend_log(setup):
    log = setup["backend"].process.log_path.read_text()
    assert "POST /predict" in log  # the log is the right one and not empty
    assert setup["ls"].token not in log
    assert BOGUS_TOKEN not in log


def test_start_training_for_a_project_label_studio_lacks_is_a_404_not_a_201(setup):
    backend, ls = setup["backend"], setup["ls"]
    config = default_label_config()
    requests.post(f"{backend.url}/setup", json={"project": "98765.1", "schema": config, "hostname": ls.url,
                                                "access_token": ls.token}, timeout=10)
    reply = requests.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 98765}}, timeout=60)
    assert reply.status_code == 404 and "cannot train project 98765" in reply.json()["error"]
    known = requests.post(f"{backend.url}/webhook", json={"action": "START_TRAINING", "project": {"id": setup["project"].id}},
                          timeout=60)
    assert known.status_code == 201 and known.json()["status"] in ("started", "queued")
