"""Catalogues of Mars pits and cave candidates, read as points on the IAU 2015 sphere.

Two shapes are read:

* the Mars Global Cave Candidate Catalog (MGC3, Cushing/USGS), whose header row is shifted
  by one column against its data (the header says ``longitude`` over the candidate ids):
  it is read by position - id, longitude east, latitude, type, priority, diameter (m),
  depth (m), comment - with the csv module, so quoted commas stay in the comment. ``n/a``
  is "not given": None for text and the priority, NaN for the diameter and depth. An
  elongated pit's diameter given as ``135x195`` is read as the area-equivalent diameter of
  that ellipse, sqrt(135 * 195) m, comparable to the map's ``diameter_m``. It is
  recognised by that shift: a header whose first two names are longitude and latitude
  over a first data row whose first cell is not a number.
* a plain CSV with a header naming the latitude (``lat``/``latitude``) and longitude
  (``lon``/``lon_e``/``longitude``) columns, case-insensitively (a ``:type`` suffix as
  MGC3 writes it is ignored); ``id``, ``type``, ``priority``, ``diameter_m``, ``depth_m``
  and ``comment`` are read where present. A row without an id gets ``row<line>``.

Longitudes come out 0..360 east, as Mars catalogues give them (-180..180 input is
accepted). Each entry keeps how precisely its position is written (``rounding_m``: half a
unit of the last decimal of its latitude and longitude, on the ground): MGC3 writes most
positions to 4 or 5 decimals (under 6 m) but 33 of its 1 062 to 2 (up to 0.005 degrees,
296 m), and ``compare`` widens the radius of those entries by that much. A row that cannot be read is a :class:`DatasetError` naming the file and line,
in both shapes: a catalogue that silently lost rows would make every "missed" count
wrong. Only blank lines are passed over. In MGC3, cells past the eighth are an unquoted
comma in the comment (the last column) and are joined back into it.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from al_loop.data.mars import MARS_RADIUS_M
from al_loop.errors import DatasetError

MISSING = {"", "n/a", "na", "nan", "none", "null", "-"}
MGC3_COLUMNS = 8
LAT_NAMES = ("lat", "latitude", "centroid_lat")
LON_NAMES = ("lon_e", "lon", "longitude", "long", "centroid_lon_e")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class CatalogueEntry:
    """One catalogued point: planetocentric latitude, longitude 0..360 east."""

    id: str
    lon_e: float
    lat: float
    type: str | None = None
    priority: int | None = None
    diameter_m: float = math.nan  # NaN: not given
    depth_m: float = math.nan  # NaN: not given ("deep" in an MGC3 comment means a minimum)
    comment: str | None = None
    rounding_m: float = 0.0  # how far the written position may be from the one meant: its last decimal's half unit


def rounding_m(lat_cell: str, lon_cell: str, lat: float) -> float:
    """The ground distance half a unit of the last written decimal of a latitude and a longitude
    can hide, in metres on the Mars sphere (a longitude's shrinks with cos(latitude))."""
    def half_unit(cell: str) -> float:
        text = cell.strip().lower().split("e")[0]
        decimals = len(text.split(".", 1)[1]) if "." in text else 0
        return 0.5 * 10.0 ** -decimals

    degree = MARS_RADIUS_M * math.pi / 180.0
    return math.hypot(half_unit(lat_cell) * degree, half_unit(lon_cell) * degree * math.cos(math.radians(lat)))


def read_catalogue(path: str | Path) -> list[CatalogueEntry]:
    """Every entry of an MGC3-shaped or plain lat/lon CSV (see the module docstring);
    a :class:`DatasetError` naming the file (and line) for anything unreadable."""
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DatasetError(f"{path}: an empty catalogue (no header, no rows)")
    (_, header), data = rows[0], rows[1:]
    if is_mgc3(header, data[0][1] if data else None):
        return [_mgc3_entry(path, line, cells) for line, cells in data]
    lat_col, lon_col, optional = _plain_columns(path, header)
    return [_plain_entry(path, line, cells, lat_col, lon_col, optional) for line, cells in data]


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells as written) of every non-blank row; the line is where the row starts."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such catalogue file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows, line = [], 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    rows.append((line, cells))
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: line {line}: not readable as CSV ({exc})") from None
    return rows


def _name(cell: str) -> str:
    """A header name as compared: lower case, without MGC3's ``:string`` type suffix."""
    return cell.split(":", 1)[0].strip().lower()


def is_mgc3(header: list[str], first_row: list[str] | None) -> bool:
    """The MGC3 shape: a header that names longitude, latitude first, over data whose first
    cell is an id (APC001, CC0001), not a number - the header shifted by one column."""
    names = [_name(c) for c in header]
    if len(names) < 3 or names[0] not in LON_NAMES or names[1] not in LAT_NAMES:
        return False
    return first_row is not None and not _NUMBER.match(first_row[0].strip())


def _mgc3_entry(path: Path, line: int, raw: list[str]) -> CatalogueEntry:
    cells = [c.strip() for c in raw]
    if len(cells) < MGC3_COLUMNS - 1:
        raise DatasetError(f"{path}: line {line}: {len(cells)} columns, an MGC3 row has {MGC3_COLUMNS} (id, longitude, "
                           "latitude, type, priority, diameter, depth, comment)")
    comment = ",".join(raw[MGC3_COLUMNS - 1:])  # an unquoted comma in the last column, kept as written
    lat = _latitude(path, line, cells[2])
    return CatalogueEntry(
        id=_required(path, line, cells[0], "id"),
        lon_e=_longitude(path, line, cells[1]), lat=lat,
        type=_text(cells[3]), priority=_integer(path, line, cells[4], "priority"),
        diameter_m=_diameter(path, line, cells[5]), depth_m=_float(path, line, cells[6], "depth"),
        comment=_text(comment), rounding_m=rounding_m(cells[2], cells[1], lat))


def _plain_columns(path: Path, header: list[str]) -> tuple[int, int, dict[str, int]]:
    """(latitude column, longitude column, {field: column} of the optional fields present)."""
    names = [_name(c) for c in header]
    lat_col, lon_col = _find(names, LAT_NAMES), _find(names, LON_NAMES)
    if lat_col is None or lon_col is None:
        raise DatasetError(f"{path}: neither the MGC3 shape (id, longitude, latitude, ... by position) nor a CSV with "
                           f"a header naming 'lat' and 'lon' (or lon_e/longitude/latitude); its header is {header}")
    aliases = {"id": ("id", "name", "cat_id", "label"), "type": ("type", "typecode", "class"),
               "priority": ("priority",), "diameter_m": ("diameter_m", "diameter", "apc_diameter"),
               "depth_m": ("depth_m", "depth", "apc_depth"), "comment": ("comment", "comments", "note")}
    optional = {field: col for field, choices in aliases.items() if (col := _find(names, choices)) is not None}
    return lat_col, lon_col, optional


def _find(names: list[str], choices: tuple[str, ...]) -> int | None:
    for choice in choices:
        if choice in names:
            return names.index(choice)
    return None


def _plain_entry(path: Path, line: int, raw: list[str], lat_col: int, lon_col: int,
                 optional: dict[str, int]) -> CatalogueEntry:
    cells = [c.strip() for c in raw]

    def cell(col: int | None) -> str:
        return cells[col] if col is not None and col < len(cells) else ""

    if max(lat_col, lon_col) >= len(cells):
        raise DatasetError(f"{path}: line {line}: {len(cells)} columns, too few to hold the latitude and longitude")
    lat = _latitude(path, line, cells[lat_col])
    return CatalogueEntry(
        id=_text(cell(optional.get("id"))) or f"row{line}",
        lon_e=_longitude(path, line, cells[lon_col]), lat=lat, rounding_m=rounding_m(cells[lat_col], cells[lon_col], lat),
        type=_text(cell(optional.get("type"))), priority=_integer(path, line, cell(optional.get("priority")), "priority"),
        diameter_m=_diameter(path, line, cell(optional.get("diameter_m"))),
        depth_m=_float(path, line, cell(optional.get("depth_m")), "depth"), comment=_text(cell(optional.get("comment"))))


def _text(cell: str) -> str | None:
    return None if cell.strip().lower() in MISSING else cell.strip()


def _required(path: Path, line: int, cell: str, what: str) -> str:
    value = _text(cell)
    if value is None:
        raise DatasetError(f"{path}: line {line}: no {what}")
    return value


def _float(path: Path, line: int, cell: str, what: str) -> float:
    if _text(cell) is None:
        return math.nan
    if not _NUMBER.match(cell):
        raise DatasetError(f"{path}: line {line}: the {what} {cell!r} is not a number (nor n/a)")
    return float(cell)


def _diameter(path: Path, line: int, cell: str) -> float:
    """Metres; ``AxB`` (an elongated pit's axes) -> sqrt(A * B), the ellipse's area-equivalent diameter."""
    axes = cell.lower().split("x")
    if len(axes) == 2 and all(_NUMBER.match(a.strip()) for a in axes):
        return math.sqrt(float(axes[0]) * float(axes[1]))
    return _float(path, line, cell, "diameter")


def _integer(path: Path, line: int, cell: str, what: str) -> int | None:
    value = _float(path, line, cell, what)
    if math.isnan(value):
        return None
    if value != int(value):
        raise DatasetError(f"{path}: line {line}: the {what} {cell!r} is not a whole number")
    return int(value)


def _latitude(path: Path, line: int, cell: str) -> float:
    value = _float(path, line, cell, "latitude")
    if not -90.0 <= value <= 90.0:  # NaN fails too
        raise DatasetError(f"{path}: line {line}: latitude {cell!r} is not within -90..90 degrees")
    return value


def _longitude(path: Path, line: int, cell: str) -> float:
    """0..360 east, from 0..360 or -180..180."""
    value = _float(path, line, cell, "longitude")
    if not -180.0 <= value <= 360.0:
        raise DatasetError(f"{path}: line {line}: longitude {cell!r} is neither within 0..360 east nor -180..180")
    return value % 360.0
