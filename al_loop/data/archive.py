"""HiRISE RDR products from the PDS archive: a product ID becomes two URLs, each a resumable download.

A RED JP2 weighs hundreds of megabytes to a few gigabytes, and over a transfer that long the
archive's connection drops now and then. So each file is written to ``NAME.part``, resumed after
a drop with an HTTP Range request, checked against the size the server gives, and renamed to its
final name only when whole: a file under its final name is always whole, a whole one is not
fetched again, and an interrupted ``al-loop fetch`` run again picks up where it stopped.

Data flows one way: text -> :class:`ProductId` -> relative paths -> URLs -> files. The parsing
and the orbit-folder rule are pure; the network and the disk are touched in the download
helpers only. Products download a few at a time; a failure is recorded for its product and
never stops the others.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tqdm import tqdm

from al_loop.errors import AlLoopError, FetchError, ProductError

log = logging.getLogger(__name__)

PDS_BASE_URL = "https://hirise-pds.lpl.arizona.edu/PDS/"
KINDS = ("RED", "COLOR")
# Bytes read and written at a time; a dropped connection loses the block it was filling, no more.
CHUNK = 1 << 16
# Seconds to wait before retry n (times n): a dropped connection often comes back after a moment.
RETRY_PAUSE_S = 1.0
# ESP_012600_1655, optionally _RED or _COLOR, optionally a file name's .JP2 or .LBL.
_ID = re.compile(rf"(?P<phase>ESP|PSP)_(?P<orbit>\d{{6}})_(?P<target>\d{{4}})(?:_(?P<kind>{'|'.join(KINDS)}))?(?:\.(?:JP2|LBL))?")
_EXPECTED = "expected a HiRISE RDR ID such as ESP_012600_1655 or PSP_001234_1234, optionally ending _RED or _COLOR"
# The connection failed or dropped mid-body: worth resuming. HTTP errors are answers, not drops.
_DROPS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class ProductId:
    """One RDR product: the observation (``ESP_012600_1655``) and which image of it (RED, COLOR)."""

    observation: str
    kind: str = "RED"

    @property
    def name(self) -> str:
        """The product's name in the archive and on disk: ``ESP_012600_1655_RED``."""
        return f"{self.observation}_{self.kind}"

    @property
    def phase(self) -> str:
        """PSP (the primary science phase) or ESP (the extended one): the archive's top folder."""
        return self.observation[:3]

    @property
    def orbit(self) -> int:
        return int(self.observation[4:10])


@dataclass
class FetchReport:
    """What a fetch did: each whole product's files (JP2, LBL), the files that were already whole
    (not downloaded again), and one error per product that could not be had."""

    products: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)
    failures: list[AlLoopError] = field(default_factory=list)


def parse_product_id(text: str) -> ProductId:
    """The product ``text`` names (any case, a bare ID or a file name such as ``..._RED.JP2``);
    a ProductError naming the text and the expected form for anything else."""
    match = _ID.fullmatch(text.strip().upper())
    if not match:
        raise ProductError(text.strip() or repr(text), f"not a HiRISE product ID; {_EXPECTED}")
    observation = f"{match['phase']}_{match['orbit']}_{match['target']}"
    return ProductId(observation, match["kind"] or "RED")


def orbit_folder(orbit: int) -> str:
    """The archive groups observations by hundreds of orbits: 12600..12699 -> ``ORB_012600_012699``."""
    first = orbit // 100 * 100
    return f"ORB_{first:06d}_{first + 99:06d}"


def product_paths(pid: ProductId) -> tuple[str, str]:
    """The JP2's and the LBL's URLs relative to the archive root, in its layout:
    ``RDR/ESP/ORB_012600_012699/ESP_012600_1655/ESP_012600_1655_RED.JP2`` and ``.LBL``."""
    folder = f"RDR/{pid.phase}/{orbit_folder(pid.orbit)}/{pid.observation}/{pid.name}"
    return f"{folder}.JP2", f"{folder}.LBL"


def read_id_file(path: str | Path) -> list[str]:
    """The IDs in a file, one a line; blank lines and ``#`` comments (whole-line or trailing) ignored."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def fetch_products(
    ids: Iterable[str],
    out: Path,
    base_url: str = PDS_BASE_URL,
    parallel: int = 3,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> FetchReport:
    """Download each product's JP2 and LBL to ``out/NAME/NAME.JP2`` and ``.LBL`` (NAME such as
    ``ESP_012600_1655_RED``), ``parallel`` products at a time, each dropped connection resumed up
    to ``retries`` times. The two files share a folder because ``al-loop tile`` and ``map`` take
    the .LBL and GDAL opens the JP2 the label names beside it. Bad IDs and failed products land
    in ``failures``, one each; the rest complete.

    The base URL is the caller's to resolve (flag, ``AL_LOOP_PDS_URL``, this default), once.
    """
    report = FetchReport()
    pids = _unique_products(ids, report.failures)
    with closing(_Transfers(progress)) as shared, ThreadPoolExecutor(max(1, parallel)) as pool:
        jobs = {pid: pool.submit(_fetch_product, pid, Path(out), base_url, shared, timeout, retries) for pid in pids}
        try:
            for pid, job in jobs.items():
                _collect(report, pid.name, job)
        except BaseException:
            # Ctrl-C: without this the pool would wait for every download to end, gigabytes later.
            # Each stops at its next block and keeps its .part, which the next fetch resumes.
            shared.stop()
            pool.shutdown(cancel_futures=True)
            raise
    return report


def _collect(report: FetchReport, name: str, job: Future) -> None:
    try:
        files, skipped = job.result()
    except AlLoopError as exc:
        report.failures.append(exc)
    else:
        report.products[name] = files
        report.skipped.extend(skipped)


def _unique_products(ids: Iterable[str], failures: list[AlLoopError]) -> list[ProductId]:
    """Each product once, in the order given: ``ESP_x`` and ``ESP_x_RED.LBL`` are one product, and
    two workers writing one ``.part`` would corrupt it. Unparseable IDs go to ``failures``."""
    pids: dict[ProductId, None] = {}
    for text in ids:
        try:
            pids.setdefault(parse_product_id(text), None)
        except ProductError as exc:
            failures.append(exc)
    return list(pids)


class _Transfers:
    """What every download shares: one progress bar over the bytes of all files, fed by several
    threads (hence the lock), and the flag that stops them all. The bar's total grows as the server
    tells each file's size; bytes already in a ``.part`` count as done."""

    def __init__(self, progress: bool):
        self._bar = tqdm(total=0, desc="fetch", unit="B", unit_scale=True, disable=not progress)
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def expect(self, size: int, done: int = 0) -> None:
        with self._lock:
            self._bar.total += size
            self._bar.update(done)

    def advance(self, n: int) -> None:
        """``n`` bytes more on disk (fewer, when a server that ignores Range makes a file start over);
        InterruptedError once the fetch is stopped, which ends the download between two blocks."""
        if self._stopped.is_set():
            raise InterruptedError("the fetch was stopped")
        with self._lock:
            self._bar.update(n)

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self._bar.close()


def _fetch_product(pid: ProductId, out: Path, base_url: str, shared: _Transfers,
                   timeout: float, retries: int) -> tuple[list[Path], list[Path]]:
    """(the product's files, those already whole); a FetchError naming the product otherwise."""
    files, skipped = [], []
    with requests.Session() as session:
        # A compressed answer's Content-Length is not the file's size, and byte ranges would count
        # compressed bytes: ask for the file as it is (servers gzip text such as the .LBL).
        session.headers["Accept-Encoding"] = "identity"
        for rel in product_paths(pid):
            url = base_url.rstrip("/") + "/" + rel
            final = out / pid.name / rel.rsplit("/", 1)[1]
            try:
                downloaded = _fetch_file(session, url, final, shared, timeout, retries)
            except requests.RequestException as exc:  # not a drop: a bad URL, too many redirects, ...
                raise FetchError(502, f"{pid.name}: could not download {url}: {exc}") from None
            except OSError as exc:  # the disk, not the network (requests' errors are OSErrors too, caught above)
                raise FetchError(500, f"{pid.name}: could not write {final}: {exc}") from None
            files.append(final)
            if not downloaded:
                skipped.append(final)
    return files, skipped


def _fetch_file(session: requests.Session, url: str, final: Path, shared: _Transfers,
                timeout: float, retries: int) -> bool:
    """Make ``final`` the whole file at ``url``; False when it already was (nothing downloaded)."""
    name = final.parent.name
    size = _remote_size(session, url, name, timeout)
    if size is not None and final.is_file() and final.stat().st_size == size:
        return False
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    shared.expect(size or 0, min(have, size or 0))
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_PAUSE_S * attempt)
        try:
            size = _get_into(session, url, part, size, shared, name, timeout)
        except _DROPS as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            got = part.stat().st_size
            if size is None or got == size:  # size None: no length given, so only a clean end says whole
                os.replace(part, final)
                return True
            reason = f"{got} of {size} bytes arrived"
        if attempt < retries:
            log.warning("%s: %s; resuming (try %d of %d)", url, reason, attempt + 2, retries + 1)
    raise FetchError(502, f"{name}: {url} did not arrive whole after {retries + 1} tries ({reason}); "
                          f"{part} is kept, and fetching again resumes it")


def _remote_size(session: requests.Session, url: str, name: str, timeout: float) -> int | None:
    """The file's size as the server gives it (HEAD), None when it gives none; FetchError when the
    server has no such file or will not answer."""
    try:
        resp = session.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException as exc:
        raise FetchError(502, f"{name}: could not reach {url}: {exc}") from None
    if resp.status_code in (405, 501):  # no HEAD here: the GET's length will do
        return None
    _raise_for_status(resp, url, name)
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _get_into(session: requests.Session, url: str, part: Path, size: int | None,
              shared: _Transfers, name: str, timeout: float) -> int | None:
    """Append the rest of ``url`` to ``part`` (all of it when the server ignores the Range asked
    for); the file's whole size as the GET gives it. A dropped connection raises requests' error."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have >= size:
        if have == size:
            return size  # a previous run stopped between the last byte and the rename
        part.unlink()  # longer than the file: not a prefix of it
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        _raise_for_status(resp, url, name)
        resumed = resp.status_code == 206
        total = _total_size(resp, have if resumed else 0, name)
        if not resumed:
            shared.advance(-have)  # the server sends the whole file again: what the .part held starts over
        with open(part, "ab" if resumed else "wb") as fh:
            for block in resp.iter_content(CHUNK):
                fh.write(block)
                shared.advance(len(block))
    return total


def _total_size(resp: requests.Response, start: int, name: str) -> int | None:
    """The whole file's size from a 200's Content-Length or a 206's ``Content-Range: bytes a-b/total``;
    a FetchError when a 206 does not start where it was asked to (appending it would corrupt the file)."""
    if resp.status_code != 206:
        length = resp.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
    if not match or int(match[1]) != start:
        raise FetchError(502, f"{name}: {resp.url} answered a range request with Content-Range "
                              f"{resp.headers.get('Content-Range')!r}, not from byte {start}")
    return None if match[2] == "*" else int(match[2])


def _raise_for_status(resp: requests.Response, url: str, name: str) -> None:
    """A FetchError naming the product for an HTTP error: 404 means the archive has no such product."""
    if resp.status_code == 404:
        raise FetchError(404, f"{name}: no such product in the archive: {url}")
    if resp.status_code >= 400:
        status = f"{resp.status_code} {resp.reason}" if resp.reason else str(resp.status_code)
        raise FetchError(resp.status_code, f"{name}: the archive answered HTTP {status} for {url}")


def fetch_files(paths: Iterable[str], out: Path, base_url: str = PDS_BASE_URL, progress: bool = True,
                timeout: float = 60, retries: int = 3) -> list[Path]:
    """Download archive files by their paths under the root (``INDEX/RDRCUMINDEX.TAB``, ...) into
    ``out/<file name>``, one after another, each as a product's files are (resumed, checked against
    the server's size, renamed when whole, skipped when already whole). Returns the files; the
    first that cannot be had raises its FetchError (the ones before it stay whole)."""
    out, files = Path(out), []
    with closing(_Transfers(progress)) as shared, requests.Session() as session:
        session.headers["Accept-Encoding"] = "identity"  # as for products: sizes and ranges of the file as it is
        for rel in paths:
            url = base_url.rstrip("/") + "/" + rel.lstrip("/")
            final = out / rel.rsplit("/", 1)[-1]
            try:
                _fetch_file(session, url, final, shared, timeout, retries)
            except requests.RequestException as exc:
                raise FetchError(502, f"could not download {url}: {exc}") from None
            except OSError as exc:
                raise FetchError(500, f"could not write {final}: {exc}") from None
            files.append(final)
    return files
