"""The real server (gunicorn, `al-loop serve-backend --model tiny`) under slow peers, broken
connections and kill -9 (issue 15). In-process cases are in test_backend_hostile.py."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from al_loop.demo.servers import BackendServer
from al_loop.embeddings.cache import EmbeddingCache, entry_problem
from al_loop.models.sam import sam_id
from al_loop.studio.label_config import default_label_config

from .conftest import serving, write_tiles

CONFIG = default_label_config()
DEADLINE = 3.0
SAM_ID = sam_id("tiny")


class Trickle(http.server.BaseHTTPRequestHandler):
    """Sends a PNG one byte every 0.5 s: no single read waits long, the whole download would take minutes."""

    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for byte in self.body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def box_prompt(image: str) -> dict:
    region = {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
              "value": {"x": 20, "y": 20, "width": 40, "height": 40, "rotation": 0, "rectanglelabels": ["pit"]}}
    return {"tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG,
            "params": {"context": {"result": [region]}}}


def start_backend(root: Path, threads: int = 2) -> BackendServer:
    return BackendServer(
        root / "ws", root / "cache", local_root=root / "tiles",
        extra_env={"AL_LOOP_BACKEND_THREADS": str(threads), "AL_LOOP_DOWNLOAD_DEADLINE": str(DEADLINE)},
    ).start()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    write_tiles(root / "tiles", 6, size=900)
    return root


@pytest.fixture(scope="module")
def backend(root):
    server = start_backend(root)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trickle(root):
    Trickle.body = (root / "tiles" / "tile-000.png").read_bytes()
    with serving(Trickle) as url:
        yield f"{url}/tile.png"


def test_a_trickling_image_host_ends_at_the_deadline_and_health_never_waits(backend, trickle):
    replies, health_seconds = [], []

    def slow_request():
        started = time.monotonic()
        reply = requests.post(f"{backend.url}/predict", json=box_prompt(trickle), timeout=60)
        replies.append((reply.status_code, reply.json(), time.monotonic() - started))

    slow = [threading.Thread(target=slow_request) for _ in range(2)]  # as many as the server has threads
    for thread in slow:
        thread.start()
    while any(t.is_alive() for t in slow):
        started = time.monotonic()
        assert requests.get(f"{backend.url}/health", timeout=5).status_code == 200
        health_seconds.append(time.monotonic() - started)
        time.sleep(0.2)
    statuses = sorted(status for status, _, _ in replies)
    # One prediction slot on a 2-thread server: one request waits out the deadline, the other is told to come back.
    assert statuses == [503, 504], replies
    for status, body, seconds in replies:
        assert seconds < DEADLINE + 2
        assert ("did not finish within" if status == 504 else "busy") in body["error"]
    assert len(health_seconds) >= 5 and max(health_seconds) < 1.0, health_seconds


def _raw_exchange(url: str, head: bytes, body: bytes, close_write: bool) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + body)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and close_write is False:
                break
    return b"".join(chunks)


def test_a_body_cut_short_is_a_400(backend):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    answer = _raw_exchange(backend.url, head, b'{"tasks": [', close_write=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"could not be read" in answer or b"malformed JSON" in answer
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 200


def test_a_body_over_the_limit_is_a_413_before_it_is_read(backend):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n"
    answer = _raw_exchange(backend.url, head, b'{"tasks": [' + b" " * 65536, close_write=False)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 200


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode_and_kill(server: BackendServer, cache: EmbeddingCache, tiles: list[Path]) -> Path:
    """Ask for new tiles until a kill -9 lands while the encoder runs; the tile it hit."""
    log = server.workspace / "backend.log"
    for tile in tiles:
        seen = log.read_text().count("encoding new tile")
        threading.Thread(target=_quietly_post, args=(server.url, box_prompt(tile.name)), daemon=True).start()
        deadline = time.monotonic() + 30
        while log.read_text().count("encoding new tile") == seen and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(server.process.popen.pid, signal.SIGKILL)
        server.process.popen.wait(10)
        if not cache.contains(_sha(tile), SAM_ID):
            return tile
        server.start()
    pytest.fail("every kill came after the encoder pass had finished")


def _quietly_post(url: str, body: dict) -> None:
    with contextlib.suppress(requests.RequestException):  # the server is being killed
        requests.post(f"{url}/predict", json=body, timeout=60)


def _predict(server: BackendServer, tile: Path) -> requests.Response:
    return requests.post(f"{server.url}/predict", json=box_prompt(tile.name), timeout=60)


def test_kill_9_during_an_encoder_pass_leaves_a_cache_that_heals(tmp_path):
    tiles = write_tiles(tmp_path / "tiles", 5, size=2000)
    cache = EmbeddingCache(tmp_path / "cache")
    server = start_backend(tmp_path)
    try:
        good = tiles[0]
        assert _predict(server, good).status_code == 200
        hit = _encode_and_kill(server, cache, tiles[1:])
        # What an unlucky lab's disk adds: a write cut short (its temporary file) and a truncated entry.
        entry = cache.path(_sha(good), SAM_ID)
        (entry.parent / f"{entry.stem}.k9x2ab.tmp").write_bytes(entry.read_bytes()[:1000])
        entry.write_bytes(entry.read_bytes()[:5000])
        server.start()
        assert not list((tmp_path / "cache").rglob("*.tmp")), "stale temporary files must be cleaned at start"
        for tile in (hit, good):
            reply = _predict(server, tile)
            assert reply.status_code == 200 and reply.json()["results"][0]["result"], reply.text[:300]
        entries = list((tmp_path / "cache").rglob("*.npy"))
        assert len(entries) >= 2 and all(entry_problem(p) is None for p in entries)
        assert not [p for p in (tmp_path / "cache").rglob("*.lock") if p.parent.name != ".locks"]
        assert "removed, it will be encoded again" in (server.workspace / "backend.log").read_text()
    finally:
        server.stop()
