"""The backend under hostile and broken input (issue 15), in-process on the real Flask app
with the tiny SAM, and a real local HTTP server for image hosts that misbehave.

A bad task rides in a batch between two good ones: each case asserts the bad task's
status and message, that both good tasks still got their masks, and that /health
answers 200 afterwards. Whole-request cases assert the status and a useful message.
"""
from __future__ import annotations

import http.server
import json
import os
import time

import pytest
from PIL import Image

from al_loop.studio.label_config import default_label_config
from ml_backend.app import create_app
from ml_backend.service import SegmentationService
from ml_backend.settings import BackendSettings

from .conftest import serving, write_tiles

CONFIG = default_label_config()
SIZE = 240
DEADLINE = 2.0  # download deadline of the app under test, seconds


class ImageHost(http.server.BaseHTTPRequestHandler):
    """An image host with one misbehaviour per path; ``tile`` is a good PNG."""

    tile = b""
    seen: list[tuple[str, str | None]] = []  # (path, Authorization header) of every GET

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.endswith("/tile.png"):
            return self._send(200, self.tile, "image/png")
        if self.path == "/slow.png":
            return self._trickle()
        codes = {"/auth.png": 401, "/forbidden.png": 403, "/gone.png": 404, "/broken.png": 500}
        self._send(codes.get(self.path, 404), b"no", "text/plain")

    def do_POST(self):  # a "Label Studio" whose token refresh answers HTML
        self._send(200, b"<html>login</html>", "text/html")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.tile)))
        self.end_headers()
        try:
            for byte in self.tile[:200]:  # one byte every 0.3 s: each read is quick, the whole is not
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass  # the backend gave up and closed the connection, as it should

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    tiles = root / "tiles"
    write_tiles(tiles, 2, size=SIZE)
    good = (tiles / "tile-000.png").read_bytes()
    (tiles / "empty.png").write_bytes(b"")
    (tiles / "notes.png").write_text("field notes, not an image")
    (tiles / "truncated.png").write_bytes(good[: len(good) // 3])
    Image.new("L", (1, 1)).save(tiles / "one.png")
    Image.new("L", (3, 3)).save(tiles / "three.png")
    Image.new("1", (64000, 1)).save(tiles / "strip.png")
    Image.new("1", (7999, 7999)).save(tiles / "bomb.png")  # ~200 KiB of PNG, 64 Mpx decoded
    os.symlink(tiles / "loop-b.png", tiles / "loop-a.png")
    os.symlink(tiles / "loop-a.png", tiles / "loop-b.png")
    (root / "secret.png").write_bytes(good)
    return root


@pytest.fixture(scope="module")
def host(root):
    ImageHost.tile = (root / "tiles" / "tile-000.png").read_bytes()
    with serving(ImageHost) as url:
        yield url


@pytest.fixture(scope="module")
def client(root):
    settings = BackendSettings.resolve(
        model="tiny", cache_dir=str(root / "cache"), local_root=str(root / "tiles"), workspace=str(root / "ws"),
        download_deadline=DEADLINE, max_body_mb=3,
    )
    return create_app(SegmentationService(settings)).test_client()


def box(x=20.0, y=25.0, w=30.0, h=35.0, label="pit", **value) -> dict:
    return {
        "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": SIZE, "original_height": SIZE,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label], **value},
    }


def task(ident=2, image="tile-001.png", **fields) -> dict:
    return {"id": ident, "data": {"image": image}, "annotations": [{"id": 1, "result": [box()]}], **fields}


def with_box(**value) -> dict:
    return task(annotations=[{"id": 1, "result": [box(**value)]}])


def with_value(value) -> dict:
    bad = box()
    bad["value"] = value
    return task(annotations=[{"id": 1, "result": [bad]}])


# The bad task of a batch -> (status, words of its error). ``host`` in an image is the image host's URL.
BAD_TASKS = {
    "annotations as a string": (task(annotations="pit here"), 422, "'annotations' must be a list of objects"),
    "annotations as numbers": (task(annotations=[1, 2, 3]), 422, "'annotations' must be a list of objects"),
    "predictions as an object": (task(annotations=[], predictions={"result": []}), 422, "'predictions' must be a list"),
    "result as a string": (task(annotations=[{"id": 1, "result": "box"}]), 422, "must hold a 'result' list"),
    "value as a list": (with_value([20, 25, 30, 35]), 422, "'value' must be an object, not list"),
    "value missing": (with_value(None), 422, "'value' must be an object"),
    "rotation as text": (with_box(rotation="abc"), 422, "'rotation' must be a finite number"),
    "rotation infinite": (with_box(rotation=float("inf")), 422, "'rotation' must be a finite number"),
    "rotation NaN": (with_box(rotation=float("nan")), 422, "'rotation' must be a finite number"),
    "x as text": (with_box(x="20"), 422, "'x' must be a finite number"),
    "zero width": (with_box(w=0), 422, "zero or negative size"),
    "box outside": (with_box(x=150), 422, "lies outside the image"),
    "no label": (task(annotations=[{"id": 1, "result": [dict(box(), value={**box()["value"], "rectanglelabels": []})]}]),
                 422, "carries no label"),
    "unknown label": (with_box(label="volcano"), 422, "'volcano' is not a brush label"),
    "too many boxes": (task(annotations=[{"id": 1, "result": [box()] * 101}]), 422, "holds 101 regions; the limit is 100"),
    "task a number": (7, 400, "a task must be an object, not int"),
    "no data": ({"id": 2}, 400, "no 'data' object"),
    "image a number": (task(image=42), 400, "no image URL under 'image'"),
    "NUL in path": (task(image="tile-001.png\0.png"), 400, "NUL character"),
    "NUL in local-files": (task(image="/data/local-files/?d=tile-001%00.png"), 400, "embedded null byte"),
    "symlink loop": (task(image="loop-a.png"), 400, "cannot be used"),
    "name too long": (task(image="a" * 300 + ".png"), 400, "file name too long"),
    "path traversal": (task(image="../secret.png"), 403, "escapes the allowed local root"),
    "file URL outside": (task(image="file:///etc/passwd"), 403, "escapes the allowed local root"),
    "upload traversal to the API": (task(image="/data/upload/../../api/projects"), 400, "not a Label Studio media URL"),
    "ftp URL": (task(image="ftp://example.org/a.png"), 400, "unsupported image URL scheme 'ftp'"),
    "port no number": (task(image="http://127.0.0.1:port/a.png"), 400, "is malformed"),
    "missing file": (task(image="nowhere.png"), 404, "image not found"),
    "not an image": (task(image="notes.png"), 422, "not an image Pillow can read"),
    "empty file": (task(image="empty.png"), 422, "the file is empty"),
    "truncated": (task(image="truncated.png"), 422, "corrupt or truncated"),
    "1x1 image": (task(image="one.png"), 422, "1x1 pixels is too small to segment"),
    "3x3 image": (task(image="three.png"), 422, "3x3 pixels is too small"),
    "64000x1 image": (task(image="strip.png"), 422, "64000x1 pixels is too small"),
    "decompression bomb": (task(image="bomb.png"), 413, "AL_LOOP_MAX_IMAGE_PIXELS"),
    "image host wants credentials": (task(image="host/auth.png"), 502, "the image host refused"),
    "image host forbids": (task(image="host/forbidden.png"), 502, "needs credentials"),
    "image host 404": (task(image="host/gone.png"), 404, "image not found"),
    "image host 500": (task(image="host/broken.png"), 502, "failed with HTTP 500"),
    "image host trickles": (task(image="host/slow.png"), 504, f"did not finish within {DEADLINE:g} s"),
    "image host down": (task(image="http://127.0.0.1:9/a.png"), 502, "unreachable"),
    "Label Studio URL, no Label Studio": (task(image="/data/upload/1/a.png"), 503, "does not know Label Studio's address"),
}


def _resolved(value, host):
    text = json.dumps(value).replace('"host/', f'"{host}/')
    return json.loads(text)


def _has_mask(predictions: list[dict]) -> bool:
    return bool(predictions) and bool(predictions[0]["result"])


@pytest.mark.parametrize("case", list(BAD_TASKS))
def test_a_bad_task_gets_its_own_error_and_spoils_nothing(client, host, case):
    bad, status, words = BAD_TASKS[case]
    tasks = [task(ident=1, image="tile-000.png"), _resolved(bad, host), task(ident=3, image="tile-001.png")]
    started = time.monotonic()
    reply = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
    assert reply.status_code == 200, reply.json
    assert time.monotonic() - started < DEADLINE + 15
    results, errors = reply.json["results"], reply.json["errors"]
    assert _has_mask(results[0]) and _has_mask(results[2]), "the good tasks must keep their masks"
    assert results[1] == [] and len(errors) == 1
    (error,) = errors
    assert error["status"] == status and words in error["error"], error
    assert error["task"] == (bad.get("id") if isinstance(bad, dict) else None)
    assert client.get("/health").status_code == 200


def test_ids_of_mixed_types_are_no_error(client):
    mixed = task(annotations=[{"id": "a7", "result": [box(x=5)]}, {"id": 3, "result": [box()]}, {"id": None, "result": []}],
                 predictions=[{"id": "p", "result": [box()]}, {"id": 2.5, "result": []}])
    reply = client.post("/predict", json={"tasks": [mixed], "label_config": CONFIG})
    assert reply.status_code == 200 and reply.json["errors"] == []
    assert _has_mask(reply.json["results"][0])


# Whole requests: (route, body as JSON-able or raw bytes) -> (status, words)
NESTED = b"[" * 100_000 + b"]" * 100_000
BOMB = (  # a billion laughs: 10**9 "lol"s once expanded
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    + ']><View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">'
    '<Label value="&lol9;"/></BrushLabels></View>'
)
NO_LABEL = '<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image"/></View>'
PROMPT = {"tasks": [{"id": 1, "data": {"image": "tile-000.png"}}], "label_config": CONFIG}


def prompt(*results) -> dict:
    return {**PROMPT, "params": {"context": {"result": list(results)}}}


def keypoint(x=40.0, y=40.0) -> dict:
    return {"type": "keypointlabels", "from_name": "point", "to_name": "image", "is_positive": True,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["pit"]}}


BAD_REQUESTS = {
    "malformed JSON": ("/predict", b"{tasks:", 400, "malformed JSON"),
    "body not an object": ("/predict", [1, 2], 400, "must be a JSON object"),
    "deeply nested JSON": ("/predict", NESTED, 400, "nested too deeply"),
    "not UTF-8": ("/predict", b'{"tasks": "\xff\xfe"}', 400, "malformed JSON"),
    "no tasks": ("/predict", {"label_config": CONFIG}, 400, "no 'tasks' list"),
    "tasks empty": ("/predict", {"tasks": [], "label_config": CONFIG}, 400, "no 'tasks' list"),
    "config a number": ("/predict", {"tasks": [task()], "label_config": 5}, 422, "must be XML text, not int"),
    "config not XML": ("/predict", {"tasks": [task()], "label_config": "<View"}, 422, "not valid XML"),
    "BrushLabels without Label": ("/predict", {"tasks": [task()], "label_config": NO_LABEL}, 422, "has no <Label"),
    "XML bomb": ("/predict", {"tasks": [task()], "label_config": BOMB}, 422, "declares a DTD or entities"),
    "body over the limit": ("/predict", b'{"tasks": ["' + b"x" * (1 << 22) + b'"]}', 413, "AL_LOOP_MAX_BODY_MB"),
    "8000 keypoints": ("/predict", prompt(*[keypoint()] * 8000), 422, "holds 8000 regions; the limit is 100"),
    "prompt rotation NaN": ("/predict", prompt(box(rotation=float("nan"))), 422, "finite number"),
    "prompt value a list": ("/predict", prompt({**box(), "value": [1, 2]}), 422, "'value' must be an object"),
    "prompt on a bad image": ("/predict", {**prompt(box()), "tasks": [task(image="one.png")]}, 422, "too small"),
    "prompt without a task object": ("/predict", {**prompt(box()), "tasks": ["tile"]}, 400, "a task must be an object"),
    "webhook action a list": ("/webhook", {"action": ["START_TRAINING"]}, 400, "unknown webhook action"),
    "webhook action an object": ("/webhook", {"action": {"a": 1}}, 400, "unknown webhook action"),
    "webhook no action": ("/webhook", {}, 400, "unknown webhook action"),
    "training without a project id": ("/webhook", {"action": "START_TRAINING", "project": "abc"}, 400, "names no project id"),
    "training of a project nobody can reach": ("/train", {"project": 12}, 503, "Label Studio's address"),
    "setup token a list": ("/setup", {"project": 1, "access_token": ["t"]}, 400, "must be strings"),
    "setup schema garbage": ("/setup", {"project": 1, "schema": "<<<"}, 422, "not valid XML"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_a_reason(client, case):
    route, body, status, words = BAD_REQUESTS[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = client.post(route, data=raw, content_type="application/json")
    assert reply.status_code == status, reply.get_data(as_text=True)[:300]
    assert words in reply.json["error"]
    assert client.get("/health").status_code == 200


def test_wrong_methods_and_routes_answer_json(client):
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").json


def test_a_token_refresh_that_answers_html_is_blamed_on_the_address(root, host):
    settings = BackendSettings.resolve(model="tiny", cache_dir=str(root / "cache"), workspace=str(root / "ws-pat"))
    client = create_app(SegmentationService(settings)).test_client()
    assert client.post("/setup", json={"project": "7.123", "hostname": host, "access_token": "aa.bb.cc"}).status_code == 200
    reply = client.post("/predict", json={"project": "7.123", "tasks": [task(image="/data/upload/7/a.png")],
                                          "label_config": CONFIG})
    assert reply.status_code == 502
    assert "without an access token" in reply.json["error"] and "aa.bb.cc" not in reply.json["error"]


def test_the_token_goes_only_to_label_studio_media_routes(root, host):
    settings = BackendSettings.resolve(model="tiny", cache_dir=str(root / "cache"), workspace=str(root / "ws-media"))
    client = create_app(SegmentationService(settings)).test_client()
    token = "legacy-token-0123456789abcdef"
    assert client.post("/setup", json={"project": 8, "hostname": host, "access_token": token}).status_code == 200
    ImageHost.seen.clear()
    tasks = [
        task(ident=1, image="/data/upload/8/tile.png"),
        task(ident=2, image=f"{host}/data/upload/../../api/current-user/tile.png"),
        task(ident=3, image="/data/upload/%2e%2e/%2e%2e/api/projects"),
        task(ident=4, image=f"{host}/data/upload/8/tile.png"),
    ]
    reply = client.post("/predict", json={"project": 8, "tasks": tasks, "label_config": CONFIG})
    assert reply.status_code == 200
    assert _has_mask(reply.json["results"][0]) and _has_mask(reply.json["results"][3])
    assert _has_mask(reply.json["results"][1])  # fetched, as any web image is, but without the token
    (error,) = reply.json["errors"]
    assert error["task"] == 3 and error["status"] == 400 and "not a Label Studio media URL" in error["error"]
    by_path = dict(ImageHost.seen)
    assert by_path["/data/upload/8/tile.png"] == f"Token {token}"
    api_paths = [path for path in by_path if "/api/" in path]
    assert api_paths and all(by_path[path] is None for path in api_paths)
