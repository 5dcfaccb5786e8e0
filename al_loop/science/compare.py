"""``al-loop compare``: a map's pits against a catalogue of points (MGC3 or a lat/lon CSV).

Distances are great-circle (haversine) distances on the Mars sphere of radius
3 396 190 m (the IAU 2015 mean radius, ``mars.MARS_RADIUS_M``): catalogue positions are
good to a hundred metres at best, so the sphere's error against an ellipsoid (under 0.6 %)
does not matter. The haversine depends on longitudes only through sines of their
differences, so 0..360 east, -180..180 and a pair across either meridian need no care.

**One to one.** A pit and a catalogue entry are candidates for the same feature when their
distance is within the radius (below). Among candidates, pits and entries are paired one to one
(the Hungarian method, ``scipy.optimize.linear_sum_assignment``, on each connected group of
candidates): as many pairs as possible, then the least total distance. Two pits never match one
entry, and one pit never matches two: a catalogued pair the map outlined as one pit is one
match and one missed entry. A pit with a second candidate entry in range, or whose entry has a
second pit in range, is ``ambiguous`` (the pairing chose; a human should look).

**The radius** (:class:`RadiusRule`): ``max(D, 150 m) + the entry's rounding``, D the pit's
diameter. One diameter: a catalogue point placed anywhere on a pit, or on the ground just around
its rim, is that pit. 150 m: the floor for the catalogue's own position error. MGC3 positions
were picked on THEMIS and CTX images ("approximate (up to a few hundred metres)" says its
README); CTX mosaics are tied to THEMIS infrared control at 100 m/px, so 1.5 THEMIS pixels.
The entry's rounding: half a unit of the last decimal its position is written with (3 m for
most MGC3 entries, 296 m for the 33 written to two decimals). So a 40 m pit matches an entry
within 153 m, never one 250 m away; a 300 m pit one within 303 m. ``--radius-m`` replaces the
rule by one fixed radius for every pair.

Each pit is ``matched`` (with its entry's id, type, priority, diameter, depth, the distance and
the radius it was held to) or ``new``. A catalogue entry inside a mapped product's footprint
that no pit matched is ``missed`` (with the nearest pit's distance, and whether a pit was in
range but paired with another entry). Entries outside every footprint are left aside: the
map never looked there. A footprint with no catalogue entry inside is said so, with the
nearest entry and its distance from the footprint's edge.

Pits are read by :mod:`al_loop.science.pit_layer` (any layer, any CRS on Mars, reprojected;
every field kept and carried into ``pits_compared``). Footprints are the map's ``valid_<product>``
layers (its valid pixels under kept tiles), else its ``tiles_<product>`` layers, and for products
passed as ``products`` the product's own valid pixels (a decimated read, polygonized); either is
kept in the product's CRS, where it is exact, and a catalogue point is tested there. Outputs: a
GeoPackage in Mars lon/lat (``pits_compared``, ``catalogue_missed``) and an optional summary JSON.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.catalogue import CatalogueEntry, read_catalogue
from al_loop.data.files import atomic_write
from al_loop.data.mars import MARS_RADIUS_M, from_lonlat, lonlat_wkt, not_on_mars, to_lonlat
from al_loop.data.products import open_product, read_valid_mask
from al_loop.data.tiling import safe_name
from al_loop.data.vectors import write_layer
from al_loop.errors import ProductError, UsageError
from al_loop.science.pit_layer import PitLayer, list_layers, lon180, read_pit_layer

TILES_PREFIX = "tiles_"
VALID_PREFIX = "valid_"
FOOTPRINT_OVERVIEW_SIDE = 1024  # a product's valid pixels are polygonized at this side at most
CHUNK = 2048  # pits per block of the distance matrix: (CHUNK, M) float64 at a time
POSITION_FLOOR_M = 150.0  # the catalogue's position error: 1.5 THEMIS IR pixels (see the module docstring)
RADIUS_DIAMETERS = 1.0  # a catalogue point within one pit diameter of the pit's centre is on or just by it


# ---- the radius rule and the one-to-one match (pure: what `compare` and `candidates` share) -------------------


@dataclass(frozen=True)
class RadiusRule:
    """How far a pit and an entry may be and still be one feature: ``fixed_m`` for every pair when
    given, else ``max(diameters * D, floor_m) + the entry's rounding`` (D NaN: the floor)."""

    floor_m: float = POSITION_FLOOR_M
    diameters: float = RADIUS_DIAMETERS
    fixed_m: float | None = None

    def base_m(self, diameter_m: np.ndarray) -> np.ndarray:
        """(N,) the pit's own part of the radius."""
        d = np.asarray(diameter_m, float)
        if self.fixed_m is not None:
            return np.full(d.shape, float(self.fixed_m))
        return np.maximum(np.nan_to_num(self.diameters * d, nan=0.0), self.floor_m)

    def pair_m(self, diameter_m: np.ndarray, rounding_m: np.ndarray) -> np.ndarray:
        """(N, M) the radius of every pit-entry pair (``rounding_m`` (M,): each entry's)."""
        base = self.base_m(diameter_m)[:, None]
        return base + (0.0 if self.fixed_m is not None else np.asarray(rounding_m, float)[None, :])

    def describe(self) -> str:
        if self.fixed_m is not None:
            return f"{self.fixed_m:g} m for every pair (a fixed radius)"
        return (f"max({self.diameters:g} x the pit's diameter, {self.floor_m:g} m) + half the last decimal of the "
                "entry's position")


@dataclass(frozen=True)
class Matches:
    """The one-to-one pairing of N pits and M entries."""

    entry: np.ndarray  # (N,) int64: the matched entry's index, -1 for none
    distance_m: np.ndarray  # (N,) float64: to the matched entry, NaN for none
    radius_m: np.ndarray  # (N,) float64: the radius the pit was held to (its pair's, else its own part)
    candidates: np.ndarray  # (N,) int64: entries within each pit's radius
    ambiguous: np.ndarray  # (N,) bool: a second entry in range, or its entry has a second pit in range
    pits_in_range: np.ndarray  # (M,) int64: pits within each entry's radius
    nearest_pit_m: np.ndarray  # (M,) float64: to the nearest pit (inf when there is none)

    @property
    def matched_entries(self) -> np.ndarray:
        """(M,) bool: entries some pit matched."""
        out = np.zeros(len(self.pits_in_range), bool)
        out[self.entry[self.entry >= 0]] = True
        return out


def match_one_to_one(pit_lonlat: np.ndarray, pit_diameter_m: np.ndarray, cat_lonlat: np.ndarray,
                     rule: RadiusRule = RadiusRule(), cat_rounding_m: np.ndarray | None = None) -> Matches:
    """Pair N pits with M catalogue entries one to one: ``pit_lonlat`` (N, 2) and ``cat_lonlat``
    (M, 2) as (longitude, latitude) degrees, any convention; ``pit_diameter_m`` (N,) (NaN: unknown);
    ``cat_rounding_m`` (M,) each entry's position rounding (zeros when None). Candidates are pairs
    within ``rule``'s radius; the pairing has as many pairs as possible, then the least total distance."""
    pits, cat = np.asarray(pit_lonlat, float).reshape(-1, 2), np.asarray(cat_lonlat, float).reshape(-1, 2)
    n, m = len(pits), len(cat)
    rounding = np.zeros(m) if cat_rounding_m is None else np.asarray(cat_rounding_m, float)
    rows, cols, dist, nearest_pit = _candidate_pairs(pits, np.asarray(pit_diameter_m, float), cat, rule, rounding)
    candidates = np.bincount(rows, minlength=n).astype(np.int64)
    in_range = np.bincount(cols, minlength=m).astype(np.int64)
    entry, distance = _assign(rows, cols, dist, n, m)
    crowded = np.zeros(n, bool)
    np.logical_or.at(crowded, rows, in_range[cols] > 1)
    base = rule.base_m(pit_diameter_m)
    if m and rule.fixed_m is None:
        base = np.where(entry >= 0, base + rounding[np.maximum(entry, 0)], base)
    return Matches(entry, distance, base, candidates, (candidates > 1) | crowded, in_range, nearest_pit)


def _candidate_pairs(pits: np.ndarray, diameter: np.ndarray, cat: np.ndarray, rule: RadiusRule,
                     rounding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pit index, entry index, distance) of every pair within its radius, and (M,) each entry's
    nearest pit; blocks of ``CHUNK`` pits bound the memory."""
    rows, cols, dist = [], [], []
    nearest_pit = np.full(len(cat), np.inf)
    if len(cat) == 0 or len(pits) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), nearest_pit
    for start in range(0, len(pits), CHUNK):
        block = great_circle_m(pits[start:start + CHUNK, 1, None], pits[start:start + CHUNK, 0, None],
                               cat[None, :, 1], cat[None, :, 0])
        nearest_pit = np.minimum(nearest_pit, block.min(axis=0))
        i, j = np.nonzero(block <= rule.pair_m(diameter[start:start + CHUNK], rounding))
        rows.append(i + start)
        cols.append(j)
        dist.append(block[i, j])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dist), nearest_pit


def _assign(rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The most pairs, then the least total distance, on each connected group of candidates."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    entry, distance = np.full(n, -1, np.int64), np.full(n, np.nan)
    if not len(rows):
        return entry, distance
    graph = coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(n + m, n + m))
    _, group = connected_components(graph, directed=False)
    for g in np.unique(group[rows]):
        pairs = np.flatnonzero(group[rows] == g)
        pit_ids, r = np.unique(rows[pairs], return_inverse=True)
        cat_ids, c = np.unique(cols[pairs], return_inverse=True)
        # a cost above any sum of real distances: the solver pairs as many candidates as it can first
        cost = np.full((len(pit_ids), len(cat_ids)), 1.0 + 2.0 * float(dist[pairs].sum()) + 1.0)
        cost[r, c] = dist[pairs]
        feasible = np.zeros(cost.shape, bool)
        feasible[r, c] = True
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if feasible[i, j]:
                entry[pit_ids[i]], distance[pit_ids[i]] = cat_ids[j], cost[i, j]
    return entry, distance


# ---- records ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """Where a product holds data, in its own CRS (exact there, whatever the meridian)."""

    product_id: str
    crs_wkt: str
    polygon: object  # shapely (Multi)Polygon in the product's CRS
    source: str  # the layer or product file it came from


@dataclass(frozen=True)
class PitComparison:
    """One pit: ``matched`` (entry and distance) or ``new`` (entry None, distance NaN)."""

    status: str
    pit_id: int
    product_id: str
    lat: float
    lon_e: float
    diameter_m: float
    entry: CatalogueEntry | None
    distance_m: float
    radius_m: float  # the radius it was held to
    candidates: int  # catalogue entries within it
    ambiguous: bool

    def row(self) -> dict:
        e = self.entry
        return {"status": self.status, "pit_id": self.pit_id, "product_id": self.product_id, "lat": self.lat,
                "lon_e": self.lon_e, "diameter_m": _finite(self.diameter_m), "cat_id": e and e.id,
                "cat_type": e and e.type, "cat_priority": e and e.priority,
                "cat_diameter_m": _finite(e.diameter_m) if e else None, "cat_depth_m": _finite(e.depth_m) if e else None,
                "cat_comment": e and e.comment, "distance_m": _finite(self.distance_m), "radius_m": self.radius_m,
                "candidates": self.candidates, "ambiguous": self.ambiguous}


@dataclass(frozen=True)
class MissedEntry:
    """A catalogue entry inside ``product_id``'s footprint that no pit matched."""

    entry: CatalogueEntry
    product_id: str
    nearest_pit_m: float  # to the nearest pit of the whole map (inf: the map has none)
    pits_in_range: int  # pits within its radius, all paired with other entries

    def row(self) -> dict:
        e = self.entry
        return {"status": "missed", "cat_id": e.id, "cat_type": e.type, "cat_priority": e.priority,
                "cat_diameter_m": _finite(e.diameter_m), "cat_depth_m": _finite(e.depth_m), "cat_comment": e.comment,
                "lat": e.lat, "lon_e": e.lon_e, "product_id": self.product_id, "nearest_pit_m": _finite(self.nearest_pit_m),
                "ambiguous": self.pits_in_range > 0}


@dataclass(frozen=True)
class EmptyFootprint:
    """A mapped product with no catalogue entry inside: the nearest entry, and how far from its edge."""

    product_id: str
    nearest_id: str | None  # None: the catalogue is empty
    nearest_m: float

    def row(self) -> dict:
        return {"product_id": self.product_id, "nearest_cat_id": self.nearest_id, "nearest_m": _finite(self.nearest_m)}

    def message(self) -> str:
        if self.nearest_id is None:
            return f"{self.product_id}: no catalogue entry inside its footprint (the catalogue is empty)"
        return (f"{self.product_id}: no catalogue entry inside its footprint; the nearest is {self.nearest_id}, "
                f"{self.nearest_m / 1000:.3g} km from its edge")


@dataclass
class CompareReport:
    rule: RadiusRule
    pits: list[PitComparison] = field(default_factory=list)
    missed: list[MissedEntry] = field(default_factory=list)
    empty: list[EmptyFootprint] = field(default_factory=list)  # footprints with no entry inside
    footprints: list[str] = field(default_factory=list)  # product ids with a footprint
    catalogue_entries: int = 0
    inside_footprints: int = 0  # catalogue entries inside some footprint
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def radius_m(self) -> float | None:
        """The fixed radius (``--radius-m``), None when the size rule decides per pair."""
        return self.rule.fixed_m

    @property
    def matched(self) -> list[PitComparison]:
        return [p for p in self.pits if p.status == "matched"]

    @property
    def new(self) -> list[PitComparison]:
        return [p for p in self.pits if p.status == "new"]

    @property
    def counts(self) -> dict[str, int]:
        return {"matched": len(self.matched), "new": len(self.new), "missed": len(self.missed),
                "ambiguous": sum(p.ambiguous for p in self.pits)}

    def summary(self) -> dict:
        """What the summary JSON holds: the counts, the rule, then every row by status."""
        return {"radius_m": self.radius_m, "radius_rule": self.rule.describe(), "counts": self.counts,
                "catalogue_entries": self.catalogue_entries, "inside_footprints": self.inside_footprints,
                "footprints": self.footprints, "empty_footprints": [e.row() for e in self.empty],
                "matched": [p.row() for p in self.matched], "new": [p.row() for p in self.new],
                "missed": [m.row() for m in self.missed], "warnings": self.warnings}


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ---- distances on the sphere -----------------------------------------------------------------------------------


def great_circle_m(lat1, lon1, lat2, lon2, radius: float = MARS_RADIUS_M) -> np.ndarray:
    """Haversine distance in metres between points in degrees (any longitude convention),
    broadcast as numpy broadcasts its arguments."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2.0 * radius * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def nearest(lat: np.ndarray, lon: np.ndarray, to_lat: np.ndarray, to_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of N points, the index (N,) int64 of the nearest of M others and its distance
    (N,) in metres; -1 and inf when M is 0. Blocks of ``CHUNK`` rows bound the memory."""
    index, distance = np.full(len(lat), -1, np.int64), np.full(len(lat), np.inf)
    if len(to_lat) == 0:
        return index, distance
    for start in range(0, len(lat), CHUNK):
        block = great_circle_m(lat[start:start + CHUNK, None], lon[start:start + CHUNK, None], to_lat[None, :], to_lon[None, :])
        index[start:start + CHUNK] = block.argmin(axis=1)
        distance[start:start + CHUNK] = block.min(axis=1)
    return index, distance


def spherical_cap(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float]:
    """(lat, lon, radius_m) of a cap holding every point: centred on their mean direction."""
    phi, lam = np.radians(lat), np.radians(lon)
    xyz = np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).mean(axis=0)
    c_lat = float(np.degrees(np.arctan2(xyz[2], math.hypot(xyz[0], xyz[1]))))
    c_lon = float(np.degrees(np.arctan2(xyz[1], xyz[0])))
    return c_lat, c_lon, float(great_circle_m(c_lat, c_lon, lat, lon).max())


# ---- footprints ------------------------------------------------------------------------------------------------


def inside_footprints(footprints: Sequence[Footprint], lat: np.ndarray, lon_e: np.ndarray) -> np.ndarray:
    """(M,) object: the id of the first footprint holding each point, None outside all. Only
    points within the footprint's spherical cap are projected, so a projection that folds the
    far side of Mars onto the product's plane cannot place a point there."""
    import shapely

    product = np.full(len(lat), None, dtype=object)
    free = np.ones(len(lat), bool)
    for footprint in footprints:
        ring = shapely.segmentize(footprint.polygon.boundary, max(footprint.polygon.length / 512, 1e-9))
        x, y = shapely.get_coordinates(ring).T
        ring_lon, ring_lat = to_lonlat(footprint.crs_wkt, x, y)
        c_lat, c_lon, radius = spherical_cap(ring_lat, ring_lon)
        near = np.flatnonzero(free & (great_circle_m(c_lat, c_lon, lat, lon_e) <= radius * 1.01 + 100.0))
        if len(near):
            px, py = from_lonlat(footprint.crs_wkt, lon180(lon_e[near]), lat[near])
            held = near[shapely.intersects_xy(footprint.polygon, px, py)]  # the outline itself counts as inside
            product[held], free[held] = footprint.product_id, False
    return product


def read_tile_footprints(path: Path, layers: Sequence[str]) -> tuple[list[Footprint], list[str]]:
    """One footprint per mapped product: its ``valid_<product>`` layer (the valid pixels the map
    searched) where the map wrote one, else the union of its ``tiles_<product>`` outlines (which
    take in the null border of tiles kept up to 95 % null: a map made before valid_ layers)."""
    import pyogrio.raw
    import shapely

    footprints, warnings = [], []
    by_product = {name[len(TILES_PREFIX):]: name for name in layers if name.startswith(TILES_PREFIX)}
    by_product |= {name[len(VALID_PREFIX):]: name for name in layers if name.startswith(VALID_PREFIX)}
    for product_id, layer in sorted(by_product.items()):
        meta, _, wkb, _ = pyogrio.raw.read(str(path), layer=layer)
        if not meta.get("crs") or not_on_mars(_wkt(meta["crs"])):
            warnings.append(f"{path}: layer {layer} is not in a Mars CRS (a product without one?): {product_id} has "
                            "no footprint")
            continue
        outlines = [g for g in shapely.from_wkb(wkb) if g is not None]
        if outlines:
            footprints.append(Footprint(product_id, _wkt(meta["crs"]), shapely.union_all(outlines), f"{path}:{layer}"))
    return footprints, warnings


def product_footprint(path: str | Path) -> Footprint:
    """Where the product holds data, polygonized from a decimated read of its valid pixels
    (at most ``FOOTPRINT_OVERVIEW_SIDE`` a side: a HiRISE RDR's null wedges stay out)."""
    product = open_product(path)
    if not product.crs_wkt:
        raise ProductError(path, "carries no CRS: its footprint cannot be placed on Mars")
    mask = read_valid_mask(product, FOOTPRINT_OVERVIEW_SIDE)
    if not mask.valid.any():
        raise ProductError(path, "holds no valid pixels (all null): it has no footprint")
    return Footprint(product.product_id, product.crs_wkt, mask_polygon(mask.valid, mask.transform), str(path))


def mask_polygon(valid: np.ndarray, transform: tuple):
    """The True cells of ``valid`` ((h, w) bool on the grid ``transform``) as one shapely (Multi)Polygon."""
    import rasterio.features
    import shapely
    from affine import Affine

    parts = [shapely.geometry.shape(g) for g, _ in rasterio.features.shapes(valid.astype(np.uint8), mask=valid,
                                                                           transform=Affine(*transform))]
    return shapely.union_all(parts)


def _wkt(crs: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


# ---- the command -----------------------------------------------------------------------------------------------


def compare_map(pits: Path, catalogue: Path, out: Path, summary: Path | None = None, *, radius_m: float | None = None,
                products: Sequence[Path] = (), layer: str | None = None) -> CompareReport:
    """Compare the pits of ``layer`` of ``pits`` (chosen as :func:`pit_layer.choose_layer` does)
    with ``catalogue`` and write ``out`` (GeoPackage) and ``summary`` (JSON); both written whole or
    not at all, the inputs only read. ``radius_m``: one fixed radius, None for :class:`RadiusRule`."""
    pits, catalogue, out = Path(pits), Path(catalogue), Path(out)
    _check_request(pits, out, summary, radius_m, inputs=[pits, catalogue, *map(Path, products)])
    report = CompareReport(rule=RadiusRule(fixed_m=None if radius_m is None else float(radius_m)))
    mapped = read_pit_layer(pits, layer)
    entries = read_catalogue(catalogue)
    footprints, footnotes = _footprints(pits, list_layers(pits), products)
    report.warnings += mapped.warnings + footnotes + _uncovered(mapped, footprints)
    _compare(mapped, entries, footprints, report)
    report.warnings += [e.message() for e in report.empty]
    write_compared(out, mapped, report)
    report.outputs.append(out)
    if summary is not None:
        atomic_write(summary, json.dumps(report.summary(), indent=1).encode())
        report.outputs.append(Path(summary))
    return report


def _check_request(pits: Path, out: Path, summary: Path | None, radius_m: float | None, inputs: Sequence[Path]) -> None:
    if radius_m is not None and (not isinstance(radius_m, (int, float)) or not math.isfinite(radius_m) or radius_m <= 0):
        raise UsageError(f"the matching radius must be a distance in metres above 0, got {radius_m}", param="radius_m")
    if not pits.is_file():
        raise UsageError(f"{pits}: no such map file (the GeoPackage `al-loop map` wrote)")
    read = {p.resolve() for p in inputs}
    for flag, target in (("--out", out), ("--json", summary)):
        if target is not None and Path(target).resolve() in read:
            raise UsageError(f"{flag} {target} is one of the inputs: write the comparison to another file")
    if summary is not None and Path(summary).resolve() == out.resolve():
        raise UsageError(f"the summary and the comparison are both {summary}: name two files", param="json")


def _footprints(path: Path, layers: Sequence[str], products: Sequence[Path]) -> tuple[list[Footprint], list[str]]:
    """The map's footprints; a product passed by the user replaces its layer's."""
    footprints, warnings = read_tile_footprints(path, layers)
    given = [product_footprint(p) for p in products]
    named = {safe_name(f.product_id) for f in given}
    return [f for f in footprints if safe_name(f.product_id) not in named] + given, warnings


def _uncovered(mapped: PitLayer, footprints: Sequence[Footprint]) -> list[str]:
    covered = {safe_name(f.product_id) for f in footprints}
    if not footprints:
        return [("no footprint (no valid_<product> or tiles_<product> layer in the map, no --product): no catalogue "
                 "entry can be counted missed")]
    products = mapped.columns.get("product_id", np.array([], dtype=object))
    lacking = sorted({str(p) for p in products if p and safe_name(str(p)) not in covered})
    return [f"{p}: no footprint (no valid_{safe_name(p)} layer in the map): catalogue entries over it are not counted "
            "missed; pass the product with --product" for p in lacking]


def _compare(mapped: PitLayer, entries: list[CatalogueEntry], footprints: Sequence[Footprint], report: CompareReport) -> None:
    """Fill ``report`` with every pit's status, the missed entries and the empty footprints."""
    cat_lat = np.array([e.lat for e in entries], float)
    cat_lon = np.array([e.lon_e for e in entries], float)
    matches = match_one_to_one(np.column_stack([mapped.lon_e, mapped.lat]), mapped.diameter_m,
                               np.column_stack([cat_lon, cat_lat]), report.rule,
                               np.array([e.rounding_m for e in entries], float))
    ids = mapped.columns.get("pit_id")
    pit_ids = np.arange(1, len(mapped) + 1) if ids is None else np.nan_to_num(np.asarray(ids, float)).astype(np.int64)
    products = mapped.columns.get("product_id", np.full(len(mapped), "", dtype=object))
    for i in range(len(mapped)):
        j = int(matches.entry[i])
        entry = entries[j] if j >= 0 else None
        report.pits.append(PitComparison("new" if entry is None else "matched", int(pit_ids[i]), str(products[i] or ""),
                                         float(mapped.lat[i]), float(mapped.lon_e[i]), float(mapped.diameter_m[i]), entry,
                                         float(matches.distance_m[i]), float(matches.radius_m[i]),
                                         int(matches.candidates[i]), bool(matches.ambiguous[i])))
    product = inside_footprints(footprints, cat_lat, cat_lon)
    inside = np.array([p is not None for p in product], dtype=bool)
    for j in np.flatnonzero(inside & ~matches.matched_entries):
        report.missed.append(MissedEntry(entries[j], str(product[j]), float(matches.nearest_pit_m[j]),
                                         int(matches.pits_in_range[j])))
    held = set(product[inside])
    report.empty = [empty_footprint(f, entries, cat_lat, cat_lon) for f in footprints if f.product_id not in held]
    report.footprints = [f.product_id for f in footprints]
    report.catalogue_entries, report.inside_footprints = len(entries), int(inside.sum())


def empty_footprint(footprint: Footprint, entries: list[CatalogueEntry], lat: np.ndarray, lon_e: np.ndarray) -> EmptyFootprint:
    """The entry nearest to the footprint's outline (densified, in lon/lat) and its distance."""
    if not entries:
        return EmptyFootprint(footprint.product_id, None, math.inf)
    ring_lon, ring_lat = _ring_lonlat(footprint)
    index, distance = nearest(lat, lon_e, ring_lat, ring_lon)
    j = int(np.argmin(distance))
    return EmptyFootprint(footprint.product_id, entries[j].id, float(distance[j]))


def _ring_lonlat(footprint: Footprint) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of the footprint's outline, densified to 512 segments."""
    import shapely

    ring = shapely.segmentize(footprint.polygon.boundary, max(footprint.polygon.length / 512, 1e-9))
    x, y = shapely.get_coordinates(ring).T
    return to_lonlat(footprint.crs_wkt, x, y)


# ---- outputs ---------------------------------------------------------------------------------------------------


def write_compared(out: Path, mapped: PitLayer, report: CompareReport) -> None:
    """``pits_compared`` (the pits' own outlines, or points where they have none, with every field
    of the input layer and the comparison's) and ``catalogue_missed`` (points), in Mars lon/lat;
    written beside ``out`` and renamed into place."""
    import shapely

    partial = out.with_name(f".{out.stem}.partial{out.suffix or '.gpkg'}")  # GDAL checks the extension
    partial.unlink(missing_ok=True)
    geometries, geometry_type = _pit_geometries(mapped)
    try:
        write_layer(partial, "pits_compared", geometries, {**_input_columns(mapped), **_pit_columns(report.pits)},
                    lonlat_wkt(), geometry_type)
        points = [shapely.Point(float(lon180(m.entry.lon_e)), m.entry.lat) for m in report.missed]
        write_layer(partial, "catalogue_missed", points, _missed_columns(report.missed), lonlat_wkt(), "Point")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _input_columns(mapped: PitLayer) -> dict[str, np.ndarray]:
    """The input layer's own fields, as read (the comparison's columns replace any of the same name)."""
    return {name: values for name, values in mapped.columns.items() if np.asarray(values).dtype.kind in "biufOUSM"}


def _pit_geometries(mapped: PitLayer) -> tuple[list, str]:
    """The pits' geometries and the layer type that holds them all; centroids as points when
    they are missing or of mixed kinds."""
    import shapely

    kinds = {g.geom_type if g is not None else None for g in mapped.geometries}
    if kinds and kinds <= {"Polygon", "MultiPolygon"}:
        return mapped.geometries, "MultiPolygon" if "MultiPolygon" in kinds else "Polygon"
    if kinds == {"Point"}:
        return mapped.geometries, "Point"
    return [shapely.Point(float(lon180(x)), float(y)) for x, y in zip(mapped.lon_e, mapped.lat, strict=False)], "Point"


def _pit_columns(rows: list[PitComparison]) -> dict[str, np.ndarray]:
    entries = [r.entry for r in rows]
    return {
        "status": np.array([r.status for r in rows], dtype=object),
        "pit_id": np.array([r.pit_id for r in rows], dtype=np.int64),
        "product_id": np.array([r.product_id for r in rows], dtype=object),
        "centroid_lat": np.array([r.lat for r in rows], dtype=float),
        "centroid_lon_e": np.array([r.lon_e for r in rows], dtype=float),
        **_entry_columns(entries),
        "distance_m": _masked([r.distance_m for r in rows], float),
        "radius_m": np.array([r.radius_m for r in rows], dtype=float),
        "candidates": np.array([r.candidates for r in rows], dtype=np.int64),
        "ambiguous": np.array([r.ambiguous for r in rows], dtype=bool),
    }


def _missed_columns(rows: list[MissedEntry]) -> dict[str, np.ndarray]:
    return {
        **_entry_columns([m.entry for m in rows]),
        "lat": np.array([m.entry.lat for m in rows], dtype=float),
        "lon_e": np.array([m.entry.lon_e for m in rows], dtype=float),
        "product_id": np.array([m.product_id for m in rows], dtype=object),
        "nearest_pit_m": _masked([m.nearest_pit_m for m in rows], float),
        "ambiguous": np.array([m.pits_in_range > 0 for m in rows], dtype=bool),
    }


def _entry_columns(entries: list[CatalogueEntry | None]) -> dict[str, np.ndarray]:
    """The catalogue's fields, NULL where a pit has no entry or the catalogue gives none."""
    return {
        "cat_id": np.array([e and e.id for e in entries], dtype=object),
        "cat_type": np.array([e and e.type for e in entries], dtype=object),
        "cat_priority": _masked([e.priority if e else None for e in entries], np.int64),
        "cat_diameter_m": _masked([e.diameter_m if e else None for e in entries], float),
        "cat_depth_m": _masked([e.depth_m if e else None for e in entries], float),
        "cat_comment": np.array([e and e.comment for e in entries], dtype=object),
    }


def _masked(values: list, dtype) -> np.ma.MaskedArray:
    """NULL for None and non-finite numbers (a GeoPackage column reads back NULL, not NaN)."""
    missing = [v is None or not math.isfinite(v) for v in values]
    return np.ma.masked_array([0 if m else v for v, m in zip(values, missing, strict=False)], mask=missing, dtype=dtype)
