"""The ML backend's protocol and behaviour, in-process (Flask's test client, the real service,
the tiny SAM). The same server against a real Label Studio is in test_backend_label_studio.py."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from al_loop.data.images import read_image
from al_loop.models.card import DecoderCard
from al_loop.models.sam import PromptSegmenter
from al_loop.studio.label_config import default_label_config
from al_loop.studio.regions import brush_to_mask
from al_loop.training.store import DecoderStore
from al_loop.training.train import TrainingSet, train_decoder
from ml_backend.app import create_app
from ml_backend.service import SegmentationService
from ml_backend.settings import BackendSettings
from ml_backend.telemetry import parse_metrics

from .conftest import write_tiles

CONFIG = default_label_config()
# What a scored decoder records (DecoderStore makes only a scored version the latest).
SCORED = {"miou": 0.5}
SIZE = 240


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    write_tiles(root / "tiles", 4, size=SIZE)
    (root / "tiles" / "empty.png").write_bytes(b"")
    (root / "tiles" / "notes.png").write_text("these are field notes, not an image")
    good = (root / "tiles" / "tile-000.png").read_bytes()
    (root / "tiles" / "truncated.png").write_bytes(good[: len(good) // 3])
    # 9000 x 9000 one-bit pixels: a few kB of PNG, 81 Mpx once decoded.
    Image.new("1", (9000, 9000)).save(root / "tiles" / "huge.png")
    (root / "secret.png").write_bytes(good)  # outside the allowed root
    return root


def make_app(root, **overrides):
    values = {"model": "tiny", "cache_dir": str(root / "cache"), "local_root": str(root / "tiles")}
    values.update(overrides, workspace=str(root / overrides.get("workspace", "ws")))
    settings = BackendSettings.resolve(**values)
    service = SegmentationService(settings)
    return create_app(service), service


@pytest.fixture(scope="module")
def backend(root):
    app, service = make_app(root)
    return app.test_client(), service


def box_context(x=20.0, y=25.0, w=30.0, h=35.0, label="pit", points=()):
    result = [
        {
            "original_width": SIZE, "original_height": SIZE, "image_rotation": 0, "type": "rectanglelabels",
            "from_name": "box", "to_name": "image",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
        }
    ] if w is not None else []
    for px, py, positive in points:
        result.append(
            {
                "original_width": SIZE, "original_height": SIZE, "type": "keypointlabels", "from_name": "point",
                "to_name": "image", "is_positive": positive,
                "value": {"x": px, "y": py, "width": 0.5, "keypointlabels": [label]},
            }
        )
    return {"result": result}


def interactive(client, context, image="tile-000.png", **extra):
    body = {"tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG, "params": {"context": context}}
    body.update(extra)
    return client.post("/predict", json=body)


def test_health_names_the_model(backend):
    client, _ = backend
    for path in ("/", "/health"):
        reply = client.get(path)
        assert reply.status_code == 200
        assert reply.json["status"] == "UP" and reply.json["sam"] == "sam-tiny-seed0"


def test_box_prompt_gives_a_brush_mask_inside_the_box(backend, tiny_sam, root):
    client, service = backend
    reply = interactive(client, box_context())
    assert reply.status_code == 200
    (prediction,) = reply.json["results"]
    (region,) = prediction["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["pit"]
    assert (region["from_name"], region["to_name"]) == ("mask", "image")
    assert (region["original_width"], region["original_height"]) == (SIZE, SIZE)
    mask = brush_to_mask(region)
    ys, xs = np.nonzero(mask)
    assert mask.any()
    x0, y0, x1, y1 = 0.20 * SIZE, 0.25 * SIZE, 0.50 * SIZE, 0.60 * SIZE
    assert xs.min() >= int(x0) and xs.max() < np.ceil(x1) and ys.min() >= int(y0) and ys.max() < np.ceil(y1)
    # The score is SAM's own predicted IoU for this prompt, computed here independently.
    embedding = service.sam_encoder.encode(read_image(root / "tiles" / "tile-000.png"))
    direct = PromptSegmenter(tiny_sam).segment(embedding, (SIZE, SIZE), box=(x0, y0, x1, y1))
    assert region["score"] == pytest.approx(direct.score, abs=0.02)
    assert prediction["model_version"] == "sam-tiny-seed0"


def test_points_refine_a_box_and_work_alone(backend):
    client, _ = backend
    box_only = brush_to_mask(interactive(client, box_context(x=10, y=10, w=60, h=60)).json["results"][0]["result"][0])
    refined_reply = interactive(client, box_context(x=10, y=10, w=60, h=60, points=[(30, 30, True), (60, 60, False)]))
    assert refined_reply.status_code == 200
    refined = brush_to_mask(refined_reply.json["results"][0]["result"][0])
    assert not np.array_equal(box_only, refined)  # the points reached SAM
    points_only = interactive(client, box_context(w=None, points=[(40, 40, True)]))
    assert points_only.status_code == 200
    assert points_only.json["results"][0]["model_version"] == "sam-tiny-seed0"


def test_setup_schema_is_used_when_predict_has_no_config(backend):
    client, _ = backend
    reply = client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG, "hostname": "", "access_token": ""})
    assert reply.status_code == 200 and reply.json["model_version"] == "sam-tiny-seed0"
    body = {"tasks": [{"id": 1, "data": {"image": "tile-001.png"}}], "project": "7.1700000000", "params": {"context": box_context()}}
    assert client.post("/predict", json=body).status_code == 200
    bad = client.post("/setup", json={"project": "8.1", "schema": "<View><Image name='i' value='$i'/></View>"})
    assert bad.status_code == 422 and "BrushLabels" in bad.json["error"]


def test_labels_and_names_come_from_the_config(backend):
    client, _ = backend
    config = (
        "<View><Image name='tile' value='$url'/>"
        "<BrushLabels name='outline' toName='tile'><Label value='skylight'/><Label value='pit'/></BrushLabels>"
        "<RectangleLabels name='prompt' toName='tile' smart='true'><Label value='skylight'/></RectangleLabels></View>"
    )
    context = box_context(label="skylight")
    body = {"tasks": [{"id": 3, "data": {"url": "tile-002.png"}}], "label_config": config, "params": {"context": context}}
    region = client.post("/predict", json=body).json["results"][0]["result"][0]
    assert (region["from_name"], region["to_name"], region["value"]["brushlabels"]) == ("outline", "tile", ["skylight"])


def test_batch_prompts_sam_with_the_boxes_a_task_holds(backend):
    client, _ = backend
    boxes = [box_context(x=10, y=10, w=20, h=20)["result"][0], box_context(x=55, y=50, w=30, h=25)["result"][0]]
    task = {"id": 11, "data": {"image": "tile-003.png"}, "annotations": [], "predictions": [{"id": 5, "result": boxes}]}
    reply = client.post("/predict", json={"tasks": [task], "label_config": CONFIG})
    assert reply.status_code == 200
    (prediction,) = reply.json["results"][0]
    assert len(prediction["result"]) == 2
    assert prediction["model_version"] == "sam-tiny-seed0"


def test_batch_without_boxes_uses_the_latest_decoder(root):
    app, service = make_app(root, workspace="ws-decoder")
    client = app.test_client()
    task = {"id": 12, "data": {"image": "tile-001.png"}}
    before = client.post("/predict", json={"tasks": [task], "label_config": CONFIG})
    assert before.status_code == 200 and before.json["results"] == [[]]  # no boxes, no decoder: nothing
    # A decoder trained on one tile where everything left of centre is "pit".
    embedding = service.sam_encoder.encode(read_image(root / "tiles" / "tile-001.png"))
    target = np.zeros((SIZE, SIZE), bool)
    target[:, : SIZE // 2] = True
    data = TrainingSet()
    data.add(embedding, target)
    decoder = train_decoder(data, epochs=60, seed=0, progress=False)
    DecoderStore(root / "ws-decoder").save(decoder, DecoderCard(service.sam_encoder.id, "sam-tiny", version="round-1",
                                                                metrics=SCORED))
    after = client.post("/predict", json={"tasks": [task], "label_config": CONFIG})
    (prediction,) = after.json["results"][0]
    assert prediction["model_version"] == "round-1"
    assert 0.5 <= prediction["score"] <= 1.0
    painted = np.zeros((SIZE, SIZE), bool)
    for region in prediction["result"]:
        painted |= brush_to_mask(region)
    # The tiny SAM's random 16x16 embedding is coarse; the decoder still learnt the side.
    assert painted[:, : SIZE // 2].mean() - painted[:, SIZE // 2 :].mean() > 0.4
    assert client.get("/health").json["decoder"] == "round-1"
    assert client.post("/setup", json={"project": "9.1", "schema": CONFIG}).json["model_version"] == "round-1"


@pytest.mark.parametrize("damage", ["truncated pointer", "garbage pointer", "pointer elsewhere", "garbage decoder"])
def test_a_damaged_decoder_degrades_health_and_the_next_training_heals_it(root, damage):
    workspace = root / f"ws-damaged-{damage.replace(' ', '-')}"
    app, service = make_app(root, workspace=workspace.name)
    client = app.test_client()
    data = TrainingSet()
    data.add(service.sam_encoder.encode(read_image(root / "tiles" / "tile-001.png")), np.zeros((SIZE, SIZE), bool))
    store = DecoderStore(workspace)
    store.save(train_decoder(data, epochs=2, seed=0, progress=False),
               DecoderCard(service.sam_encoder.id, "sam-tiny", version="round-1", metrics=SCORED))
    pointer, weights = store.dir / "latest.json", store.dir / "round-1.pt"
    if damage == "truncated pointer":
        pointer.write_text(pointer.read_text()[:20])
    elif damage == "garbage pointer":
        pointer.write_bytes(b"\x00\xff garbage")
    elif damage == "pointer elsewhere":
        pointer.write_text(pointer.read_text().replace('"round-1.pt"', '"../../secret.pt"'))
    else:
        weights.write_bytes(weights.read_bytes()[:300])
    health = client.get("/health")
    assert health.status_code == 200 and health.json["status"] == "UP" and health.json["degraded"] is True
    assert "damaged" in health.json["problems"][0] or "cannot be loaded" in health.json["problems"][0]
    assert "next training run" in health.json["problems"][0]
    # SAM's box prompts keep working; a task without boxes gets no decoder prediction.
    assert interactive(client, box_context()).status_code == 200
    plain = client.post("/predict", json={"tasks": [{"id": 4, "data": {"image": "tile-001.png"}}], "label_config": CONFIG})
    assert plain.status_code == 200 and plain.json["results"] == [[]]
    # The next good training run replaces it.
    store.save(train_decoder(data, epochs=2, seed=0, progress=False),
               DecoderCard(service.sam_encoder.id, "sam-tiny", version="round-2", metrics=SCORED))
    healed = client.get("/health").json
    assert healed["degraded"] is False and healed["problems"] == [] and healed["decoder"] == "round-2"


@pytest.mark.parametrize(
    ("image", "status", "words"),
    [
        ("empty.png", 422, "empty"),
        ("notes.png", 422, "not an image"),
        ("truncated.png", 422, "truncated"),
        ("huge.png", 413, "over the limit"),
        ("../secret.png", 403, "escapes"),
        ("missing.png", 404, "not found"),
        ("http://127.0.0.1:9/tile.png", 502, "unreachable"),
        ("ftp://example.org/tile.png", 400, "scheme"),
    ],
)
def test_bad_images_get_clear_errors_and_the_server_keeps_serving(backend, image, status, words):
    client, _ = backend
    reply = interactive(client, box_context(), image=image)
    assert reply.status_code == status
    assert words in reply.json["error"]
    assert interactive(client, box_context()).status_code == 200


@pytest.mark.parametrize(
    ("context", "words"),
    [
        (box_context(x=120, y=10, w=10, h=10), "outside the image"),
        (box_context(w=0), "zero or negative size"),
        (box_context(h=-5), "zero or negative size"),
        (box_context(label="crater"), "'crater' is not a brush label"),
    ],
)
def test_bad_prompts_are_refused_with_a_reason(backend, context, words):
    client, _ = backend
    reply = interactive(client, context)
    assert reply.status_code == 422
    assert words in reply.json["error"]


def test_malformed_requests(backend):
    client, _ = backend
    reply = client.post("/predict", data="{not json", content_type="application/json")
    assert reply.status_code == 400 and "malformed JSON" in reply.json["error"]
    reply = client.post("/predict", json={"label_config": CONFIG})
    assert reply.status_code == 400 and "'tasks'" in reply.json["error"]
    reply = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "tile-000.png"}}]})
    assert reply.status_code == 422 and "labelling config" in reply.json["error"]
    reply = client.post("/webhook", json={"action": "LAUNCH_ROCKET", "project": {"id": 1}})
    assert reply.status_code == 400 and "unknown webhook action" in reply.json["error"]
    assert client.get("/nowhere").status_code == 404
    assert client.get("/health").status_code == 200


def test_one_bad_task_does_not_spoil_the_batch(backend):
    client, _ = backend
    boxes = [box_context()["result"][0]]
    tasks = [
        {"id": 21, "data": {"image": "tile-000.png"}, "predictions": [{"result": boxes}]},
        {"id": 22, "data": {"image": "notes.png"}},
        {"id": 23, "data": {"image": "tile-002.png"}, "annotations": [{"id": 1, "result": boxes}]},
    ]
    reply = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert reply.status_code == 200
    results = reply.json["results"]
    assert len(results) == 3 and len(results[0][0]["result"]) == 1 and results[1] == [] and len(results[2][0]["result"]) == 1
    (error,) = reply.json["errors"]
    assert error["task"] == 22 and error["status"] == 422
    everything_bad = client.post("/predict", json={"tasks": [tasks[1]], "label_config": CONFIG})
    assert everything_bad.status_code == 422 and "not an image" in everything_bad.json["error"]


def test_predict_batch_reports_each_failed_task_by_its_id(backend):
    _, service = backend
    boxes = [box_context()["result"][0]]
    tasks = [
        # The header reads, the pixels do not: the failure comes from decoding, past the task.
        {"id": 31, "data": {"image": "truncated.png"}, "predictions": [{"result": boxes}]},
        {"id": 32, "data": {"image": "tile-001.png"}, "predictions": [{"result": boxes}]},
    ]
    schema = service.projects.schema(None, CONFIG)
    results, errors = service.predict_batch(tasks, schema, service.projects.project(None).access)
    assert results[0] == [] and len(results[1][0]["result"]) == 1
    (error,) = errors
    assert (error["task"], error["status"]) == (31, 422) and "truncated" in error["error"]


def test_webhooks_are_acknowledged_and_counted(backend):
    client, _ = backend
    reply = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 3}})
    assert reply.status_code == 200
    metrics = parse_metrics(client.get("/metrics").data.decode())
    assert metrics['al_backend_webhooks_total{action="ANNOTATION_CREATED"}'] >= 1


def test_training_without_label_studio_is_refused_at_once(root):
    app, _ = make_app(root, workspace="ws-train")
    client = app.test_client()
    trainer = app.extensions["al_backend"]["trainer"]
    reply = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 99}})
    assert reply.status_code == 503 and "Label Studio's address" in reply.json["error"]
    assert not trainer.state.running and trainer.state.runs == trainer.state.failures == 0
    assert client.post("/train", json={"project": "x.y"}).status_code == 400  # no project id at all
    assert client.get("/health").status_code == 200


def test_basic_auth(root):
    app, _ = make_app(root, basic_auth_user="lab", basic_auth_pass="s3cret-pass")
    client = app.test_client()
    assert client.get("/health").status_code == 401
    assert client.post("/predict", json={}).status_code == 401
    wrong = client.get("/health", auth=("lab", "nope"))
    assert wrong.status_code == 401 and "basic auth" in wrong.json["error"]
    assert client.get("/health", auth=("nobody", "s3cret-pass")).status_code == 401
    assert client.get("/health", auth=("lab:s3cret", "pass")).status_code == 401  # no way to shift the split
    assert client.get("/health", auth=("lab", "s3cret-pass")).status_code == 200


def test_a_new_tile_requested_by_many_threads_is_encoded_once(root, tmp_path):
    # 9 request threads leave 8 prediction slots (one thread stays free for /health).
    app, service = make_app(root, workspace="ws-threads", cache_dir=str(tmp_path / "fresh-cache"), threads=9)
    replies = []

    def ask():
        replies.append(interactive(app.test_client(), box_context(), image="tile-003.png").status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies == [200] * 8
    assert service.cache.stats.encodes == 1
    metrics = parse_metrics(app.test_client().get("/metrics").data.decode())
    assert metrics["al_backend_encoder_passes_total"] == 1


def test_http_image_urls_and_no_token_to_other_hosts(root):
    import http.server
    import socketserver
    from functools import partial

    seen_headers = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            seen_headers.append(dict(self.headers))
            super().do_GET()

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), partial(Handler, directory=str(root / "tiles")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app, _ = make_app(root, workspace="ws-http", label_studio_url="http://127.0.0.1:1", label_studio_api_key="ls-token-123")
        url = f"http://127.0.0.1:{server.server_address[1]}/tile-001.png"
        reply = interactive(app.test_client(), box_context(), image=url)
        assert reply.status_code == 200 and reply.json["results"][0]["result"]
        assert seen_headers and all("Authorization" not in h for h in seen_headers)
        missing = interactive(app.test_client(), box_context(), image=url.replace("tile-001", "gone"))
        assert missing.status_code == 404
    finally:
        server.shutdown()


@pytest.mark.parametrize("rotation", ["abc", float("nan"), float("inf"), [30]])
def test_a_rotation_that_is_no_number_is_refused_not_a_whole_tile_mask(backend, rotation):
    client, _ = backend
    context = box_context()
    context["result"][0]["value"]["rotation"] = rotation
    reply = interactive(client, context)
    assert reply.status_code == 422
    assert "rotation" in reply.json["error"] and "finite number" in reply.json["error"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("user, password", [("lab", None), (None, "s3cret-pass")])
def test_half_configured_basic_auth_refuses_to_start(root, user, password, monkeypatch):
    from al_loop.errors import UsageError

    monkeypatch.delenv("BASIC_AUTH_USER", raising=False)
    monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
    with pytest.raises(UsageError, match="half-configured"):
        BackendSettings.resolve(model="tiny", basic_auth_user=user, basic_auth_pass=password)


def test_without_sam_weights_a_box_gives_its_inscribed_ellipse_and_says_so(root, tmp_path, monkeypatch):
    """No random masks, ever: a backend whose SAM has no weights here answers a box with the box
    proxy (the same ellipse next-batch trains on), names it, and refuses point prompts."""
    from al_loop.training.masks import box_mask

    monkeypatch.setenv("AL_LOOP_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    app, service = make_app(root, model="vit_b", workspace="ws-proxy")
    client = app.test_client()
    health = client.get("/health").json
    assert health["sam"] == "box-ellipse" and "no SAM weights for vit_b" in health["note"]
    reply = interactive(client, box_context())
    assert reply.status_code == 200
    (region,) = reply.json["results"][0]["result"]
    assert reply.json["results"][0]["model_version"] == "box-ellipse"
    x0, y0, x1, y1 = 0.20 * SIZE, 0.25 * SIZE, 0.50 * SIZE, 0.60 * SIZE
    assert np.array_equal(brush_to_mask(region), box_mask(np.array([[x0, y0, x1, y1]]), (SIZE, SIZE)))
    pointed = interactive(client, box_context(points=[(30.0, 40.0, True)]))
    assert pointed.status_code == 422 and "point prompts need SAM" in pointed.json["error"]
    assert not list((root / "cache").rglob("sam-vit_b*")), "nothing was encoded by a SAM"


def test_a_team_workspace_is_not_trained_on_one_experts_answer(root):
    """With annotators 2, START_TRAINING would train on the newest answer: one expert's, picked at
    random; next-batch trains on the consensus, so the backend leaves the training alone."""
    app, service = make_app(root, workspace="ws-team", annotators=2)
    trainer = app.extensions["al_backend"]["trainer"]
    assert trainer.train_once("7") == (None, 0)
    assert not service.store.versions()
