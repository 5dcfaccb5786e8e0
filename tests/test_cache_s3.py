"""The embedding cache on a real S3 API: moto's standalone server on loopback, reached by s3fs the way
a site's S3-compatible store is, configured only by the standard AWS environment variables.

Every assertion about what is stored looks into the bucket with boto3, not through the cache. A small
WSGI wrapper around moto's server logs each request's kind (HEAD, GET, PUT, DELETE, LIST), which is
how the no-LIST promise is checked."""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import re
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[test]'): no S3 cache tests")
pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]'): no S3 cache tests")

from moto.server import ThreadedMotoServer  # noqa: E402

from al_loop.embeddings.cache import EmbeddingCache, entry_key, entry_problem  # noqa: E402

from .conftest import write_tiles  # noqa: E402

pytestmark = pytest.mark.timeout(120)  # a hung server or a stuck worker fails the test, not the CI job

BUCKET = "embeddings"
SHAPE = (8, 4, 4)


class RequestLog:
    """WSGI middleware in front of moto's app: records (kind, key) for every request."""

    def __init__(self, app):
        self.app, self.requests, self._lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        bucket_only = path.strip("/").count("/") == 0  # path-style addressing: /bucket or /bucket/key
        kind = "LIST" if method == "GET" and bucket_only else method
        with self._lock:
            self.requests.append((kind, path))
        return self.app(environ, start_response)

    def kinds(self) -> Counter:
        with self._lock:
            return Counter(kind for kind, _ in self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(base URL s3://bucket, boto3 client, request log) of a moto server on loopback, with the
    standard AWS environment pointing at it for this module."""
    import boto3
    from s3fs import S3FileSystem

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    try:
        requests = RequestLog(server._server.app)  # werkzeug's server looks its app up on every request
        server._server.app = requests
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(tmp_path_factory.mktemp("aws") / "none"))  # no ~/.aws on the way
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        S3FileSystem.clear_instance_cache()  # an instance cached earlier would still talk to its old endpoint
        client = boto3.client("s3")  # configured by the environment alone, as the cache is
        client.create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}", client, requests
    finally:
        S3FileSystem.clear_instance_cache()
        patch.undo()
        server.stop()


def bucket_keys(client, prefix: str) -> list[str]:
    """What really is in the bucket below ``prefix`` (boto3, not the code under test)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def object_bytes(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def embedding_of(sha: str) -> np.ndarray:
    return np.random.default_rng(int(sha[:8], 16)).standard_normal(SHAPE).astype(np.float32)


def test_put_then_get_stores_float16_under_the_two_level_key(s3):
    base, client, _ = s3
    url, sha, encoder = f"{base}/round-trip", "ab" + "cd" + "1" * 60, "enc-test"
    cache = EmbeddingCache(url)
    expected = embedding_of(sha)

    first = cache.get_or_compute(sha, encoder, lambda: expected)
    key = f"round-trip/{entry_key(sha, encoder)}"
    assert re.fullmatch(rf"round-trip/enc-test/v\d+/ab/cd/{sha}\.npy", key)
    assert bucket_keys(client, "round-trip/") == [key]
    stored = object_bytes(client, key)
    assert entry_problem(stored) is None
    assert np.load(io.BytesIO(stored)).dtype == np.float16
    np.testing.assert_array_equal(first, expected.astype(np.float16))

    assert cache.contains(sha, encoder)
    np.testing.assert_array_equal(cache.load(sha, encoder), expected.astype(np.float16))
    again = cache.get_or_compute(sha, encoder, lambda: pytest.fail("a cached tile was encoded again"))
    np.testing.assert_array_equal(again, expected.astype(np.float16))
    assert (cache.stats.encodes, cache.stats.misses, cache.stats.hits) == (1, 1, 1)
    assert not cache.contains("ef" * 32, encoder)


RACE_SECONDS = 1.5  # one encoder pass; every process asks within it, so each one misses and encodes


def _race(url, sha, encoder, barrier, threads) -> tuple[list[bool], int]:
    """``threads`` threads of this process ask for the same missing tile the moment ``barrier`` lets
    them go: (did each get the right array, how many encoder passes this process ran)."""
    cache = EmbeddingCache(url)
    cache.contains("00" * 32, encoder)  # connect first, so that the race starts at the barrier
    expected = embedding_of(sha).astype(np.float16)
    outcomes = []

    def compute():
        time.sleep(RACE_SECONDS)
        return embedding_of(sha)

    def ask():
        barrier.wait(timeout=120)
        outcomes.append(bool(np.array_equal(cache.get_or_compute(sha, encoder, compute), expected)))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return outcomes, cache.stats.encodes


def _race_process(url, sha, encoder, barrier, results):
    results.put(_race(url, sha, encoder, barrier, 3))


@pytest.mark.timeout(240)  # two spawned interpreters import torch (via al_loop.models.geometry) first
def test_racing_threads_and_processes_leave_one_valid_entry(s3):
    base, client, requests = s3
    url, sha, encoder = f"{base}/race", "5a" * 32, "enc-test"
    key = f"race/{entry_key(sha, encoder)}"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3 + 3 + 4), ctx.Queue()  # two processes of 3 threads, and 4 threads here
    workers = [ctx.Process(target=_race_process, args=(url, sha, encoder, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        here = _race(url, sha, encoder, barrier, 4)
        remote = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.exitcode is None:
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]

    for outcomes, encodes in [here, *remote]:
        assert outcomes == [True] * len(outcomes)  # every caller got the tile's embedding
        assert encodes <= 1  # threads of one process encode a tile once
    puts = sum(1 for kind, path in requests.requests if kind == "PUT" and path.endswith(key))
    assert sum(encodes for _, encodes in [here, *remote]) == puts >= 2  # the processes really raced
    assert bucket_keys(client, "race/") == [key]  # the last PUT won; nothing else is left behind
    stored = object_bytes(client, key)
    assert entry_problem(stored) is None
    np.testing.assert_array_equal(np.load(io.BytesIO(stored)), embedding_of(sha).astype(np.float16))


def test_a_damaged_object_is_removed_and_encoded_again(s3):
    base, client, _ = s3
    url, sha, encoder = f"{base}/damaged", "d0" * 32, "enc-test"
    cache = EmbeddingCache(url)
    cache.put(sha, encoder, embedding_of(sha))
    key = f"damaged/{entry_key(sha, encoder)}"
    whole = object_bytes(client, key)
    client.put_object(Bucket=BUCKET, Key=key, Body=whole[: len(whole) // 2])  # a copy cut short
    assert entry_problem(object_bytes(client, key)) is not None

    value = cache.get_or_compute(sha, encoder, lambda: embedding_of(sha))
    np.testing.assert_array_equal(value, embedding_of(sha).astype(np.float16))
    assert (cache.stats.repairs, cache.stats.encodes) == (1, 1)
    assert bucket_keys(client, "damaged/") == [key]
    assert object_bytes(client, key) == whole


def test_embed_resumes_on_s3_with_heads_and_no_list(s3, tmp_path, capsys):
    from al_loop.cli import main
    from al_loop.models.encoders import encoder_id

    base, client, requests = s3
    url = f"{base}/embed/run"
    tiles = write_tiles(tmp_path / "tiles", 6, size=64)

    def embed(*sources) -> str:
        capsys.readouterr()
        requests.clear()
        assert main(["embed", *map(str, sources), "--encoder", "filterbank", "--cache-dir", url, "--quiet"]) == 0
        return capsys.readouterr().out

    # A run cut short after three tiles, then the whole folder again: only the rest is encoded.
    assert "3 encoded, 0 already cached" in embed(*tiles[:3])
    assert "3 encoded, 3 already cached" in embed(tmp_path / "tiles")
    assert requests.kinds()["LIST"] == 0, requests.requests  # misses too are found by HEAD/GET alone
    assert requests.kinds()["PUT"] == 3
    prefix = f"embed/run/{encoder_id('filterbank')}/"
    keys = bucket_keys(client, prefix)
    two_levels = re.compile(re.escape(prefix) + r"v\d+/([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{60}\.npy")
    assert len(keys) == 6 and all(two_levels.fullmatch(k) for k in keys)
    assert all(entry_problem(object_bytes(client, k)) is None for k in keys)

    # Everything cached: one HEAD per tile and nothing else; no listing, no write, no download.
    assert "0 encoded, 6 already cached" in embed(tmp_path / "tiles")
    assert requests.kinds() == Counter({"HEAD": 6}), requests.requests


SIZE = 240


def box_prompt() -> dict:
    """An interactive request: a box drawn on tile-000.png in Label Studio (as in test_backend.py)."""
    from al_loop.studio.label_config import default_label_config

    box = {
        "original_width": SIZE, "original_height": SIZE, "image_rotation": 0, "type": "rectanglelabels",
        "from_name": "box", "to_name": "image",
        "value": {"x": 20.0, "y": 25.0, "width": 30.0, "height": 35.0, "rotation": 0, "rectanglelabels": ["pit"]},
    }
    return {"tasks": [{"id": 1, "data": {"image": "tile-000.png"}}], "label_config": default_label_config(),
            "params": {"context": {"result": [box]}}}


def test_the_backend_answers_from_the_s3_cache(s3, tmp_path):
    from ml_backend.app import create_app
    from ml_backend.service import SegmentationService
    from ml_backend.settings import BackendSettings

    base, client, _ = s3
    write_tiles(tmp_path / "tiles", 1, size=SIZE)
    settings = BackendSettings.resolve(model="tiny", cache_dir=f"{base}/backend", local_root=str(tmp_path / "tiles"),
                                       workspace=str(tmp_path / "ws"))
    service = SegmentationService(settings)
    app = create_app(service).test_client()
    encoder = service.sam_encoder.id
    assert encoder.startswith("sam-tiny")

    reply = app.post("/predict", json=box_prompt())
    assert reply.status_code == 200, reply.json
    (prediction,) = reply.json["results"]
    (region,) = prediction["result"]
    assert region["type"] == "brushlabels" and region["value"]["rle"]
    sha = hashlib.sha256((tmp_path / "tiles" / "tile-000.png").read_bytes()).hexdigest()
    keys = bucket_keys(client, f"backend/{encoder}/")
    assert keys == [f"backend/{entry_key(sha, encoder)}"]
    assert entry_problem(object_bytes(client, keys[0])) is None
    assert (service.cache.stats.encodes, service.cache.stats.hits) == (1, 0)

    again = app.post("/predict", json=box_prompt())
    assert again.status_code == 200
    assert again.json["results"][0]["result"][0]["value"] == region["value"]  # the same mask
    assert (service.cache.stats.encodes, service.cache.stats.hits) == (1, 1)
    assert bucket_keys(client, f"backend/{encoder}/") == keys
