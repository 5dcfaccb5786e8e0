"""The HiRISE archive's cumulative indexes: every RDR product with its footprint and viewing
geometry (``INDEX/RDRCUMINDEX``), and every DTM with the two observations it was made from
(``INDEX/DTMCUMINDEX``), downloaded with the archive client ``fetch`` uses and read into columns.

Both are PDS3 fixed-length ASCII tables, the object ``RDR_INDEX_TABLE`` in each label. A row is
comma-separated with text in quotes, but what locates a field is its ``COLUMN`` object in the
label: ``START_BYTE`` (1-based, the quotes excluded) and ``BYTES``. The reader takes every offset
from the label it is given, never from this file: the archive has widened columns before, and
the RDR index grows every month (about 105 000 rows of ``RECORD_BYTES`` = 821 in 2026).

Reading: ``pdr`` (the Planetary Data Reader) reads the table from its label, after the file has
been checked whole and aligned here (a truncated download must not pass as a shorter index).
Only ``_RED`` products are kept. The columns are cached beside the label as
``<STEM>.columns.npz``, keyed by both files' sizes and modification times, so a query after the
first reads a few megabytes instead of parsing 86 MB (figures in docs/guide/targets.md).

:data:`RDR_LAYOUT` and :data:`DTM_LAYOUT` are the real labels' columns (the RDR label as the
archive publishes it; the DTM label's first ten columns as the archive's DTM index label gives
them), used only to *write* an index (:func:`write_index`, for tests, benchmarks and demos).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from al_loop.errors import DatasetError

log = logging.getLogger(__name__)

INDEX_FOLDER = "INDEX"
RDR_STEM, DTM_STEM = "RDRCUMINDEX", "DTMCUMINDEX"
TABLE_OBJECT = "RDR_INDEX_TABLE"  # both labels name their table so
DEFAULT_INDEX_DIR = Path("~/.cache/al-loop/hirise-index")
FETCH_HINT = "run `al-loop fetch --index` (or give --index a folder holding RDRCUMINDEX and DTMCUMINDEX .LBL/.TAB)"
CACHE_VERSION = 1  # bump when the cached columns change
NO_VALUE = (-9998.0, -9999.0, -9997.0, -9996.0)  # PDS3 "not applicable" markers, read as NaN

# Columns the coverage reads, by the label's names; the sub-spacecraft point gives each image's
# look direction (for stereo convergence) and is optional: without it convergence stays unknown.
RDR_TEXT = ("OBSERVATION_ID", "PRODUCT_ID", "START_TIME", "STEREO_FLAG")
RDR_REAL = ("EMISSION_ANGLE", "INCIDENCE_ANGLE", "PHASE_ANGLE", "SUB_SOLAR_AZIMUTH", "NORTH_AZIMUTH",
            "SOLAR_LONGITUDE", "MAP_SCALE", "MINIMUM_LATITUDE", "MAXIMUM_LATITUDE", "MINIMUM_LONGITUDE",
            "MAXIMUM_LONGITUDE", *(f"CORNER{k}_{axis}" for k in range(1, 5) for axis in ("LATITUDE", "LONGITUDE")))
RDR_OPTIONAL = ("SUB_SPACECRAFT_LATITUDE", "SUB_SPACECRAFT_LONGITUDE")
DTM_TEXT = ("PRODUCT_ID", "LEFT_OBSERVATION_ID", "RIGHT_OBSERVATION_ID")


# ---- records ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableLayout:
    """A fixed-length table as its label describes it."""

    label: Path
    table: Path
    record_bytes: int
    rows: int | None  # the label's ROWS (None: not given)


@dataclass(frozen=True)
class RdrIndex:
    """The ``_RED`` products of the RDR index, N rows; angles in degrees, latitudes planetocentric,
    longitudes 0..360 east, NaN where the index gives a no-value marker."""

    observation_id: np.ndarray  # (N,) str
    product_id: np.ndarray  # (N,) str
    start_time: np.ndarray  # (N,) str, UTC ISO time
    stereo_flag: np.ndarray  # (N,) bool: intended as part of a stereo pair
    emission: np.ndarray  # (N,) float
    incidence: np.ndarray  # (N,) float
    phase: np.ndarray  # (N,) float
    sub_solar_azimuth: np.ndarray  # (N,) float, clockwise from the image's 3 o'clock
    north_azimuth: np.ndarray  # (N,) float, clockwise from the image's 3 o'clock
    solar_longitude: np.ndarray  # (N,) float, Ls
    map_scale: np.ndarray  # (N,) float, metres per pixel
    lat_range: np.ndarray  # (N, 2) float: minimum, maximum latitude
    lon_range: np.ndarray  # (N, 2) float: minimum, maximum longitude
    corner_lat: np.ndarray  # (N, 4) float: corners 1..4
    corner_lon: np.ndarray  # (N, 4) float
    sub_spacecraft: np.ndarray  # (N, 2) float: latitude, longitude of the sub-spacecraft point (NaN: not given)

    def __len__(self) -> int:
        return len(self.product_id)


@dataclass(frozen=True)
class DtmIndex:
    """The DTM index, M rows: each DTM's product ID and the observations it was made from."""

    product_id: np.ndarray  # (M,) str
    left: np.ndarray  # (M,) str, LEFT_OBSERVATION_ID
    right: np.ndarray  # (M,) str, RIGHT_OBSERVATION_ID

    def __len__(self) -> int:
        return len(self.product_id)


# ---- download --------------------------------------------------------------------------------------------------


def index_paths() -> list[str]:
    """The four files relative to the archive root, labels first."""
    return [f"{INDEX_FOLDER}/{stem}.{ext}" for stem in (RDR_STEM, DTM_STEM) for ext in ("LBL", "TAB")]


def fetch_index(base_url: str, cache_dir: str | Path = DEFAULT_INDEX_DIR, progress: bool = True,
                timeout: float = 60, retries: int = 3) -> list[Path]:
    """Download ``INDEX/RDRCUMINDEX.{LBL,TAB}`` and ``INDEX/DTMCUMINDEX.{LBL,TAB}`` from the archive at
    ``base_url`` into ``cache_dir`` (flat), with ``fetch``'s machinery: resumed after a dropped
    connection, checked against the server's size, renamed into place only when whole; a file
    already whole is not fetched again (the archive republishes the index monthly: a new size
    fetches it anew). Returns the four paths; a FetchError naming the file when one cannot be had."""
    from al_loop.data.archive import fetch_files

    folder = Path(cache_dir).expanduser()
    return fetch_files(index_paths(), folder, base_url, progress=progress, timeout=timeout, retries=retries)


def resolve_index_dir(given: str | Path | None) -> Path | None:
    """The index folder a command reads: the one given (checked when read), else the default cache
    when ``al-loop fetch --index`` has filled it, else None (no coverage)."""
    if given is not None:
        return Path(given).expanduser()
    default = DEFAULT_INDEX_DIR.expanduser()
    return default if (default / f"{RDR_STEM}.LBL").is_file() else None


# ---- the label and the table (pdr) ----------------------------------------------------------------------------


def open_table(label: str | Path):
    """(the table's layout, pdr's reader of it) for a PDS3 index label; a DatasetError that names
    the label and says how to get the index when it is missing, unreadable or not an index."""
    import pdr

    label = Path(label)
    if not label.is_file():
        raise DatasetError(f"{label}: no such index label; {FETCH_HINT}")
    try:
        data = pdr.read(str(label))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{label}: not a readable PDS3 label ({exc}); {FETCH_HINT}") from None
    meta = data.metadata
    table = meta.get(TABLE_OBJECT) if hasattr(meta, "get") else None
    record_bytes = _number(meta.get("RECORD_BYTES") or (table or {}).get("ROW_BYTES")) if table else None
    if not table or not record_bytes:
        raise DatasetError(f"{label}: no {TABLE_OBJECT} object with RECORD_BYTES: not a HiRISE index label; {FETCH_HINT}")
    pointer = meta.get(f"^{TABLE_OBJECT}")
    name = pointer[0] if isinstance(pointer, (list, tuple)) else pointer
    rows = _number(table.get("ROWS"))
    layout = TableLayout(label, label.with_name(str(name)) if name else label.with_suffix(".TAB"), int(record_bytes),
                         None if rows is None else int(rows))
    return layout, data


def _number(value) -> float | None:
    value = getattr(value, "value", value)
    return None if value is None else float(value)


def check_table(layout: TableLayout) -> None:
    """A DatasetError naming the file unless the table is there and whole: a whole number of
    records, exactly as many as the label's ROWS, each ending in a line break where the label says
    (first and last record: a table of another version than its label is misaligned there)."""
    path = layout.table
    if not path.is_file():
        raise DatasetError(f"{path}: no such index table (its label {layout.label.name} is there); {FETCH_HINT}")
    size = path.stat().st_size
    n, extra = divmod(size, layout.record_bytes)
    if extra or n == 0 or (layout.rows is not None and n < layout.rows):
        said = f"{layout.rows} rows of {layout.record_bytes} bytes" if layout.rows else f"records of {layout.record_bytes} bytes"
        raise DatasetError(f"{path}: truncated ({size} bytes; its label says {said}); {FETCH_HINT}")
    if layout.rows is not None and n > layout.rows:
        raise DatasetError(f"{path}: holds {n} records, its label {layout.label.name} says {layout.rows}: table and label "
                           f"of different releases; {FETCH_HINT}")
    with open(path, "rb") as fh:
        first = fh.read(layout.record_bytes)
        fh.seek(size - layout.record_bytes)
        last = fh.read(layout.record_bytes)
    if not (first.endswith(b"\n") and last.endswith(b"\n")):
        raise DatasetError(f"{path}: its records do not end every {layout.record_bytes} bytes as its label says "
                           f"(a table and label of different versions?); {FETCH_HINT}")


def read_columns(label: str | Path, text: Sequence[str], real: Sequence[str],
                 optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The named columns of the index table, each (N,): text stripped of padding, reals as float64
    (NaN for blanks and no-value markers); ``optional`` reals come back NaN when the label lacks them.
    Located by the label's START_BYTE/BYTES (pdr reads them so). A DatasetError naming the file for a
    missing, truncated or misaligned table or a label without the columns."""
    import pandas as pd

    layout, data = open_table(label)
    check_table(layout)
    frame = data[TABLE_OBJECT]
    missing = [n for n in (*text, *real) if n not in frame.columns]
    if missing:
        raise DatasetError(f"{layout.label}: the label has no column {', '.join(missing)}: not the HiRISE index "
                           f"this reads; {FETCH_HINT}")
    out = {name: frame[name].fillna("").astype(str).str.strip().to_numpy(dtype=str) for name in text}
    for name in (*real, *optional):
        values = (np.array(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64) if name in frame
                  else np.full(len(frame), np.nan))
        values[np.isin(values, NO_VALUE)] = np.nan
        out[name] = values
    return out


# ---- the two indexes, cached -----------------------------------------------------------------------------------


def load_rdr_index(folder: str | Path) -> RdrIndex:
    """The ``_RED`` rows of ``folder/RDRCUMINDEX.LBL`` + ``.TAB``, from the columnar cache when it is
    current, else parsed once and cached (a folder that cannot be written to is parsed each time)."""
    columns = _cached(Path(folder).expanduser() / f"{RDR_STEM}.LBL", _parse_rdr)
    return RdrIndex(**columns)


def load_dtm_index(folder: str | Path) -> DtmIndex:
    """Every DTM of ``folder/DTMCUMINDEX.LBL`` + ``.TAB`` (cached like the RDR index)."""
    columns = _cached(Path(folder).expanduser() / f"{DTM_STEM}.LBL", _parse_dtm)
    return DtmIndex(**columns)


def _parse_rdr(label: Path) -> dict[str, np.ndarray]:
    raw = read_columns(label, RDR_TEXT, RDR_REAL, RDR_OPTIONAL)
    red = np.char.endswith(raw["PRODUCT_ID"], "_RED")
    c = {name: values[red] for name, values in raw.items()}
    return {
        "observation_id": c["OBSERVATION_ID"], "product_id": c["PRODUCT_ID"], "start_time": c["START_TIME"],
        "stereo_flag": np.char.upper(c["STEREO_FLAG"]) == "YES", "emission": c["EMISSION_ANGLE"],
        "incidence": c["INCIDENCE_ANGLE"], "phase": c["PHASE_ANGLE"], "sub_solar_azimuth": c["SUB_SOLAR_AZIMUTH"],
        "north_azimuth": c["NORTH_AZIMUTH"], "solar_longitude": c["SOLAR_LONGITUDE"], "map_scale": c["MAP_SCALE"],
        "lat_range": np.column_stack([c["MINIMUM_LATITUDE"], c["MAXIMUM_LATITUDE"]]),
        "lon_range": np.column_stack([c["MINIMUM_LONGITUDE"], c["MAXIMUM_LONGITUDE"]]),
        "corner_lat": np.column_stack([c[f"CORNER{k}_LATITUDE"] for k in range(1, 5)]),
        "corner_lon": np.column_stack([c[f"CORNER{k}_LONGITUDE"] for k in range(1, 5)]) % 360.0,
        "sub_spacecraft": np.column_stack([c["SUB_SPACECRAFT_LATITUDE"], c["SUB_SPACECRAFT_LONGITUDE"] % 360.0]),
    }


def _parse_dtm(label: Path) -> dict[str, np.ndarray]:
    raw = read_columns(label, DTM_TEXT, ())
    return {"product_id": raw["PRODUCT_ID"], "left": raw["LEFT_OBSERVATION_ID"], "right": raw["RIGHT_OBSERVATION_ID"]}


def _cached(label: Path, parse) -> dict[str, np.ndarray]:
    """``parse(label)``'s columns, from ``<STEM>.columns.npz`` beside the label while the label and its
    ``.TAB`` keep the sizes and times they had when it was written (a cheap check: no label parse)."""
    table = label.with_suffix(".TAB")
    for path, what in ((label, "label"), (table, "table")):
        if not path.is_file():
            raise DatasetError(f"{path}: no such index {what}; {FETCH_HINT}")
    key = _signature(label, table)
    cache = label.with_name(f"{label.stem}.columns.npz")
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                if stored["__signature__"].tolist() == key:
                    return {name: stored[name] for name in stored.files if name != "__signature__"}
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache: parse again
            log.warning("%s: unreadable index cache (%s); parsing the table again", cache, exc)
    columns = parse(label)
    _write_cache(cache, columns, key)
    return columns


def _signature(label: Path, table: Path) -> list[int]:
    stats = [label.stat(), table.stat()]
    return [CACHE_VERSION] + [v for s in stats for v in (s.st_size, s.st_mtime_ns)]


def _write_cache(cache: Path, columns: dict[str, np.ndarray], key: list[int]) -> None:
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.partial.npz")
    try:
        np.savez(partial, __signature__=np.array(key, np.int64), **columns)
        partial.replace(cache)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.warning("%s: cannot cache the parsed index (%s); it will be parsed again next time", cache, exc)


# ---- writing an index in the archive's layout (tests, benchmarks, demos) ----------------------------------------

# (name, DATA_TYPE, START_BYTE, BYTES, FORMAT) of every column of the archive's RDRCUMINDEX.LBL, RECORD_BYTES 821.
RDR_LAYOUT = (
    ("VOLUME_ID", "CHARACTER", 2, 10, "A10"), ("FILE_NAME_SPECIFICATION", "CHARACTER", 15, 67, "A67"),
    ("INSTRUMENT_HOST_ID", "CHARACTER", 85, 3, "A3"), ("INSTRUMENT_ID", "CHARACTER", 91, 6, "A6"),
    ("OBSERVATION_ID", "CHARACTER", 100, 15, "A15"), ("PRODUCT_ID", "CHARACTER", 118, 21, "A21"),
    ("PRODUCT_VERSION_ID", "CHARACTER", 142, 3, "A3"), ("TARGET_NAME", "CHARACTER", 148, 32, "A32"),
    ("ORBIT_NUMBER", "ASCII_INTEGER", 182, 6, "I6"), ("MISSION_PHASE_NAME", "CHARACTER", 190, 30, "A30"),
    ("RATIONALE_DESC", "CHARACTER", 223, 75, "A75"), ("OBSERVATION_START_TIME", "TIME", 301, 24, "A24"),
    ("OBSERVATION_START_COUNT", "CHARACTER", 328, 16, "A16"), ("START_TIME", "TIME", 347, 24, "A24"),
    ("SPACECRAFT_CLOCK_START_COUNT", "CHARACTER", 374, 16, "A16"), ("STOP_TIME", "TIME", 393, 24, "A24"),
    ("SPACECRAFT_CLOCK_STOP_COUNT", "CHARACTER", 420, 16, "A16"), ("IMAGE_LINES", "ASCII_INTEGER", 438, 6, "I6"),
    ("LINE_SAMPLES", "ASCII_INTEGER", 445, 6, "I6"), ("EMISSION_ANGLE", "ASCII_REAL", 452, 8, "F8.5"),
    ("INCIDENCE_ANGLE", "ASCII_REAL", 461, 7, "F7.4"), ("PHASE_ANGLE", "ASCII_REAL", 469, 8, "F7.4"),
    ("SPACECRAFT_ALTITUDE", "ASCII_REAL", 478, 8, "F8.3"), ("TARGET_CENTER_DISTANCE", "ASCII_REAL", 487, 7, "F7.2"),
    ("SLANT_DISTANCE", "ASCII_REAL", 495, 8, "F8.3"), ("NORTH_AZIMUTH", "ASCII_REAL", 504, 10, "F10.4"),
    ("SUB_SOLAR_AZIMUTH", "ASCII_REAL", 515, 10, "F10.4"), ("SUB_SOLAR_LATITUDE", "ASCII_REAL", 526, 10, "F10.4"),
    ("SUB_SOLAR_LONGITUDE", "ASCII_REAL", 537, 10, "F10.4"), ("SUB_SPACECRAFT_LATITUDE", "ASCII_REAL", 548, 10, "F10.4"),
    ("SUB_SPACECRAFT_LONGITUDE", "ASCII_REAL", 559, 10, "F10.4"), ("SOLAR_DISTANCE", "ASCII_REAL", 570, 10, "F10.5"),
    ("SOLAR_LONGITUDE", "ASCII_REAL", 581, 10, "F10.3"), ("LOCAL_TIME", "ASCII_REAL", 592, 10, "F10.4"),
    ("STEREO_FLAG", "CHARACTER", 604, 3, "A3"), ("MINIMUM_LATITUDE", "ASCII_REAL", 609, 10, "F10.4"),
    ("MAXIMUM_LATITUDE", "ASCII_REAL", 620, 10, "F10.4"), ("MINIMUM_LONGITUDE", "ASCII_REAL", 631, 10, "F10.4"),
    ("MAXIMUM_LONGITUDE", "ASCII_REAL", 642, 10, "F10.4"), ("MAP_SCALE", "ASCII_REAL", 653, 5, "F5.2"),
    ("MAP_RESOLUTION", "ASCII_REAL", 659, 10, "F10.3"), ("MAP_PROJECTION_TYPE", "CHARACTER", 671, 19, "A19"),
    ("PROJECTION_CENTER_LATITUDE", "ASCII_REAL", 692, 5, "F5.1"),
    ("PROJECTION_CENTER_LONGITUDE", "ASCII_REAL", 698, 8, "F8.3"),
    ("LINE_PROJECTION_OFFSET", "ASCII_REAL", 707, 12, "F12.1"), ("SAMPLE_PROJECTION_OFFSET", "ASCII_REAL", 720, 12, "F12.1"),
    *((f"CORNER{k}_{axis}", "ASCII_REAL", 733 + 22 * (k - 1) + (11 if axis == "LONGITUDE" else 0), 10, "F10.4")
      for k in range(1, 5) for axis in ("LATITUDE", "LONGITUDE")),
)
RDR_RECORD_BYTES = 821
# The DTM index label's columns as far as they are used (its RECORD_BYTES is 610; the columns after
# RIGHT_OBSERVATION_ID are left out of a written index, whose records are padded to that length).
DTM_LAYOUT = (
    ("VOLUME_ID", "CHARACTER", 2, 10, "A10"), ("FILE_NAME_SPECIFICATION", "CHARACTER", 15, 94, "A94"),
    ("INSTRUMENT_HOST_ID", "CHARACTER", 113, 3, "A3"), ("INSTRUMENT_ID", "CHARACTER", 119, 6, "A6"),
    ("PRODUCT_ID", "CHARACTER", 128, 33, "A33"), ("PRODUCT_VERSION_ID", "CHARACTER", 164, 3, "A3"),
    ("TARGET_NAME", "CHARACTER", 170, 32, "A32"), ("RATIONALE_DESC", "CHARACTER", 205, 75, "A75"),
    ("LEFT_OBSERVATION_ID", "CHARACTER", 283, 15, "A15"), ("RIGHT_OBSERVATION_ID", "CHARACTER", 301, 15, "A15"),
)
DTM_RECORD_BYTES = 610


def write_index(folder: str | Path, stem: str, rows: Iterable[dict], layout=RDR_LAYOUT,
                record_bytes: int = RDR_RECORD_BYTES) -> Path:
    """``folder/<stem>.LBL`` and ``.TAB``: ``rows`` (column name -> value; columns not given are
    blank text or -9998) as the archive writes them, quoted text at START_BYTE, CRLF-ended records
    of ``record_bytes``. Returns the label."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"{stem}.TAB"
    count = 0
    with open(table, "wb") as fh:
        for row in rows:
            fh.write(_record(row, layout, record_bytes))
            count += 1
    label = folder / f"{stem}.LBL"
    label.write_text(_label(table.name, layout, record_bytes, count))
    return label


def _record(row: dict, layout, record_bytes: int) -> bytes:
    line = bytearray(b" " * (record_bytes - 2))
    for name, data_type, start, width, fmt in layout:
        value = row.get(name)
        if data_type in ("CHARACTER", "TIME"):
            text = ("" if value is None else str(value))[:width].ljust(width)
            field, at = f'"{text}"', start - 2
        else:
            field, at = _numeral(-9998 if value is None else value, width, fmt), start - 1
        line[at:at + len(field)] = field.encode("ascii")
        end = at + len(field)
        if name != layout[-1][0]:
            line[end] = ord(",")
    return bytes(line) + b"\r\n"


def _numeral(value, width: int, fmt: str) -> str:
    if fmt.startswith("I"):
        return f"{int(value):>{width}d}"
    decimals = int(fmt.split(".")[1])
    while decimals > 0 and len(f"{float(value):.{decimals}f}") > width:
        decimals -= 1  # a value wider than its column keeps its width, losing decimals
    return f"{float(value):>{width}.{decimals}f}"


def _label(table: str, layout, record_bytes: int, rows: int) -> str:
    columns = "".join(
        f"    OBJECT = COLUMN\n        NAME = {name}\n        DATA_TYPE = {data_type}\n        START_BYTE = {start}\n"
        f"        BYTES = {width}\n        FORMAT = \"{fmt}\"\n    END_OBJECT\n"
        for name, data_type, start, width, fmt in layout)
    return (f"PDS_VERSION_ID = PDS3\nRECORD_TYPE = FIXED_LENGTH\nRECORD_BYTES = {record_bytes}\nFILE_RECORDS = {rows}\n"
            f"^{TABLE_OBJECT} = \"{table}\"\nOBJECT = {TABLE_OBJECT}\n    INDEX_TYPE = SINGLE\n"
            f"    INTERCHANGE_FORMAT = ASCII\n    ROWS = {rows}\n    ROW_BYTES = {record_bytes}\n"
            f"    COLUMNS = {len(layout)}\n{columns}END_OBJECT\nEND\n")
