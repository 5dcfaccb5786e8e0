"""`al-loop next-batch` against a real Label Studio behind a proxy that injects faults.

The proxy (a real HTTP server on loopback) answers 5xx in Label Studio's place, passes a
request on and then answers 5xx (Label Studio stored it), or passes it on and holds the
reply past the client's timeout. next-batch must retry what may be repeated, look in Label
Studio before repeating a create, and stop with a clear error when Label Studio keeps
failing; the checks read Label Studio directly, never through the proxy.

next-batch runs through the command line's entry point (``al_loop.cli.main``, what the
``al-loop`` script calls) in the test's process, so that the quicker retry policy of the
tests (short pauses, a 4 s timeout) can be set on :data:`al_loop.studio.client.RETRY`, and
so that each run does not pay for importing torch again.
"""
from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from al_loop.demo.expert import dataset_boxes
from al_loop.loop.workspace import Workspace
from al_loop.studio import client as studio_client
from al_loop.studio.client import view_task_ids

from .conftest import HIRISE, write_tiles
from .helpers import studio_env
from .test_loop_rounds import answer_round, client_for, expert_for, init, workspace_digest

TILES = 12
DELAYS = (0.05, 0.1, 0.2)  # four tries per call
TIMEOUT = 4.0  # the client's, in seconds
HOLD = TIMEOUT + 2.0  # a held reply comes this long after Label Studio answered


# -- the fault-injecting proxy --------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """What the proxy does with one request a rule catches."""

    status: int | None = None  # answer this status ...
    forward: bool = False  # ... after passing the request on (Label Studio applies it)
    hold: bool = False  # pass it on, and send the reply only after HOLD seconds (the client has given up)
    outage: bool = False  # from then on, answer 500 to every request


def refuse(status: int) -> Fault:
    return Fault(status=status)


def lands_then(status: int, outage: bool = False) -> Fault:
    return Fault(status=status, forward=True, outage=outage)


SLOW = Fault(forward=True, hold=True)


@dataclass
class FaultyStudio:
    """A proxy to Label Studio; ``rules[(method, path)]`` is the list of faults for the next
    requests to that path (query left out), one each, in order; the rest pass untouched."""

    target: str
    rules: dict[tuple[str, str], list[Fault]] = field(default_factory=dict)
    outage: bool = False
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what the proxy did)

    def __post_init__(self):
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.proxy = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fault_for(self, method: str, path: str) -> Fault | None:
        key = (method, path.split("?")[0].rstrip("/"))
        with self.lock:
            if self.outage:
                fault = refuse(500)
            else:
                queue = self.rules.get(key)
                fault = queue.pop(0) if queue else None
                self.outage = bool(fault and fault.outage)
            self.seen.append((method, key[1], _describe(fault)))
        return fault

    def pending(self) -> dict:
        """Faults not injected yet: a test whose faults never fired tested nothing."""
        return {k: v for k, v in self.rules.items() if v}

    def count(self, method: str, path: str) -> int:
        """Requests to ``path`` the proxy has seen, whatever it did with them."""
        return sum(1 for m, p, _ in self.seen if (m, p) == (method, path))

    def forward(self, method: str, path: str, headers, body: bytes | None) -> tuple[int, list, bytes]:
        target = urlsplit(self.target)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        keep = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            conn.request(method, path, body=body, headers=keep)
            reply = conn.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            conn.close()


# Not passed on: the proxy makes its own connection, sends whole bodies and asks for none compressed.
HOP_BY_HOP = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length",
              "accept-encoding", "te", "upgrade"}


def _describe(fault: Fault | None) -> str:
    if fault is None:
        return "passed"
    if fault.hold:
        return "held"
    return f"{'landed+' if fault.forward else ''}{fault.status}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        proxy: FaultyStudio = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fault = proxy.fault_for(self.command, self.path)
        status, headers, payload = 0, [], b""
        if fault is None or fault.forward:
            status, headers, payload = proxy.forward(self.command, self.path, self.headers, body)
        if fault is not None and fault.hold:
            time.sleep(HOLD)
        elif fault is not None:
            status, headers, payload = fault.status, [("Content-Type", "application/json")], b'{"detail": "injected"}'
        self._reply(status, headers, payload)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _reply(self, status: int, headers: list, payload: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a held reply: the client has gone
        self.close_connection = True

    def log_message(self, *args):
        pass


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiles(label_studio) -> tuple[Path, dict[str, np.ndarray]]:
    """The first tiles test_loop_rounds uses (their embeddings are shared through the cache), in a folder of their own."""
    folder = label_studio.document_root / "flaky-tiles"
    if (HIRISE / "data.yaml").is_file():
        boxes = dataset_boxes(HIRISE, ("valid",))
        names = sorted(boxes)[:TILES]
        folder.mkdir(parents=True)
        for name in names:
            shutil.copy(HIRISE / "valid" / "images" / name, folder / name)
        return folder, {n: boxes[n] for n in names}
    paths = write_tiles(folder, TILES, size=256, seed=200)
    boxes = {p.name: np.load(p.with_suffix(".boxes.npy")) for p in paths}
    for p in paths:
        p.with_suffix(".boxes.npy").unlink()
    return folder, boxes


@pytest.fixture
def proxy(label_studio):
    studio = FaultyStudio(label_studio.url)
    yield studio
    studio.close()


@dataclass
class Run:
    """What one next-batch run left: its exit code and its output."""

    code: int
    out: str
    err: str

    def json(self) -> dict:
        assert self.code == 0, f"next-batch exited {self.code}:\n{self.out}\n{self.err}"
        return json.loads(self.out)


@dataclass
class Loop:
    """A workspace whose config points at the proxy, its project, the expert who answers it, and
    ``next_batch()``: the command line's own entry point, run here with the quick retry policy."""

    ws: Path
    workspace: Workspace
    project: int
    expert: object
    capsys: pytest.CaptureFixture

    def next_batch(self) -> Run:
        from al_loop.cli import main

        code = main(["next-batch", "--workspace", str(self.ws), "--batch-size", "3", "--epochs", "15", "--quiet", "--json"])
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)


@pytest.fixture
def env(label_studio, shared_cache) -> dict:
    return studio_env(label_studio, shared_cache)


@pytest.fixture
def loop(label_studio, tiles, env, proxy, tmp_path, monkeypatch, capsys) -> Loop:
    folder, boxes = tiles
    workspace = init(label_studio, folder, tmp_path / "ws", env)
    config = tmp_path / "ws" / "config.yaml"
    config.write_text(config.read_text().replace(label_studio.url, proxy.url))
    for name in ("LABEL_STUDIO_API_KEY", "AL_LOOP_CACHE_DIR"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setattr(studio_client, "RETRY", studio_client.RetryPolicy(delays=DELAYS, timeout=TIMEOUT))
    return Loop(tmp_path / "ws", workspace, workspace.config().project, expert_for(label_studio, workspace, boxes), capsys)


def studio_state(label_studio, loop: Loop) -> dict:
    """Every prediction (by task) and tab of the project, read from Label Studio itself."""
    client = client_for(label_studio)
    tasks = [t["task_id"] for t in loop.workspace.tasks()]
    return {
        "predictions": {t: sorted((p.id, p.model_version) for p in client.predictions.list(task=t)) for t in tasks},
        "views": sorted((v.id, v.data["title"]) for v in client.views.list(project=loop.project)),
    }


def assert_round_pushed_once(label_studio, loop: Loop, number: int) -> list[int]:
    """The round is finished; each of its tasks holds one prediction of the round's version
    (round 0 has none), the one the workspace recorded; one tab holds exactly its tasks."""
    client = client_for(label_studio)
    rounds = {r["round"]: r for r in loop.workspace.rounds()}
    assert rounds[number]["finished_at"] is not None
    rows = loop.workspace.pushed(number)
    chosen = [r["task_id"] for r in rows]
    for row in rows if number else []:
        ids = [p.id for p in client.predictions.list(task=row["task_id"]) if p.model_version == f"round-{number}"]
        assert ids == [row["prediction_id"]], (row["task_id"], ids)
    titles = [v.data["title"] for v in client.views.list(project=loop.project)]
    assert titles.count(f"Round {number}") == 1, titles
    assert view_task_ids(client, label_studio.url, loop.project, rounds[number]["view_id"]) == sorted(chosen)
    return chosen


def assert_rerun_changes_nothing(label_studio, loop: Loop) -> None:
    before = studio_state(label_studio, loop), loop.workspace.rounds()
    out = loop.next_batch().json()
    assert out["status"] == "waiting", out
    assert (studio_state(label_studio, loop), loop.workspace.rounds()) == before


def assert_stops_cleanly(run: Run, *phrases: str) -> None:
    """Exit 2 with one line on stderr, the way the command line reports an error it knows, saying ``phrases``."""
    assert run.code == 2 and run.err.startswith("al-loop: error: ") and run.err.count("\n") == 1, run.err
    assert "Traceback" not in run.err
    assert [p for p in phrases if p not in run.err] == [], run.err


# -- the tests ------------------------------------------------------------------------------


def test_a_flaky_studio_gets_each_prediction_and_tab_once(label_studio, loop, proxy):
    # Round 0 (a tab, no predictions): every read fails once, the tab is stored but its reply is a 502.
    views, project = "/api/dm/views", f"/api/projects/{loop.project}"
    proxy.rules = {("GET", "/api/current-user/whoami"): [refuse(503)], ("GET", project): [refuse(502), refuse(429)],
                   ("GET", "/api/tasks"): [refuse(504)], ("GET", f"{project}/export"): [refuse(500)],
                   ("GET", views): [refuse(502)], ("POST", views): [lands_then(502)]}
    out = loop.next_batch().json()
    assert out["status"] == "pushed" and out["round"] == 0 and not proxy.pending()
    assert_round_pushed_once(label_studio, loop, 0)
    answer_round(loop.expert, loop.workspace, 0)

    # Round 1: the first task's prediction is refused twice, then stored with its reply held past the
    # timeout; the second's is stored and answered 500; a read, the tab's creation, the settings update fail too.
    proxy.rules = {("POST", "/api/predictions"): [refuse(503), refuse(503), SLOW, lands_then(500)],
                   ("GET", "/api/predictions"): [refuse(500)], ("PATCH", project): [refuse(503)],
                   ("GET", views): [refuse(502)], ("POST", views): [SLOW]}
    out = loop.next_batch().json()
    assert out["status"] == "pushed" and out["round"] == 1 and out["predictions"] == 3 and not proxy.pending()
    chosen = assert_round_pushed_once(label_studio, loop, 1)
    # Five POSTs for three predictions: the two refused ones were tried again, the two stored ones not.
    assert proxy.count("POST", "/api/predictions") == 5 and len(chosen) == 3
    assert proxy.count("POST", views) == 2  # one per round: the held one was found, not made again

    assert_rerun_changes_nothing(label_studio, loop)


def test_a_studio_that_keeps_failing_stops_cleanly_and_the_rerun_finishes(label_studio, loop, proxy):
    loop.next_batch().json()
    answer_round(loop.expert, loop.workspace, 0)
    before = workspace_digest(loop.ws)

    # Label Studio down from the start: a clear error, no traceback, nothing changed.
    proxy.outage = True
    run = loop.next_batch()
    assert_stops_cleanly(run, "kept failing while checking the token", "4 tries", "answered 500",
                         "run the same command again: `al-loop next-batch` resumes where it stopped and pushes nothing twice")
    assert workspace_digest(loop.ws) == before

    # Down mid-push, right after storing the first prediction: the round is planned, not finished.
    proxy.outage, proxy.seen = False, []
    proxy.rules = {("POST", "/api/predictions"): [lands_then(500, outage=True)]}
    run = loop.next_batch()
    assert_stops_cleanly(run, "kept failing while reading the predictions of task", "resumes where it stopped")
    assert sum(1 for *_, what in proxy.seen if what == "500") == len(DELAYS) + 1  # one read, four tries
    assert loop.workspace.unfinished_round()["round"] == 1

    # A refusal (4xx) is not retried: one POST for the tab, and the error names it.
    proxy.outage, proxy.seen = False, []
    proxy.rules = {("POST", "/api/dm/views"): [refuse(400)]}
    run = loop.next_batch()
    assert_stops_cleanly(run, "answered 400 while creating tab 'Round 1'")
    assert proxy.count("POST", "/api/dm/views") == 1 and proxy.count("POST", "/api/predictions") == 2

    # Label Studio answers again: the round is finished, the stored prediction found, nothing made twice.
    out = loop.next_batch().json()
    assert out["status"] == "pushed" and out["round"] == 1 and out["predictions"] == 3
    assert_round_pushed_once(label_studio, loop, 1)
    assert [r["round"] for r in loop.workspace.rounds()] == [0, 1]
    assert_rerun_changes_nothing(label_studio, loop)
