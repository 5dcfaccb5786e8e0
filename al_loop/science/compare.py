"""``al-loop compare``: a map's pits against a catalogue of points (MGC3 or a lat/lon CSV).

Distances are great-circle (haversine) distances on the Mars sphere of radius
3 396 190 m (the IAU 2015 mean radius, ``mars.MARS_RADIUS_M``): catalogue positions are
good to a few hundred metres, so the sphere's error against an ellipsoid (under 0.6 %)
does not matter. The haversine depends on longitudes only through sines of their
differences, so 0..360 east, -180..180 and a pair across either meridian need no care.

Each pit is ``matched`` to the nearest catalogue entry within the radius (with that
entry's id, type, priority, diameter, depth and the distance), or ``new``. Two pits may
match the same entry (a catalogued pair the map split, or one pit outlined twice): both
are matched, each carrying the entry. A catalogue entry inside a mapped product's
footprint that is the nearest match of no pit is ``missed``: an entry with a pit in range
whose nearest entry is another (two entries a hundred metres apart, one pit mapped) is
missed too - the map found one of the two. Entries outside every footprint are left
aside: the map never looked there.

Pits are read from the map's ``pits_lonlat`` layer (what ``al-loop map`` writes), or from
the one layer in Mars lon/lat of any vector file GDAL reads (a GeoJSON of ``map
--geojson``, a user's points or outlines); their position is the ``centroid_lat`` /
``centroid_lon_e`` columns where present, else the centroid of the geometry.
Footprints are the union of each product's tile outlines (the map's ``tiles_<product>``
layers: only tiles that hold data were kept) and, for products passed as ``products``,
the product's own valid pixels (a decimated read, polygonized); either is kept in the
product's CRS, where it is exact, and a catalogue point is tested there (no densified
lon/lat outline, no trouble where a footprint crosses a meridian). Outputs: a GeoPackage
in Mars lon/lat (``pits_compared``, ``catalogue_missed``) and an optional summary JSON.
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
from al_loop.data.mars import (
    MARS_RADIUS_M,
    from_lonlat,
    lonlat_wkt,
    not_on_mars,
    to_lonlat,
)
from al_loop.data.products import gdal_env, open_product, open_raster, valid_mask
from al_loop.data.vectors import write_layer
from al_loop.errors import ProductError, UsageError

PITS_LAYER = "pits_lonlat"
TILES_PREFIX = "tiles_"
FOOTPRINT_OVERVIEW_SIDE = 1024  # a product's valid pixels are polygonized at this side at most
CHUNK = 2048  # pits per block of the distance matrix: (CHUNK, M) float64 at a time


# ---- records ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapPits:
    """The map's pits as read: N of them, positions in degrees (longitude 0..360 east)."""

    layer: str
    geometries: list  # N shapely geometries in Mars lon/lat (None where the layer has none)
    pit_id: np.ndarray  # (N,) int64
    product_id: np.ndarray  # (N,) object (str)
    lat: np.ndarray  # (N,) float64
    lon_e: np.ndarray  # (N,) float64
    diam_eq_m: np.ndarray  # (N,) float64, NaN where the layer has no diam_eq_m


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
    diam_eq_m: float
    entry: CatalogueEntry | None
    distance_m: float

    def row(self) -> dict:
        e = self.entry
        return {"status": self.status, "pit_id": self.pit_id, "product_id": self.product_id, "lat": self.lat,
                "lon_e": self.lon_e, "diam_eq_m": _finite(self.diam_eq_m), "cat_id": e and e.id,
                "cat_type": e and e.type, "cat_priority": e and e.priority,
                "cat_diameter_m": _finite(e.diameter_m) if e else None, "cat_depth_m": _finite(e.depth_m) if e else None,
                "cat_comment": e and e.comment, "distance_m": _finite(self.distance_m)}


@dataclass(frozen=True)
class MissedEntry:
    """A catalogue entry inside ``product_id``'s footprint that no pit matched."""

    entry: CatalogueEntry
    product_id: str
    nearest_pit_m: float  # to the nearest pit of the whole map (inf: the map has none)

    def row(self) -> dict:
        e = self.entry
        return {"status": "missed", "cat_id": e.id, "cat_type": e.type, "cat_priority": e.priority,
                "cat_diameter_m": _finite(e.diameter_m), "cat_depth_m": _finite(e.depth_m), "cat_comment": e.comment,
                "lat": e.lat, "lon_e": e.lon_e, "product_id": self.product_id, "nearest_pit_m": _finite(self.nearest_pit_m)}


@dataclass
class CompareReport:
    radius_m: float
    pits: list[PitComparison] = field(default_factory=list)
    missed: list[MissedEntry] = field(default_factory=list)
    footprints: list[str] = field(default_factory=list)  # product ids with a footprint
    catalogue_entries: int = 0
    inside_footprints: int = 0  # catalogue entries inside some footprint
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    @property
    def matched(self) -> list[PitComparison]:
        return [p for p in self.pits if p.status == "matched"]

    @property
    def new(self) -> list[PitComparison]:
        return [p for p in self.pits if p.status == "new"]

    @property
    def counts(self) -> dict[str, int]:
        return {"matched": len(self.matched), "new": len(self.new), "missed": len(self.missed)}

    def summary(self) -> dict:
        """What the summary JSON holds: the counts, then every row by status."""
        return {"radius_m": self.radius_m, "counts": self.counts, "catalogue_entries": self.catalogue_entries,
                "inside_footprints": self.inside_footprints, "footprints": self.footprints,
                "matched": [p.row() for p in self.matched], "new": [p.row() for p in self.new],
                "missed": [m.row() for m in self.missed], "warnings": self.warnings}


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ---- the numeric middle ----------------------------------------------------------------------------------------


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


def missed_mask(to_pit_m: np.ndarray, inside: np.ndarray, radius_m: float) -> np.ndarray:
    """(M,) bool: entries inside a footprint (``inside``, (M,) bool) with no pit within the radius
    (``to_pit_m``: (M,) distance to the nearest pit). An entry with a pit in range is not missed
    even when that pit matched a nearer entry: the map found something there."""
    return inside & ~(to_pit_m <= radius_m)


def spherical_cap(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float]:
    """(lat, lon, radius_m) of a cap holding every point: centred on their mean direction."""
    phi, lam = np.radians(lat), np.radians(lon)
    xyz = np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)]).mean(axis=0)
    c_lat = float(np.degrees(np.arctan2(xyz[2], math.hypot(xyz[0], xyz[1]))))
    c_lon = float(np.degrees(np.arctan2(xyz[1], xyz[0])))
    return c_lat, c_lon, float(great_circle_m(c_lat, c_lon, lat, lon).max())


def lon180(lon_e) -> np.ndarray:
    """0..360 east -> -180..180, as PROJ and the map's lon/lat layers have it."""
    return (np.asarray(lon_e, float) + 180.0) % 360.0 - 180.0


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
    """One footprint per ``tiles_<product>`` layer of the map (the union of its tile outlines)."""
    import pyogrio.raw
    import shapely

    footprints, warnings = [], []
    for layer in (name for name in layers if name.startswith(TILES_PREFIX)):
        meta, _, wkb, _ = pyogrio.raw.read(str(path), layer=layer)
        product_id = layer[len(TILES_PREFIX):]
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
    import rasterio.features
    import shapely
    from affine import Affine

    product = open_product(path)
    if not product.crs_wkt:
        raise ProductError(path, "carries no CRS: its footprint cannot be placed on Mars")
    factor = max(1, math.ceil(max(product.width, product.height) / FOOTPRINT_OVERVIEW_SIDE))
    shape = (math.ceil(product.height / factor), math.ceil(product.width / factor))
    with gdal_env(), open_raster(product.path) as src:
        valid = valid_mask(src.read(1, out_shape=shape), product.null)
    if not valid.any():
        raise ProductError(path, "holds no valid pixels (all null): it has no footprint")
    a, b, c, d, e, f = product.transform
    sx, sy = product.width / shape[1], product.height / shape[0]
    transform = Affine(a * sx, b * sy, c, d * sx, e * sy, f)
    parts = [shapely.geometry.shape(g) for g, _ in rasterio.features.shapes(valid.astype(np.uint8), mask=valid,
                                                                           transform=transform)]
    return Footprint(product.product_id, product.crs_wkt, shapely.union_all(parts), str(path))


def _wkt(crs: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


# ---- the map's pits --------------------------------------------------------------------------------------------


def list_layers(path: Path) -> list[str]:
    import pyogrio
    import pyogrio.errors

    try:
        return [str(name) for name, _ in pyogrio.list_layers(str(path))]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UsageError(f"{path}: not a vector file GDAL reads ({exc})") from None


def pit_layer(path: Path, layers: Sequence[str]) -> tuple[str, list[str]]:
    """``pits_lonlat`` where the map has it, else the one layer in a geographic (lon/lat) CRS;
    a layer GDAL labels WGS 84 (any GeoJSON without a ``crs``) is read as Mars lon/lat, with a warning."""
    import pyogrio

    if PITS_LAYER in layers:
        return PITS_LAYER, []
    kinds = {name: _lonlat_kind(pyogrio.read_info(str(path), layer=name).get("crs")) for name in layers}
    mars = [name for name, kind in kinds.items() if kind == "mars"]
    earth = [name for name, kind in kinds.items() if kind == "earth"]
    found = mars or earth
    if len(found) > 1:
        raise UsageError(f"{path}: several layers in lon/lat ({', '.join(found)}) and no {PITS_LAYER}: keep the "
                         "pits in one layer, or write the map with `al-loop map`")
    if mars:
        return mars[0], []
    if earth:
        return earth[0], [(f"{path}: layer {earth[0]} is labelled with an Earth lon/lat CRS (GDAL's default for a "
                          "GeoJSON without a crs): its coordinates are read as Mars planetocentric lon/lat")]
    raise UsageError(f"{path}: no {PITS_LAYER} layer and no layer in Mars lon/lat (IAU_2015:49900) among "
                     f"{', '.join(layers) or 'no layers'}: compare reads the all-pits layer `al-loop map` writes, "
                     "or one layer of points or outlines in Mars lon/lat")


def _lonlat_kind(crs: str | None) -> str | None:
    """'mars' for a lon/lat CRS on Mars, 'earth' for one on another body, None for projected ones."""
    from pyproj import CRS

    if not crs:
        return None
    parsed = CRS.from_user_input(crs)
    if not parsed.is_geographic:
        return None
    return "mars" if not_on_mars(parsed.to_wkt()) is None else "earth"


def read_pits(path: Path, layer: str) -> tuple[MapPits, list[str]]:
    """The pits of ``layer``, positioned from their centroid columns or geometry; those without
    a position (no CRS, no geometry) are left out with a warning."""
    import pyogrio.raw
    import shapely

    meta, fids, wkb, fields = pyogrio.raw.read(str(path), layer=layer, return_fids=True)
    columns = dict(zip(meta["fields"], fields, strict=False))
    n = len(fids)
    geometries = list(shapely.from_wkb(wkb)) if wkb is not None else [None] * n
    lat, lon_e = _positions(columns, geometries)
    pit_id = np.asarray(columns["pit_id"], float) if "pit_id" in columns else np.arange(1, n + 1, dtype=float)
    product = columns.get("product_id", np.full(n, "", dtype=object))
    diam = np.asarray(columns["diam_eq_m"], float) if "diam_eq_m" in columns else np.full(n, np.nan)
    keep = np.isfinite(lat) & np.isfinite(lon_e)
    warnings = [] if keep.all() else [(f"{path}: {int((~keep).sum())} pits of layer {layer} have no position (no CRS or no "
                                      "geometry) and are left out of the comparison")]
    pits = MapPits(layer, [g for g, k in zip(geometries, keep, strict=False) if k], np.nan_to_num(pit_id[keep]).astype(np.int64),
                   np.array([str(p or "") for p in np.asarray(product, dtype=object)[keep]], dtype=object),
                   lat[keep], lon_e[keep], diam[keep])
    return pits, warnings


def _positions(columns: dict[str, np.ndarray], geometries: list) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon 0..360 east), each (N,): the map's centroid columns, else geometry centroids."""
    lon_name = next((n for n in ("centroid_lon_e", "centroid_lon") if n in columns), None)
    if "centroid_lat" in columns and lon_name:
        lat, lon = np.asarray(columns["centroid_lat"], float), np.asarray(columns[lon_name], float)
        lat_g, lon_g = _centroids(geometries) if not np.isfinite(lat + lon).all() else (lat, lon)
        bad = ~np.isfinite(lat + lon)
        return np.where(bad, lat_g, lat), np.mod(np.where(bad, lon_g, lon), 360.0)
    lat, lon = _centroids(geometries)
    return lat, np.mod(lon, 360.0)


def _centroids(geometries: list) -> tuple[np.ndarray, np.ndarray]:
    """Centroids in degrees of lon/lat outlines, each unwrapped around its first vertex first
    (an outline across the +-180 or 0/360 meridian would otherwise span the planet)."""
    import shapely

    lat, lon = np.full(len(geometries), np.nan), np.full(len(geometries), np.nan)
    for i, geometry in enumerate(geometries):
        if geometry is None or geometry.is_empty:
            continue
        first = float(shapely.get_coordinates(geometry)[0, 0])
        unwrapped = shapely.transform(geometry, lambda xy, x0=first: np.column_stack([lon180(xy[:, 0] - x0) + x0, xy[:, 1]]))
        centre = unwrapped.centroid
        lat[i], lon[i] = centre.y, centre.x
    return lat, lon


# ---- the command -----------------------------------------------------------------------------------------------


def compare_map(pits: Path, catalogue: Path, out: Path, summary: Path | None = None, *, radius_m: float = 300.0,
                products: Sequence[Path] = ()) -> CompareReport:
    """Compare the pits of the map ``pits`` with ``catalogue`` and write ``out`` (GeoPackage)
    and ``summary`` (JSON); both written whole or not at all, the inputs only read."""
    pits, catalogue, out = Path(pits), Path(catalogue), Path(out)
    _check_request(pits, out, summary, radius_m, inputs=[pits, catalogue, *map(Path, products)])
    report = CompareReport(radius_m=float(radius_m))
    layers = list_layers(pits)
    layer, notes = pit_layer(pits, layers)
    mapped, more = read_pits(pits, layer)
    entries = read_catalogue(catalogue)
    footprints, footnotes = _footprints(pits, layers, products)
    report.warnings += notes + more + footnotes + _uncovered(mapped, footprints)
    _compare(mapped, entries, footprints, report)
    write_compared(out, mapped, report)
    report.outputs.append(out)
    if summary is not None:
        atomic_write(summary, json.dumps(report.summary(), indent=1).encode())
        report.outputs.append(Path(summary))
    return report


def _check_request(pits: Path, out: Path, summary: Path | None, radius_m: float, inputs: Sequence[Path]) -> None:
    if not isinstance(radius_m, (int, float)) or not math.isfinite(radius_m) or radius_m <= 0:
        raise UsageError(f"--radius-m must be a distance in metres above 0, got {radius_m}")
    if not pits.is_file():
        raise UsageError(f"{pits}: no such map file (the GeoPackage `al-loop map` wrote)")
    read = {p.resolve() for p in inputs}
    for flag, target in (("--out", out), ("--json", summary)):
        if target is not None and Path(target).resolve() in read:
            raise UsageError(f"{flag} {target} is one of the inputs: write the comparison to another file")
    if summary is not None and Path(summary).resolve() == out.resolve():
        raise UsageError(f"--json {summary} and --out name the same file: name two")


def _footprints(path: Path, layers: Sequence[str], products: Sequence[Path]) -> tuple[list[Footprint], list[str]]:
    """The map's tile footprints; a product passed by the user replaces its layer's."""
    footprints, warnings = read_tile_footprints(path, layers)
    given = [product_footprint(p) for p in products]
    named = {safe_name(f.product_id) for f in given}
    return [f for f in footprints if safe_name(f.product_id) not in named] + given, warnings


def safe_name(product_id: str) -> str:
    """A product id as it appears in layer names (``tiles_<id>``; the rule of ``al-loop tile``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in product_id)


def _uncovered(mapped: MapPits, footprints: Sequence[Footprint]) -> list[str]:
    covered = {safe_name(f.product_id) for f in footprints}
    if not footprints:
        return [("no footprint (no tiles_<product> layer in the map, no --product): no catalogue entry can be counted "
                "missed")]
    lacking = sorted({p for p in mapped.product_id if p and safe_name(p) not in covered})
    return [f"{p}: no footprint (no tiles_{safe_name(p)} layer in the map): catalogue entries over it are not counted "
            "missed; pass the product with --product" for p in lacking]


def _compare(mapped: MapPits, entries: list[CatalogueEntry], footprints: Sequence[Footprint], report: CompareReport) -> None:
    """Fill ``report`` with every pit's status and the missed entries (the numbers above, in records)."""
    cat_lat = np.array([e.lat for e in entries], float)
    cat_lon = np.array([e.lon_e for e in entries], float)
    index, distance = nearest(mapped.lat, mapped.lon_e, cat_lat, cat_lon)
    within = distance <= report.radius_m
    match = np.where(within, index, -1)
    product = inside_footprints(footprints, cat_lat, cat_lon)
    _, to_pit = nearest(cat_lat, cat_lon, mapped.lat, mapped.lon_e)
    for i in range(len(mapped.lat)):
        entry = entries[match[i]] if match[i] >= 0 else None
        report.pits.append(PitComparison("new" if entry is None else "matched", int(mapped.pit_id[i]), str(mapped.product_id[i]),
                                         float(mapped.lat[i]), float(mapped.lon_e[i]), float(mapped.diam_eq_m[i]),
                                         entry, math.nan if entry is None else float(distance[i])))
    inside = np.array([p is not None for p in product], dtype=bool)
    for j in np.flatnonzero(missed_mask(to_pit, inside, report.radius_m)):
        report.missed.append(MissedEntry(entries[j], str(product[j]), float(to_pit[j])))
    report.footprints = [f.product_id for f in footprints]
    report.catalogue_entries, report.inside_footprints = len(entries), int(inside.sum())


# ---- outputs ---------------------------------------------------------------------------------------------------


def write_compared(out: Path, mapped: MapPits, report: CompareReport) -> None:
    """``pits_compared`` (the pits' own outlines, or points where they have none) and
    ``catalogue_missed`` (points), in Mars lon/lat; written beside ``out`` and renamed into place."""
    import shapely

    partial = out.with_name(f".{out.stem}.partial{out.suffix or '.gpkg'}")  # GDAL checks the extension
    partial.unlink(missing_ok=True)
    geometries, geometry_type = _pit_geometries(mapped)
    try:
        write_layer(partial, "pits_compared", geometries, _pit_columns(report.pits), lonlat_wkt(), geometry_type)
        points = [shapely.Point(float(lon180(m.entry.lon_e)), m.entry.lat) for m in report.missed]
        write_layer(partial, "catalogue_missed", points, _missed_columns(report.missed), lonlat_wkt(), "Point")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _pit_geometries(mapped: MapPits) -> tuple[list, str]:
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
    }


def _missed_columns(rows: list[MissedEntry]) -> dict[str, np.ndarray]:
    return {
        **_entry_columns([m.entry for m in rows]),
        "lat": np.array([m.entry.lat for m in rows], dtype=float),
        "lon_e": np.array([m.entry.lon_e for m in rows], dtype=float),
        "product_id": np.array([m.product_id for m in rows], dtype=object),
        "nearest_pit_m": _masked([m.nearest_pit_m for m in rows], float),
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
