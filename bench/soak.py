"""Soak of the ML backend (issue 15): N clients x M minutes of mixed good and bad requests.

Starts a real `al-loop serve-backend --model tiny` (random weights: masks are meaningless,
the code paths are the real ones) with --threads request threads on 900x900 tiles (HiRISE's
valid split when ../shared/data/hirise-pits is present, else generated, as in
backend_latency.py), and a local HTTP server that trickles one tile over --trickle-seconds
(a slow peer). After a warm-up (one request of every kind but the slow peer), --clients
threads each loop for --minutes over a weighted mix of request kinds (MIX below: good box
prompts and batches, /health, /metrics, malformed JSON, a NaN rotation, missing, escaping
and non-image files, a 40 MiB body, 8000 keypoints, JSON nested 100000 deep, a batch of one
good and one bad task, the slow peer), while one more thread polls /health every 0.5 s.

Prints the CPU, the configuration and the backend's limits, then per kind: requests,
statuses seen, p50 / p99 / max latency; for batches with a bad task, whether the good task
still got its prediction; /health latency under load; the backend worker's RSS (VmRSS,
from /proc) after the warm-up, every --sample-every s and at the end, with its slope by
least squares (it must not grow with time); the exceptions in the backend's log.
4xx codes are reported, not judged. "Unexpected" (bugs) are any 5xx other than 502/503/504,
any client-side connection error, timeout (--timeout) or other requests error, and a
restarted or dead worker; the exit code is 1 when there was one, else 0.

    python bench/soak.py [--clients 4] [--minutes 2] [--threads 4] [--json soak.json]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.server
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backend_latency import CONFIG, metrics, tiles  # noqa: E402  (its import puts the repo on sys.path)
from map_product import cpu  # noqa: E402

from al_loop.demo.servers import BackendServer  # noqa: E402

# kind -> weight in each client's draw. slow_peer_image is further capped by --slow-peers in flight.
MIX = {
    "good_interactive_box": 10,
    "good_batch_boxes": 3,
    "good_health": 2,
    "good_metrics": 1,
    "bad_json": 1,
    "bad_rotation_nan": 1,
    "bad_missing_image": 1,
    "bad_path_traversal": 1,
    "bad_not_an_image": 1,
    "bad_huge_body": 1,
    "bad_many_keypoints": 1,
    "bad_nested_json": 1,
    "bad_mixed_batch": 2,
    "slow_peer_image": 1,
}
OK_5XX = {502, 503, 504}  # a backend may answer these for a peer or an overload; other 5xx are bugs
MIB = 2**20


def unexpected(status: int | str) -> bool:
    """A client-side error (a string: connection error, timeout) or a 5xx that is not 502/503/504."""
    return isinstance(status, str) or (status >= 500 and status not in OK_5XX)


# -- request bodies ------------------------------------------------------------------------------


def box_region(size: tuple[int, int], x: float, y: float, w: float, h: float, rotation: object = 0) -> dict:
    return {
        "original_width": size[0], "original_height": size[1], "image_rotation": 0, "type": "rectanglelabels",
        "from_name": "box", "to_name": "image",
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": ["pit"]},
    }


def keypoint_region(size: tuple[int, int], x: float, y: float, positive: bool) -> dict:
    return {
        "original_width": size[0], "original_height": size[1], "type": "keypointlabels", "from_name": "point",
        "to_name": "image", "is_positive": positive, "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["pit"]},
    }


def random_box(size: tuple[int, int], rng: np.random.Generator, **extra) -> dict:
    x, y = rng.uniform(5, 70, size=2)
    w, h = rng.uniform(5, 25, size=2)
    return box_region(size, float(x), float(y), float(w), float(h), **extra)


def interactive_body(image: str, regions: list[dict]) -> dict:
    return {"tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG, "params": {"context": {"result": regions}}}


def batch_task(task_id: int, image: str, boxes: list[dict]) -> dict:
    return {"id": task_id, "data": {"image": image}, "annotations": [], "predictions": [{"id": task_id, "result": boxes}]}


# -- the slow peer -------------------------------------------------------------------------------


class TrickleServer:
    """Serves one file at any path, a slice every 0.25 s so that the whole takes ``seconds``."""

    def __init__(self, data: bytes, seconds: float):
        self.data, self.seconds = data, seconds
        self.started = self.finished = self.abandoned = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.serve(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.started += 1
        steps = max(1, int(self.seconds / 0.25))
        chunk = max(1, math.ceil(len(self.data) / steps))
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(self.data)))
            handler.end_headers()
            for start in range(0, len(self.data), chunk):
                handler.wfile.write(self.data[start:start + chunk])
                handler.wfile.flush()
                time.sleep(0.25)
        except OSError:  # the backend hung up: its deadline, or it gave up
            with self.lock:
                self.abandoned += 1
            return
        with self.lock:
            self.finished += 1

    def __enter__(self) -> TrickleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the backend worker's memory -----------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in path.read_text().split()]
    if found:
        return found
    for stat in Path("/proc").glob("[0-9]*/stat"):  # kernels without .../children
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def worker_pid(master: int) -> int | None:
    """gunicorn's one worker: the master's child (the master itself if it has none)."""
    kids = children(master)
    return max(kids) if kids else (master if Path(f"/proc/{master}").exists() else None)


def proc_status(pid: int, key: str) -> float | None:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- the soak -----------------------------------------------------------------------------------


@dataclasses.dataclass
class KindStats:
    statuses: Counter = dataclasses.field(default_factory=Counter)
    latencies: list = dataclasses.field(default_factory=list)
    answered: int = 0  # batches: the good task(s) got a prediction; interactive: a 200 with a result
    masked: int = 0  # ... and it holds at least one region (random weights: not always)
    samples: dict = dataclasses.field(default_factory=dict)  # status -> first reply text seen

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


class Soak:
    def __init__(self, args, url: str, images: list[Path], slow_url: str):
        self.args, self.url = args, url
        self.images = [(p.name, image_size(p)) for p in images]
        self.slow_url = slow_url
        self.stats: dict[str, KindStats] = defaultdict(KindStats)
        self.lock = threading.Lock()
        self.slow_slots = threading.BoundedSemaphore(max(1, args.slow_peers))
        self.session_local = threading.local()
        name, size = self.images[0]
        huge = json.dumps(interactive_body(name, [box_region(size, 20, 25, 30, 35)]))
        self.huge_body = (huge[:-1] + ', "padding": "' + "x" * int(args.huge_mb * MIB) + '"}').encode()
        self.nested_body = b"[" * args.nest_depth
        points = np.random.default_rng(1).uniform(1, 99, size=(args.keypoints, 2))
        self.keypoints_body = json.dumps(interactive_body(name, [box_region(size, 20, 25, 30, 35)] + [
            keypoint_region(size, float(x), float(y), bool(i % 2)) for i, (x, y) in enumerate(points)
        ])).encode()

    @property
    def session(self) -> requests.Session:
        session = getattr(self.session_local, "session", None)
        if session is None:
            session = self.session_local.session = requests.Session()
        return session

    # Each kind returns the reply (or raises requests.RequestException) and, optionally, a check.
    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.url}{path}", timeout=self.args.timeout, **kwargs)

    def post_json(self, body: dict) -> requests.Response:
        return self.call("POST", "/predict", json=body)

    def post_raw(self, data: bytes) -> requests.Response:
        return self.call("POST", "/predict", data=data, headers={"Content-Type": "application/json"})

    def tile(self, rng: np.random.Generator) -> tuple[str, tuple[int, int]]:
        return self.images[int(rng.integers(len(self.images)))]

    def run_kind(self, kind: str, rng: np.random.Generator) -> tuple[requests.Response, str]:
        """The reply and how to judge its predictions: 'one', 'all' (every task), 'first' (task 0), ''."""
        request = getattr(self, f"_{kind}", None)
        if kind not in MIX or request is None:
            raise ValueError(kind)
        return request(rng)

    # -- one method per kind of request in MIX ----------------------------------------------------

    def _good_interactive_box(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        name, size = self.tile(rng)
        return self.post_json(interactive_body(name, [random_box(size, rng)])), "one"

    def _good_batch_boxes(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        tasks = []
        for i in range(3):
            name, size = self.tile(rng)
            tasks.append(batch_task(i + 1, name, [random_box(size, rng), random_box(size, rng)]))
        return self.post_json({"tasks": tasks, "label_config": CONFIG}), "all"

    def _good_health(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.call("GET", "/health"), ""

    def _good_metrics(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.call("GET", "/metrics"), ""

    def _bad_json(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.post_raw(b'{"tasks": [{"id": 1, "data": {"image": "x.jpg"}}], not json'), ""

    def _bad_rotation_nan(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        name, size = self.tile(rng)
        # requests' json= refuses NaN (it never leaves the client); json.dumps writes it as Python's NaN.
        body = interactive_body(name, [random_box(size, rng, rotation=float("nan"))])
        return self.post_raw(json.dumps(body, allow_nan=True).encode()), ""

    def _on_first_tile(self, image: str, rng: np.random.Generator) -> requests.Response:
        """An interactive request for ``image`` with a box sized for the first tile."""
        return self.post_json(interactive_body(image, [random_box(self.images[0][1], rng)]))

    def _bad_missing_image(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self._on_first_tile("missing-tile.jpg", rng), ""

    def _bad_path_traversal(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        # the target is drawn before the box, as it always was: the same seed gives the same requests
        target = ["../secret.jpg", "/data/local-files/?d=../secret.jpg", str(self.args.secret)][int(rng.integers(3))]
        return self._on_first_tile(target, rng), ""

    def _bad_not_an_image(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self._on_first_tile("notes.jpg", rng), ""

    def _bad_huge_body(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.post_raw(self.huge_body), ""

    def _bad_many_keypoints(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.post_raw(self.keypoints_body), ""

    def _bad_nested_json(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self.post_raw(self.nested_body), ""

    def _bad_mixed_batch(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        name, size = self.tile(rng)
        tasks = [batch_task(1, name, [random_box(size, rng)]), batch_task(2, "notes.jpg", [random_box(size, rng)])]
        return self.post_json({"tasks": tasks, "label_config": CONFIG}), "first"

    def _slow_peer_image(self, rng: np.random.Generator) -> tuple[requests.Response, str]:
        return self._on_first_tile(f"{self.slow_url}/slow/{self.images[0][0]}", rng), "one"

    def once(self, kind: str, rng: np.random.Generator, stats: dict[str, KindStats]) -> None:
        started = time.perf_counter()
        check, text = "", ""
        try:
            reply, check = self.run_kind(kind, rng)
            status: int | str = reply.status_code
            text = reply.text[:300]
        except requests.Timeout as exc:
            status, text = f"timeout:{type(exc).__name__}", str(exc)[:300]
        except requests.ConnectionError as exc:
            status, text = f"conn:{type(exc).__name__}", str(exc)[:300]
        except requests.RequestException as exc:  # never sent or not readable: counted, as a bug of someone's
            status, text = f"client:{type(exc).__name__}", str(exc)[:300]
        elapsed = (time.perf_counter() - started) * 1000
        answered, masked = (judge(reply, check) if status == 200 and check else (0, 0))
        with self.lock:
            s = stats[kind]
            s.statuses[status] += 1
            s.latencies.append(elapsed)
            s.answered += answered
            s.masked += masked
            s.samples.setdefault(status, text)

    def pick(self, rng: np.random.Generator) -> str:
        kinds, weights = list(MIX), np.array(list(MIX.values()), float)
        while True:
            kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
            if kind != "slow_peer_image":
                return kind
            if self.slow_slots.acquire(blocking=False):
                return kind

    def client(self, index: int, deadline: float) -> None:
        rng = np.random.default_rng(self.args.seed + index)
        while time.monotonic() < deadline:
            kind = self.pick(rng)
            try:
                self.once(kind, rng, self.stats)
            finally:
                if kind == "slow_peer_image":
                    self.slow_slots.release()


def judge(reply: requests.Response, check: str) -> tuple[int, int]:
    """(answered, masked) for a 200: the task(s) that should have a prediction got one / with regions."""
    try:
        results = reply.json()["results"]
    except (ValueError, KeyError, TypeError):
        return 0, 0
    if check == "one":  # interactive: [prediction]
        wanted = results[:1]
    elif check == "first":  # batch: task 0's list of predictions
        wanted = results[0] if results and isinstance(results[0], list) else []
    else:  # batch: every task's list of predictions
        wanted = [p for r in results for p in r] if results and all(results) else []
    if not wanted:
        return 0, 0
    return 1, int(all(isinstance(p, dict) and p.get("result") for p in wanted))


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    a = np.asarray(values)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def show_statuses(statuses: Counter) -> str:
    return " ".join(f"{k}x{v}" for k, v in sorted(statuses.items(), key=lambda kv: (isinstance(kv[0], str), str(kv[0]))))


def backend_limits() -> dict[str, object]:
    """The limits the backend's code declares now (it is being changed): module constants and settings."""
    import importlib

    found: dict[str, object] = {}
    words = ("MAX", "LIMIT", "TIMEOUT", "DEADLINE", "PARALLEL")
    for module in ("ml_backend.app", "ml_backend.service", "ml_backend.settings", "ml_backend.server",
                   "al_loop.studio.fetch", "al_loop.data.images"):
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # the other side may be mid-edit; the soak still runs
            found[module] = f"(import failed: {type(exc).__name__})"
            continue
        for name, value in vars(mod).items():
            if name.isupper() and isinstance(value, (int, float)) and not isinstance(value, bool) and any(w in name for w in words):
                found[f"{module.rsplit('.', 1)[1]}.{name}"] = value
        settings = getattr(mod, "BackendSettings", None)
        if settings is not None and module == "ml_backend.settings":
            for f in dataclasses.fields(settings):
                if any(w.lower() in f.name for w in words) and f.default is not dataclasses.MISSING:
                    found[f"settings.{f.name}"] = f.default
    return found


def log_exceptions(log_path: Path) -> Counter:
    """The last line of every traceback in the backend's log."""
    found: Counter = Counter()
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    inside = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line.startswith((" ", "\t")) and not line.startswith(("During handling", "The above")):
            found[line[:200]] += 1
            inside = False
    return found


def slope(samples: list[tuple[float, float]]) -> float:
    """MiB per minute by least squares over (seconds, MiB) samples."""
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < 1:
        return math.nan
    t = np.array([s[0] for s in samples]) / 60
    rss = np.array([s[1] for s in samples])
    return float(np.polyfit(t, rss, 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--minutes", type=float, default=2.0, help="soak length, fractions accepted (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="backend request threads (default 4)")
    parser.add_argument("--tiles", type=int, default=8, help="tiles the good requests draw from (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, s (default 60)")
    parser.add_argument("--huge-mb", type=float, default=40.0, help="size of bad_huge_body, MiB (default 40)")
    parser.add_argument("--keypoints", type=int, default=8000, help="keypoints of bad_many_keypoints (default 8000)")
    parser.add_argument("--nest-depth", type=int, default=100_000, help="'[' of bad_nested_json (default 100000)")
    parser.add_argument("--trickle-seconds", type=float, default=45.0, help="time the slow peer takes to send its tile (default 45)")
    parser.add_argument("--slow-peers", type=int, default=1, help="slow-peer requests in flight at most (default 1)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="RSS sampling period, s (default 10)")
    parser.add_argument("--health-every", type=float, default=0.5, help="/health polling period, s (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    (work / "tiles").mkdir()
    paths = tiles(work / "tiles", args.tiles)
    (work / "tiles" / "notes.jpg").write_text("these are field notes, not an image")
    args.secret = work / "secret.jpg"
    args.secret.write_bytes(paths[0].read_bytes())  # outside the allowed root

    limits = backend_limits()
    cpu_line = cpu()
    print(f"CPU: {cpu_line}")
    print(f"soak: {args.clients} clients x {args.minutes:g} min, backend --model tiny --threads {args.threads}; "
          f"{len(paths)} tiles {image_size(paths[0])[0]}x{image_size(paths[0])[1]} in {paths[0].parent}; "
          f"client timeout {args.timeout:g} s; huge body {args.huge_mb:g} MiB, {args.keypoints} keypoints, "
          f"nesting {args.nest_depth}, slow peer {args.trickle_seconds:g} s per tile (<= {args.slow_peers} in flight)")
    print("backend limits in its code now: " + (", ".join(f"{k}={v}" for k, v in limits.items()) or "none found"))

    backend = BackendServer(
        work / "workspace", work / "cache", model="tiny", local_root=work / "tiles",
        extra_env={"AL_LOOP_BACKEND_THREADS": str(args.threads)},
    )
    report: dict = {"cpu": cpu_line, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "backend_limits": limits}
    problems: list[str] = []
    with TrickleServer(paths[0].read_bytes(), args.trickle_seconds) as trickle:
        backend.start(timeout=300)
        try:
            code = soak(args, backend, paths, trickle, report, problems)
        finally:
            backend.stop()
    exceptions = log_exceptions(backend.process.log_path)
    report["backend_log_exceptions"] = dict(exceptions)
    print(f"\nbackend log {backend.process.log_path}: {sum(exceptions.values())} tracebacks")
    for line, count in exceptions.most_common(10):
        print(f"  {count:5d} x {line}")
    if problems:
        print("\nUNEXPECTED:")
        for p in problems:
            print("  " + p)
    else:
        print("\nno unexpected results")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"figures written to {args.json}")
    return code


def soak(args, backend: BackendServer, paths: list[Path], trickle: TrickleServer, report: dict, problems: list[str]) -> int:
    """Warm up, run the clients for ``args.minutes`` while sampling the worker's memory and polling
    /health, print the table and the notes, and fill ``report``; 1 when ``problems`` were found."""
    soak_run = Soak(args, backend.url, paths, trickle.url)
    warm = warm_up(soak_run, args.seed)
    monitor = Monitor(args, backend)
    started = time.monotonic()
    monitor.start(started)
    clients = [threading.Thread(target=soak_run.client, args=(i, started + args.minutes * 60))
               for i in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    wall = time.monotonic() - started
    monitor.stop()
    try:
        m = metrics(backend.url)
    except Exception:  # noqa: BLE001 - the figures above are still worth printing
        m = {}
    per_kind, total = print_table(soak_run, args.clients, wall)
    print_notes(soak_run, trickle)
    health, rss = monitor.print_summary(args.health_every, m)
    problems += find_problems(warm, soak_run, monitor, backend)
    report.update(
        wall_s=wall, kinds=per_kind, total=total,
        warm_up={k: {str(st): c for st, c in s.statuses.items()} for k, s in warm.items()},
        health=health, rss=rss,
        slow_peer={"started": trickle.started, "finished": trickle.finished, "abandoned": trickle.abandoned},
        metrics={k: v for k, v in m.items() if not k.startswith("al_backend_request_seconds")},
        unexpected=problems,
    )
    return 1 if problems else 0


def warm_up(soak_run: Soak, seed: int) -> dict[str, KindStats]:
    """One request of every kind but the slow peer (it takes --trickle-seconds)."""
    warm: dict[str, KindStats] = defaultdict(KindStats)
    rng = np.random.default_rng(seed + 1000)
    for kind in MIX:
        if kind != "slow_peer_image":
            soak_run.once(kind, rng, warm)
    print("\nwarm-up (one each): " + ", ".join(f"{k} {show_statuses(s.statuses)}" for k, s in warm.items()))
    return warm


class Monitor:
    """The gunicorn worker's resident memory, sampled, and /health, polled, while the clients run."""

    def __init__(self, args, backend: BackendServer):
        self.args, self.backend = args, backend
        self.master = backend.process.popen.pid
        self.worker = worker_pid(self.master)
        self.workers_seen = {self.worker}
        self.rss: list[tuple[float, float]] = []
        self.health: list[float] = []
        self.health_errors: Counter = Counter()
        self.peak: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def start(self, started: float) -> None:
        self._started = started
        self.sample()
        self._threads = [threading.Thread(target=self._sampler, daemon=True),
                         threading.Thread(target=self._poll_health, daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.args.timeout + 5)
        self.sample()
        self.peak = proc_status(worker_pid(self.master) or self.master, "VmHWM")

    def sample(self) -> None:
        pid = worker_pid(self.master)
        self.workers_seen.add(pid)
        value = proc_status(pid, "VmRSS") if pid else None
        if value is not None:
            self.rss.append((time.monotonic() - self._started, value))

    def _sampler(self) -> None:
        while not self._stop.wait(self.args.sample_every):
            self.sample()

    def _poll_health(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                reply = session.get(f"{self.backend.url}/health", timeout=self.args.timeout)
                if reply.status_code != 200:
                    self.health_errors[reply.status_code] += 1
            except requests.RequestException as exc:
                self.health_errors[f"conn:{type(exc).__name__}"] += 1
            self.health.append((time.perf_counter() - t0) * 1000)
            self._stop.wait(max(0.0, self.args.health_every - (time.perf_counter() - t0)))

    def print_summary(self, health_every: float, m: dict) -> tuple[dict, dict]:
        """Print /health's latencies, the worker's memory and the backend's counters; their report parts."""
        h50, h99, hmax = percentiles(self.health)
        print(f"\n/health every {health_every:g} s under load: {len(self.health)} polls, p50 {h50:.0f} ms, "
              f"p99 {h99:.0f} ms, max {hmax:.0f} ms; errors {show_statuses(self.health_errors) or 'none'}")
        values = [v for _, v in self.rss]
        rss_slope = slope(self.rss)
        if values:
            print(f"worker RSS (pid {self.worker}): start {values[0]:.0f} MiB, end {values[-1]:.0f} MiB, max "
                  f"{max(values):.0f} MiB over {len(values)} samples; slope {rss_slope:+.1f} MiB/min; VmHWM "
                  f"{self.peak or math.nan:.0f} MiB")
        if m:
            print(f"backend metrics: encoder passes {m.get('al_backend_encoder_passes_total', math.nan):.0f}, "
                  f"cache hits {m.get('al_backend_embedding_cache_hits_total', math.nan):.0f}")
        health = {"polls": len(self.health), "p50_ms": h50, "p99_ms": h99, "max_ms": hmax,
                  "errors": {str(k): v for k, v in self.health_errors.items()}}
        rss = {"samples": self.rss, "start_mib": values[0] if values else None,
               "end_mib": values[-1] if values else None, "max_mib": max(values) if values else None,
               "slope_mib_per_min": rss_slope, "vmhwm_mib": self.peak}
        return health, rss


def print_table(soak_run: Soak, clients: int, wall: float) -> tuple[dict, dict]:
    """Print each kind's requests, failures and latencies; (per kind, total) for the report."""
    print(f"\n{clients} clients for {wall:.0f} s wall (the last requests finish past the deadline)")
    print(f"{'kind':<22} {'requests':>8} {'non-2xx':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses")
    total, non_2xx, per_kind = 0, 0, {}
    all_latencies: list[float] = []
    for kind in MIX:
        s = soak_run.stats.get(kind, KindStats())
        p50, p99, top = percentiles(s.latencies)
        bad = sum(v for k, v in s.statuses.items() if not (isinstance(k, int) and 200 <= k < 300))
        total, non_2xx = total + s.requests, non_2xx + bad
        all_latencies += s.latencies
        print(f"{kind:<22} {s.requests:>8} {bad:>7} {p50:>8.0f} {p99:>8.0f} {top:>8.0f}  {show_statuses(s.statuses)}")
        per_kind[kind] = {"requests": s.requests, "non_2xx": bad, "statuses": {str(k): v for k, v in s.statuses.items()},
                          "p50_ms": p50, "p99_ms": p99, "max_ms": top, "answered": s.answered, "masked": s.masked,
                          "first_reply": {str(k): v for k, v in s.samples.items()}}
    p50, p99, top = percentiles(all_latencies)
    print(f"{'total':<22} {total:>8} {non_2xx:>7} {p50:>8.0f} {p99:>8.0f} {top:>8.0f}  "
          f"({total / max(wall, 1e-9):.1f} requests/s)")
    return per_kind, {"requests": total, "non_2xx": non_2xx, "p50_ms": p50, "p99_ms": p99}


def print_notes(soak_run: Soak, trickle: TrickleServer) -> None:
    """What the good kinds answered, bad kinds answered 200, and what the slow peer saw."""
    for kind, what in (("good_interactive_box", "a prediction"), ("good_batch_boxes", "predictions for all 3 tasks"),
                       ("bad_mixed_batch", "the good task's prediction"), ("slow_peer_image", "a prediction")):
        s = soak_run.stats.get(kind, KindStats())
        if s.requests:
            print(f"  {kind}: {what} in {s.answered} of {s.requests}, with mask regions in {s.masked} "
                  f"(random weights: an empty mask is possible)")
    for kind in ("bad_missing_image", "bad_path_traversal", "bad_not_an_image", "bad_nested_json", "bad_json"):
        s = soak_run.stats.get(kind, KindStats())
        if s.statuses.get(200):
            print(f"  note: {kind} answered 200 x{s.statuses[200]}")
    print(f"  slow peer: {trickle.started} downloads started, {trickle.finished} sent to the end, "
          f"{trickle.abandoned} abandoned by the backend (seen so far)")


def find_problems(warm: dict[str, KindStats], soak_run: Soak, monitor: Monitor, backend: BackendServer) -> list[str]:
    """What counts as a bug: an unexpected status anywhere, a worker that changed, a backend that exited."""
    problems = []
    for phase, table in (("warm-up", warm), ("soak", soak_run.stats)):
        for kind, s in table.items():
            for status, count in s.statuses.items():
                if unexpected(status):
                    problems.append(f"{phase} {kind}: {status} x{count}: {s.samples.get(status, '')[:200]!r}")
    for status, count in monitor.health_errors.items():
        if unexpected(status):
            problems.append(f"/health poll: {status} x{count}")
    workers = monitor.workers_seen - {None}
    if len(workers) > 1:
        problems.append(f"the gunicorn worker changed during the soak: pids {sorted(workers)}")
    if not backend.process.running:
        problems.append(f"the backend exited (code {backend.process.popen.returncode})")
    return problems


if __name__ == "__main__":
    sys.exit(main())
