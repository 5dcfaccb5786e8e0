"""``al-loop candidates``: a pit map becomes a list of targets to look at and to image again.

**Input.** Any polygon (or point) layer in any CRS on Mars, read by compare's reader
(:mod:`al_loop.science.pit_layer`: positions, diameters and every field, in Mars lon/lat): the
map's ``pits_lonlat``, ``measure``'s ``measured`` (in the product's CRS), ``compare``'s
``pits_compared``, or a user's outlines. Columns are read by the names those commands write
(first present wins): ``pit_id``; ``product_id``; ``confidence``; type from
``type``/``pit_type``/``class``; ``depth_m``, ``depth_err_m``; ``d_over_D``/``depth_diameter``;
flags from ``touches_edge``, ``depth_is_minimum`` and ``ambiguous``.

**Catalogue.** With a catalogue each pit is matched as ``compare`` matches (its code, not a copy:
:func:`al_loop.science.compare.match_one_to_one`, one to one within compare's size-scaled radius,
or ``radius_m`` for every pair); matched pits are catalogued and left out unless ``keep_all``,
which keeps them and names their entry; a pit whose pairing was ``ambiguous`` says so in its
flags. Every other row names its nearest entry and the distance. ``compare``'s own output already
carries its decision (``status``, ``cat_id``, ``distance_m``), used when no catalogue is given.

**Priority score** (0..1, higher first)::

    score = 0.35 * confidence + 0.25 * not_catalogued + 0.25 * depth + 0.15 * type

``confidence`` as the map gives it (0.5 when the layer has none); ``not_catalogued`` 1 or 0 (1
without a catalogue); ``depth`` = min(1, (d/D) / 0.5), so a pit as deep as half its width (a
skylight's) counts fully, 0.25 when the depth is unknown; ``type`` 1 for a name holding
"skylight", "cave" or "collapse", 0.5 for any other or none. HiWish's ``PRIORITY_OVERALL`` is
``5 - min(4, floor(5 * score))``: 1 (most wanted, score >= 0.8) to 5.

**Outputs** in the folder: ``candidates.gpkg`` (layer ``candidates``, Mars lon/lat),
``candidates.csv``, ``chips/<id>.png`` (:mod:`al_loop.targets.chips`), ``index.html``
(:mod:`al_loop.targets.page`) and, when asked, the HiWish CSV (:mod:`al_loop.targets.hiwish`).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.catalogue import CatalogueEntry, read_catalogue
from al_loop.data.mars import lonlat_wkt
from al_loop.data.vectors import write_layer
from al_loop.errors import UsageError
from al_loop.science.compare import Matches, RadiusRule, match_one_to_one, nearest
from al_loop.science.pit_layer import PitLayer, lon180, read_pit_layer
from al_loop.targets.coverage import Coverage, CoverageIndex

WEIGHTS = {"confidence": 0.35, "not_catalogued": 0.25, "depth": 0.25, "type": 0.15}
DEEP_D_OVER_D = 0.5
UNKNOWN_DEPTH_TERM = 0.25
NEUTRAL = 0.5
CAVE_WORDS = ("skylight", "cave", "collapse")
FLAG_COLUMNS = ("touches_edge", "depth_is_minimum", "ambiguous")
ALIASES = {"pit_id": ("pit_id", "id"), "product_id": ("product_id",), "confidence": ("confidence",),
           "type": ("type", "pit_type", "class"), "depth_m": ("depth_m",),
           "depth_err_m": ("depth_err_m",), "d_over_D": ("d_over_D", "depth_diameter"), "status": ("status",),
           "cat_id": ("cat_id",), "distance_m": ("distance_m",)}


# ---- records ---------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One row of ``candidates.csv``."""

    id: str
    product_id: str
    lat: float
    lon_e: float
    confidence: float
    type: str
    diameter_m: float
    depth_m: float
    depth_err_m: float
    d_over_D: float
    flags: str
    catalogued: bool
    cat_id: str
    cat_distance_m: float
    score: float = math.nan
    chip: str = ""
    coverage: Coverage | None = None

    @property
    def priority_overall(self) -> int:
        """HiWish's 1 (most wanted) .. 5, from the score."""
        return 5 - min(4, int(math.floor(5 * max(0.0, min(1.0, self.score)))))

    def row(self) -> dict:
        base = {"id": self.id, "product_id": self.product_id, "lat": self.lat, "lon_e": self.lon_e,
                "confidence": self.confidence, "type": self.type, "diameter_m": self.diameter_m, "depth_m": self.depth_m,
                "depth_err_m": self.depth_err_m, "d_over_D": self.d_over_D, "flags": self.flags,
                "catalogued": self.catalogued, "cat_id": self.cat_id, "cat_distance_m": self.cat_distance_m,
                "score": self.score, "priority_overall": self.priority_overall, "chip": self.chip}
        return {**base, **(self.coverage or Coverage()).columns(), "covered_by_index": self.coverage is not None}


@dataclass
class CandidatesReport:
    candidates: list[Candidate] = field(default_factory=list)
    products: list = field(default_factory=list)  # science.coverage_record.CoverageRecord per product given
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    catalogued_left_out: int = 0


# ---- the numeric middle ----------------------------------------------------------------------------------------


def type_term(name: str) -> float:
    return 1.0 if any(word in name.lower() for word in CAVE_WORDS) else NEUTRAL


def depth_term(d_over_D: float) -> float:
    return min(1.0, d_over_D / DEEP_D_OVER_D) if math.isfinite(d_over_D) and d_over_D >= 0 else UNKNOWN_DEPTH_TERM


def priority_score(confidence: float, catalogued: bool, d_over_D: float, type_name: str) -> float:
    """The documented score (module docstring), in 0..1."""
    c = confidence if math.isfinite(confidence) else NEUTRAL
    return (WEIGHTS["confidence"] * min(1.0, max(0.0, c)) + WEIGHTS["not_catalogued"] * (0.0 if catalogued else 1.0)
            + WEIGHTS["depth"] * depth_term(d_over_D) + WEIGHTS["type"] * type_term(type_name))


def match_catalogue(pits: PitLayer, entries: Sequence[CatalogueEntry], radius_m: float | None) -> Matches:
    """compare's one-to-one pairing of the layer's pits with the catalogue, under compare's radius
    rule (``radius_m`` None) or one fixed radius."""
    return match_one_to_one(np.column_stack([pits.lon_e, pits.lat]), pits.diameter_m,
                            np.array([(e.lon_e, e.lat) for e in entries], float).reshape(-1, 2),
                            RadiusRule(fixed_m=radius_m), np.array([e.rounding_m for e in entries], float))


# ---- the pit layer's fields -----------------------------------------------------------------------------------


def pit_fields(pits: PitLayer) -> tuple[dict[str, np.ndarray], list[str]]:
    """The fields the rows use, by the ALIASES' names (first column present wins; ``pit_id`` 1..N when
    the layer has none), and each pit's set flags joined with ``;``."""
    columns, n = pits.columns, len(pits)
    fields = {key: np.asarray(columns[next(c for c in names if c in columns)])
              for key, names in ALIASES.items() if any(c in columns for c in names)}
    fields.setdefault("pit_id", np.arange(1, n + 1))
    flags = [";".join(f for f in FLAG_COLUMNS if f in columns and _truthy(columns[f][i])) for i in range(n)]
    return fields, flags


def _truthy(value) -> bool:
    if isinstance(value, (bytes, str)):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


# ---- the command -----------------------------------------------------------------------------------------------


@dataclass
class CandidatesRequest:
    """What ``al-loop candidates`` was asked: paths as given (checked by :func:`find_candidates`)."""

    pits: Path
    out: Path
    layer: str | None = None
    products: Sequence[Path] = ()
    catalogue: Path | None = None
    index: Path | None = None
    hiwish: Path | None = None
    keep_all: bool = False
    radius_m: float | None = None  # None: compare's size rule
    progress: bool = False


def find_candidates(request: CandidatesRequest) -> CandidatesReport:
    """Read, match, score, look up coverage, cut chips and write every output (module docstring).
    Everything that can be refused (the layer, the catalogue, the index) is read before anything is written."""
    from al_loop.targets import chips, hiwish, page

    _check(request)
    report = CandidatesReport()
    pits = read_pit_layer(request.pits, request.layer)
    report.warnings = list(pits.warnings)
    entries = read_catalogue(request.catalogue) if request.catalogue else []
    matches = match_catalogue(pits, entries, request.radius_m) if entries else None
    coverage = CoverageIndex.from_folder(request.index) if request.index else None
    candidates, rows = build_candidates(pits, entries, matches, request.keep_all, report)
    for candidate in candidates:
        if coverage is not None:
            candidate.coverage = coverage.at(candidate.lat, candidate.lon_e, candidate.diameter_m, candidate.depth_m)
    order = sorted(range(len(candidates)), key=lambda k: -candidates[k].score)
    report.candidates = [candidates[k] for k in order]
    outlines = {candidates[k].id: pits.geometries[rows[k]] for k in order}
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    found = matches.matched_entries if matches is not None else np.zeros(len(entries), bool)
    report.products, more = chips.write_chips(report.candidates, outlines, request.products, out / "chips", entries, found)
    report.warnings += more
    report.outputs += [write_gpkg(out / "candidates.gpkg", report.candidates, outlines),
                       write_csv(out / "candidates.csv", report.candidates)]
    report.outputs.append(page.write_page(out / "index.html", report, request))
    if request.hiwish:
        report.outputs.append(hiwish.write_hiwish(Path(request.hiwish), report.candidates))
    return report


def _check(request: CandidatesRequest) -> None:
    if request.radius_m is not None and (not math.isfinite(request.radius_m) or request.radius_m <= 0):
        raise UsageError(f"the matching radius must be a distance in metres above 0, got {request.radius_m}",
                         param="radius_m")
    for flag, path in (("--catalogue", request.catalogue), *(("--product", p) for p in request.products)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    if request.out.exists() and not request.out.is_dir():
        raise UsageError(f"{request.out} is a file: the candidates need a folder", param="out")


def build_candidates(pits: PitLayer, entries: Sequence[CatalogueEntry], matches: Matches | None, keep_all: bool,
                     report: CandidatesReport) -> tuple[list[Candidate], list[int]]:
    """One Candidate per pit not in the catalogue (every pit with ``keep_all``), scored; and the
    layer row of each."""
    f, flags = pit_fields(pits)
    n = len(pits)
    catalogued, cat_id, distance = _catalogue_columns(pits, entries, matches, f)
    out, rows = [], []
    for i in range(n):
        if catalogued[i] and not keep_all:
            report.catalogued_left_out += 1
            continue
        ambiguous = matches is not None and bool(matches.ambiguous[i])
        candidate = Candidate(
            id=str(f["pit_id"][i]), product_id=_text(f, "product_id", i), lat=float(pits.lat[i]), lon_e=float(pits.lon_e[i]),
            confidence=_real(f, "confidence", i), type=_text(f, "type", i) or "pit", diameter_m=float(pits.diameter_m[i]),
            depth_m=_real(f, "depth_m", i), depth_err_m=_real(f, "depth_err_m", i), d_over_D=_d_over_d(f, i, float(pits.diameter_m[i])),
            flags=";".join(x for x in (flags[i], "ambiguous" if ambiguous and "ambiguous" not in flags[i] else "") if x),
            catalogued=bool(catalogued[i]), cat_id=str(cat_id[i] or ""),
            cat_distance_m=float(distance[i]) if np.isfinite(distance[i]) else math.nan)
        candidate.score = priority_score(candidate.confidence, candidate.catalogued, candidate.d_over_D, candidate.type)
        out.append(candidate)
        rows.append(i)
    return out, rows


def _catalogue_columns(pits: PitLayer, entries: Sequence[CatalogueEntry], matches: Matches | None,
                       f: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(catalogued (N,) bool, the matched or else nearest entry's id (N,), its distance (N,) m)."""
    n = len(pits)
    if matches is None:  # compare's output decided already; anything else is not catalogued
        status = f.get("status", np.full(n, "", dtype=object))
        ids = np.array([str(v or "") for v in f.get("cat_id", np.full(n, "", dtype=object))], dtype=object)
        return np.array([str(s) == "matched" for s in status]), ids, np.asarray(f.get("distance_m", np.full(n, np.nan)), float)
    near, near_m = nearest(pits.lat, pits.lon_e, np.array([e.lat for e in entries]), np.array([e.lon_e for e in entries]))
    catalogued = matches.entry >= 0
    index = np.where(catalogued, matches.entry, near)
    distance = np.where(catalogued, matches.distance_m, near_m)
    return catalogued, np.array([entries[j].id if j >= 0 else "" for j in index], dtype=object), distance


def _text(fields: dict, key: str, i: int) -> str:
    values = fields.get(key)
    value = None if values is None else values[i]
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _real(fields: dict, key: str, i: int) -> float:
    values = fields.get(key)
    try:
        return math.nan if values is None or values[i] is None else float(values[i])
    except (TypeError, ValueError):
        return math.nan


def _d_over_d(fields: dict, i: int, diameter: float) -> float:
    ratio = _real(fields, "d_over_D", i)
    if math.isfinite(ratio):
        return ratio
    depth = _real(fields, "depth_m", i)
    return depth / diameter if math.isfinite(depth) and math.isfinite(diameter) and diameter > 0 else math.nan


# ---- outputs ---------------------------------------------------------------------------------------------------


def write_gpkg(path: Path, candidates: list[Candidate], outlines: dict) -> Path:
    """``candidates`` in Mars lon/lat: the pits' outlines (points where the layer had other shapes)."""
    import shapely

    geometries = [outlines.get(c.id) for c in candidates]
    if not all(g is not None and g.geom_type in ("Polygon", "MultiPolygon") for g in geometries):
        geometries = [shapely.Point(float(lon180(c.lon_e)), c.lat) for c in candidates]
        kind = "Point"
    else:
        kind = "MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geometries) else "Polygon"
    rows = [c.row() for c in candidates]
    columns = {name: _column([r[name] for r in rows]) for name in rows[0]} if rows else {}
    partial = path.with_name(f".{path.stem}.partial.gpkg")
    partial.unlink(missing_ok=True)
    write_layer(partial, "candidates", geometries, columns, lonlat_wkt(), kind)
    partial.replace(path)
    return path


def _column(values: list) -> np.ndarray:
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        array = np.array(values, dtype=float)
        return np.ma.masked_array(np.nan_to_num(array), mask=~np.isfinite(array))
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def write_csv(path: Path, candidates: list[Candidate]) -> Path:
    rows = [c.row() for c in candidates]
    names = list(rows[0]) if rows else column_names()
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return path


def _csv_value(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(round(value, 6))
    return value


def column_names() -> list[str]:
    """The columns of a candidate's row, in order (what an empty list's CSV header holds)."""
    nan = math.nan
    return list(Candidate("", "", nan, nan, nan, "", nan, nan, nan, nan, "", False, "", nan).row())
