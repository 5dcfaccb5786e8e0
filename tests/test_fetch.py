"""`al-loop fetch`'s library half against a local HTTP server laid out like the HiRISE PDS archive.

The server speaks HTTP/1.1 with keep-alive as the archive does, answers HEAD and Range requests,
logs every request, and can be told to cut a transfer after some bytes (closing the connection
mid-body, as a dropped connection looks to the client) or to answer a path with an error.
"""
from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from al_loop.data import archive
from al_loop.data.archive import (
    FetchReport,
    fetch_products,
    parse_product_id,
    product_paths,
    read_id_file,
)
from al_loop.errors import FetchError, ProductError

JP2_BYTES = 300_000
PRODUCTS = ("ESP_012600_1655_RED", "ESP_012600_1655_COLOR", "PSP_001234_1234_RED")


class Archive:
    """What the test server serves and how it misbehaves; every request lands in ``log``."""

    def __init__(self, root: Path):
        self.root = root
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_after: int | None = None  # body bytes sent before the connection is closed
        self.cuts_left = 0  # how many GETs are cut so
        self.ranges = True  # honour Range (206); False answers 200 with the whole file
        self.errors: dict[str, int] = {}  # path -> HTTP status to answer
        self.trickle = 0.0  # seconds between 16 kB pieces of a body: a slow link
        self.lock = threading.Lock()

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [entry for entry in self.log if entry[0] == "GET"]

    def take_cut(self) -> int | None:
        """The byte count to cut this GET after, None to send it whole."""
        with self.lock:
            if self.cut_after is None or self.cuts_left <= 0:
                return None
            self.cuts_left -= 1
            return self.cut_after


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, Content-Length framing: a cut body is detectably short

    def log_message(self, *args) -> None:  # quiet: the archive keeps its own log
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        store: Archive = self.server.archive
        with store.lock:
            store.log.append((self.command, self.path, self.headers.get("Range")))
        path = store.root / self.path.lstrip("/")
        if self.path in store.errors or not path.is_file():
            self.send_error(store.errors.get(self.path, 404))
            return
        data = path.read_bytes()
        start = self._start(store, len(data))
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body:
            self._send_body(store, data[start:])

    def _start(self, store: Archive, size: int) -> int:
        """Send the status line (206 for an honoured Range) and say where the body starts."""
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if not (match and store.ranges):
            self.send_response(200)
            return 0
        start = int(match[1])
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        return start

    def _send_body(self, store: Archive, chunk: bytes) -> None:
        cut = store.take_cut()
        if cut is None and store.trickle:
            for start in range(0, len(chunk), 16_384):
                self.wfile.write(chunk[start:start + 16_384])
                time.sleep(store.trickle)
            return
        if cut is None:
            self.wfile.write(chunk)
            return
        self.wfile.write(chunk[:cut])
        self.wfile.flush()
        self.close_connection = True  # the rest never comes: the client sees the connection end early


@pytest.fixture
def pds(tmp_path, monkeypatch):
    """(the Archive, its base URL): three products in the PDS layout, served on a free local port."""
    monkeypatch.setattr(archive, "RETRY_PAUSE_S", 0.0)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "pds"
    rng = random.Random(12600)
    for name in PRODUCTS:
        jp2, lbl = product_paths(parse_product_id(name))
        (root / jp2).parent.mkdir(parents=True, exist_ok=True)
        (root / jp2).write_bytes(rng.randbytes(JP2_BYTES))
        (root / lbl).write_text(f'PDS_VERSION_ID = PDS3\nPRODUCT_ID = "{name}"\nEND\n' + " " * 3000)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.archive = Archive(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.archive, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served(store: Archive, name: str) -> list[Path]:
    return [store.root / rel for rel in product_paths(parse_product_id(name))]


def fetch(ids, out: Path, base: str, **kwargs) -> FetchReport:
    return fetch_products(ids, out, base_url=base, progress=False, timeout=5, **kwargs)


def jp2_ranges(store: Archive, observation: str) -> list[int]:
    """Where each GET of the product's JP2 asked to start (0: no Range)."""
    jp2 = "/" + product_paths(parse_product_id(observation))[0]
    return [int(rng[6:-1]) if rng else 0 for _, path, rng in store.gets() if path == jp2]


def assert_same(store: Archive, out: Path, name: str) -> None:
    """The product is under ``out/NAME`` with the archive's bytes, and no .part is left."""
    for src in served(store, name):
        got = out / name / src.name
        assert got.is_file() and sha256(got) == sha256(src), got
    assert not list((out / name).glob("*.part"))


# --- IDs and the archive's layout --------------------------------------------------------------

@pytest.mark.parametrize("text, folder", [
    ("ESP_012600_1655", "RDR/ESP/ORB_012600_012699/ESP_012600_1655/ESP_012600_1655_RED"),
    ("ESP_012699_1655", "RDR/ESP/ORB_012600_012699/ESP_012699_1655/ESP_012699_1655_RED"),
    ("ESP_012700_1655", "RDR/ESP/ORB_012700_012799/ESP_012700_1655/ESP_012700_1655_RED"),
    ("ESP_012599_1655", "RDR/ESP/ORB_012500_012599/ESP_012599_1655/ESP_012599_1655_RED"),
    ("PSP_001234_1234", "RDR/PSP/ORB_001200_001299/PSP_001234_1234/PSP_001234_1234_RED"),
    ("PSP_000099_1234", "RDR/PSP/ORB_000000_000099/PSP_000099_1234/PSP_000099_1234_RED"),
    ("ESP_012600_1655_COLOR", "RDR/ESP/ORB_012600_012699/ESP_012600_1655/ESP_012600_1655_COLOR"),
])
def test_the_orbit_folder_rule_at_its_boundaries(text, folder):
    assert product_paths(parse_product_id(text)) == (folder + ".JP2", folder + ".LBL")


@pytest.mark.parametrize("text, observation, kind", [
    ("ESP_012600_1655", "ESP_012600_1655", "RED"),
    ("  esp_012600_1655_red\n", "ESP_012600_1655", "RED"),
    ("ESP_012600_1655_COLOR", "ESP_012600_1655", "COLOR"),
    ("ESP_012600_1655_RED.JP2", "ESP_012600_1655", "RED"),
    ("psp_001234_1234_color.lbl", "PSP_001234_1234", "COLOR"),
])
def test_ids_are_normalised(text, observation, kind):
    pid = parse_product_id(text)
    assert (pid.observation, pid.kind, pid.name) == (observation, kind, f"{observation}_{kind}")


@pytest.mark.parametrize("text", ["ESP_12600_1655", "TRA_012600_1655", "ESP_012600_1655_IRB", "ESP_012600_1655.IMG",
                                  "ESP_012600_1655_RED.JP2.part", "ESP_012600_1655 extra", ""])
def test_bad_ids_are_refused_naming_the_text_and_the_form(text):
    with pytest.raises(ProductError) as err:
        parse_product_id(text)
    message = str(err.value)
    assert (text.strip() or "''") in message and "ESP_012600_1655" in message and "_COLOR" in message


def test_an_id_file_holds_one_id_a_line(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# pits near Arsia Mons\nESP_012600_1655\n\n  PSP_001234_1234_COLOR  # the colour one\n   \n")
    assert read_id_file(ids) == ["ESP_012600_1655", "PSP_001234_1234_COLOR"]


# --- downloads ---------------------------------------------------------------------------------

def test_products_land_beside_their_labels_red_and_color(pds, tmp_path):
    store, base = pds
    out = tmp_path / "out"
    report = fetch(["ESP_012600_1655", "esp_012600_1655_color", "PSP_001234_1234_RED.LBL"], out, base)
    assert not report.failures and not report.skipped
    assert sorted(report.products) == sorted(PRODUCTS)
    for name in PRODUCTS:
        assert_same(store, out, name)
        assert report.products[name] == [out / name / f"{name}.JP2", out / name / f"{name}.LBL"]


def test_a_transfer_cut_midway_resumes_to_the_same_bytes(pds, tmp_path):
    store, base = pds
    store.cut_after, store.cuts_left = 100_000, 1
    report = fetch(["ESP_012600_1655"], tmp_path, base)
    assert not report.failures and list(report.products) == ["ESP_012600_1655_RED"]
    assert_same(store, tmp_path, "ESP_012600_1655_RED")
    ranges = jp2_ranges(store, "ESP_012600_1655")
    # the second GET asked for the rest: from what had reached the disk (whole blocks) when the cut came
    assert len(ranges) == 2 and ranges[0] == 0 and 0 < ranges[1] <= 100_000


def test_a_server_that_ignores_range_restarts_the_file_whole(pds, tmp_path):
    store, base = pds
    store.cut_after, store.cuts_left, store.ranges = 50_000, 1, False
    report = fetch(["ESP_012600_1655"], tmp_path, base)
    assert not report.failures
    assert_same(store, tmp_path, "ESP_012600_1655_RED")


def test_a_short_file_is_never_left_under_the_final_name(pds, tmp_path):
    store, base = pds
    store.cut_after, store.cuts_left = 100_000, 10**6  # every GET is cut, each try gains a little
    report = fetch(["ESP_012600_1655", "PSP_001234_1234"], tmp_path, base, retries=2)
    assert not report.products
    assert len(report.failures) == 2 and all(isinstance(e, FetchError) for e in report.failures)
    message = next(str(e) for e in report.failures if "ESP_012600_1655_RED" in str(e))
    assert "did not arrive whole after 3 tries" in message
    folder = tmp_path / "ESP_012600_1655_RED"
    assert not (folder / "ESP_012600_1655_RED.JP2").exists()
    assert [p.name for p in folder.iterdir()] == ["ESP_012600_1655_RED.JP2.part"]
    # each try resumed where the last stopped
    ranges = jp2_ranges(store, "ESP_012600_1655")
    kept = (folder / "ESP_012600_1655_RED.JP2.part").stat().st_size
    assert len(ranges) == 3 and ranges[0] == 0 < ranges[1] < ranges[2] < kept < JP2_BYTES
    # and the next fetch, on a good connection, finishes the .part
    store.cuts_left = 0
    assert not fetch(["ESP_012600_1655"], tmp_path, base).failures
    assert_same(store, tmp_path, "ESP_012600_1655_RED")
    assert jp2_ranges(store, "ESP_012600_1655")[-1] == kept


def test_an_unknown_id_or_a_server_error_is_named_and_the_rest_complete(pds, tmp_path):
    store, base = pds
    broken = "/" + product_paths(parse_product_id("PSP_001234_1234"))[0]
    store.errors[broken] = 503
    report = fetch(["ESP_099999_1234", "ESP_012600_1655", "not-an-id", "PSP_001234_1234", "ESP_012600_1655_COLOR"],
                   tmp_path, base)
    assert sorted(report.products) == ["ESP_012600_1655_COLOR", "ESP_012600_1655_RED"]
    for name in report.products:
        assert_same(store, tmp_path, name)
    messages = [str(e) for e in report.failures]
    assert len(messages) == 3
    assert any(m.startswith("not-an-id:") for m in messages)
    missing = next(e for e in report.failures if "ESP_099999_1234" in str(e))
    assert missing.status == 404 and "no such product in the archive: " + base + "RDR/ESP/ORB_099900_099999/" in str(missing)
    failed = next(e for e in report.failures if str(e).startswith("PSP_001234_1234_RED:"))
    assert failed.status == 503 and "HTTP 503" in str(failed)
    assert not (tmp_path / "ESP_099999_1234_RED").exists()  # nothing left behind for an unknown ID


def test_a_second_fetch_skips_whole_files_without_downloading(pds, tmp_path):
    store, base = pds
    fetch(["ESP_012600_1655", "PSP_001234_1234"], tmp_path, base)
    gets = len(store.gets())
    report = fetch(["ESP_012600_1655", "PSP_001234_1234"], tmp_path, base)
    assert len(store.gets()) == gets  # HEADs only
    assert not report.failures and sorted(report.skipped) == sorted(f for n in report.products.values() for f in n)
    assert len(report.skipped) == 4


def test_a_file_of_the_wrong_size_is_fetched_again(pds, tmp_path):
    store, base = pds
    fetch(["ESP_012600_1655"], tmp_path, base)
    jp2 = tmp_path / "ESP_012600_1655_RED" / "ESP_012600_1655_RED.JP2"
    jp2.write_bytes(jp2.read_bytes()[:1000])
    report = fetch(["ESP_012600_1655"], tmp_path, base)
    assert report.skipped == [jp2.with_suffix(".LBL")]
    assert_same(store, tmp_path, "ESP_012600_1655_RED")


def test_one_product_named_twice_downloads_once(pds, tmp_path):
    store, base = pds
    report = fetch(["ESP_012600_1655", "esp_012600_1655_red.lbl", "ESP_012600_1655_RED.JP2"], tmp_path, base,
                   parallel=3)
    assert list(report.products) == ["ESP_012600_1655_RED"] and not report.failures
    assert len(store.gets()) == 2


def test_the_progress_bar_counts_bytes(pds, tmp_path, capsys):
    store, base = pds
    store.cut_after, store.cuts_left = 100_000, 1
    report = fetch_products(["ESP_012600_1655"], tmp_path, base_url=base, progress=True, timeout=5)
    assert not report.failures
    assert "fetch" in capsys.readouterr().err


def test_ctrl_c_stops_every_download_and_keeps_its_part(pds, tmp_path, monkeypatch):
    store, base = pds
    store.trickle = 0.1  # 300 kB in about two seconds
    parts = [tmp_path / n / f"{n}.JP2.part" for n in ("ESP_012600_1655_RED", "PSP_001234_1234_RED")]

    def interrupted(*args):  # Ctrl-C while the main thread waits, once both downloads are under way
        while not all(p.is_file() and p.stat().st_size for p in parts):
            time.sleep(0.01)
        raise KeyboardInterrupt

    collect = archive._collect
    monkeypatch.setattr(archive, "_collect", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fetch(["ESP_012600_1655", "PSP_001234_1234"], tmp_path, base)
    assert time.monotonic() - started < 1.2  # the workers stopped, not waited for to the end
    assert all(0 < p.stat().st_size < JP2_BYTES for p in parts)
    assert not list(tmp_path.glob("*/*.JP2"))
    monkeypatch.setattr(archive, "_collect", collect)
    store.trickle = 0.0
    assert not fetch(["ESP_012600_1655", "PSP_001234_1234"], tmp_path, base).failures
    assert_same(store, tmp_path, "PSP_001234_1234_RED")
    assert jp2_ranges(store, "PSP_001234_1234")[-1] > 0  # resumed


def test_the_command_takes_ids_and_a_file_names_failures_and_exits_1(pds, tmp_path, capsys, monkeypatch):
    """`al-loop fetch` as a user runs it: IDs on the line and in --from, the base from
    AL_LOOP_PDS_URL, the labels printed (what `tile` and `map` take), an unknown ID named, exit 1."""
    from al_loop.cli import main

    _, base = pds
    monkeypatch.setenv("AL_LOOP_PDS_URL", base)
    ids = tmp_path / "ids.txt"
    ids.write_text("# wanted\nPSP_001234_1234\nESP_099999_1234\n")
    code = main(["fetch", "ESP_012600_1655", "--from", str(ids), "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and "ESP_099999_1234" in err and "no such product" in err
    assert f"ESP_012600_1655_RED: {tmp_path / 'out' / 'ESP_012600_1655_RED' / 'ESP_012600_1655_RED.LBL'}" in out
    assert (tmp_path / "out" / "PSP_001234_1234_RED" / "PSP_001234_1234_RED.JP2").is_file()
    assert main(["fetch", "--out", str(tmp_path / "x")]) == 2 and "no product ID" in capsys.readouterr().err
