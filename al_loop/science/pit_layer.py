"""A pit layer as ``compare`` and ``export`` read it: any vector file GDAL reads, in any CRS on
Mars, brought to Mars planetocentric lon/lat (``IAU_2015:49900``) with every field it carries.

One reader for both commands, so a layer means the same to each: ``pits_lonlat`` of ``al-loop
map``, ``measured`` of ``al-loop measure`` (in the product's projected CRS), ``pits_<product>``,
a GeoJSON of ``map --geojson`` or a user's points or outlines. Positions are the centroids of
the geometries, taken in the layer's own CRS and projected (a projected outline's centroid is
exact there; a lon/lat outline is unwrapped around its first vertex first, so one across the
+-180 meridian does not span the planet); a feature without a geometry falls back on the map's
``centroid_lat`` / ``centroid_lon_e`` columns. The diameter is ``diameter_m`` where the layer
has it, else the map's ``diam_eq_m`` (both equivalent-circle diameters).

A layer without a CRS, or in a CRS on another body, is refused: its coordinates cannot be
placed on Mars (metres read as degrees put pits at latitude -325 761). The one exception is
a lon/lat layer GDAL labels WGS 84, which is what any GeoJSON without a ``crs`` member is
read as: its numbers are read as Mars lon/lat, with a warning.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.mars import MARS_LONLAT, east_longitude, not_on_mars, reproject, to_lonlat
from al_loop.errors import UsageError

PITS_LAYER = "pits_lonlat"
FOOTPRINT_PREFIXES = ("tiles_", "valid_")  # the map's footprint layers: never pits
DIAMETER_COLUMNS = ("diameter_m", "diam_eq_m")  # the map's and measure's diameter, else the map's older name


@dataclass
class PitLayer:
    """N pits as read: positions in degrees (longitude 0..360 east), geometries in Mars lon/lat."""

    path: Path
    layer: str
    crs_wkt: str  # the layer's own CRS (what it was read in)
    geometries: list  # N shapely geometries in Mars lon/lat (-180..180), None where the layer has none
    lat: np.ndarray  # (N,) float64 degrees
    lon_e: np.ndarray  # (N,) float64 degrees east, 0..360
    diameter_m: np.ndarray  # (N,) float64, NaN where not given
    diameter_column: str | None  # which column it came from
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # every field of the layer, (N,) each
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lat)


def list_layers(path: Path) -> list[str]:
    """The layer names of a vector file; a :class:`UsageError` when GDAL cannot read it."""
    import pyogrio
    import pyogrio.errors

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such vector file")
    try:
        return [str(name) for name, _ in pyogrio.list_layers(str(path))]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UsageError(f"{path}: not a vector file GDAL reads ({exc})") from None


def choose_layer(path: Path, layers: Sequence[str], layer: str | None = None) -> str:
    """``layer`` when given; else ``pits_lonlat``; else the file's one layer that is not a
    footprint; else the one such layer in lon/lat (several: the user must name one)."""
    import pyogrio

    if layer is not None:
        if layer not in layers:
            raise UsageError(f"{path}: no layer {layer!r} (layers: {', '.join(sorted(layers)) or 'none'})")
        return layer
    if PITS_LAYER in layers:
        return PITS_LAYER
    pits = [name for name in layers if not name.startswith(FOOTPRINT_PREFIXES)]
    if len(pits) == 1:
        return pits[0]
    lonlat = [name for name in pits if _is_geographic(pyogrio.read_info(str(path), layer=name).get("crs"))]
    if len(lonlat) == 1:
        return lonlat[0]
    raise UsageError(f"{path}: no {PITS_LAYER} layer and {len(pits)} other layers ({', '.join(pits) or 'none'}): "
                     "name the pit layer (--layer)")


def _is_geographic(crs: str | None) -> bool:
    from pyproj import CRS

    return bool(crs) and CRS.from_user_input(crs).is_geographic


def layer_crs(path: Path, layer: str, crs: str | None) -> tuple[str, list[str]]:
    """The layer's CRS as WKT, and a warning for a WGS 84 lon/lat label; a :class:`UsageError`
    for a missing CRS or one that is not on Mars."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    where = f"{path}: layer {layer}"
    if not crs:
        raise UsageError(f"{where} has no CRS: its coordinates cannot be placed on Mars (give the file one, e.g. "
                         "IAU_2015:49900 for lon/lat, or the product's CRS)")
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as exc:
        raise UsageError(f"{where}: its CRS cannot be read by PROJ ({exc})") from None
    why = not_on_mars(parsed.to_wkt())
    if why is None:
        return parsed.to_wkt(), []
    if parsed.is_geographic:
        return CRS.from_user_input(MARS_LONLAT).to_wkt(), [
            f"{where} is labelled with an Earth lon/lat CRS ({parsed.name}, GDAL's default for a GeoJSON without a "
            "crs): its coordinates are read as Mars planetocentric lon/lat"]
    raise UsageError(f"{where}: {why}")


def read_pit_layer(path: str | Path, layer: str | None = None) -> PitLayer:
    """The pits of ``layer`` (chosen as :func:`choose_layer` does) in Mars lon/lat, with every
    field; features without a position (no geometry, no centroid columns) are left out with a warning."""
    import pyogrio.raw
    import shapely

    path = Path(path)
    name = choose_layer(path, list_layers(path), layer)
    meta, _, wkb, values = pyogrio.raw.read(str(path), layer=name)
    crs_wkt, warnings = layer_crs(path, name, meta.get("crs"))
    columns = dict(zip(meta["fields"], values, strict=False))
    n = len(values[0]) if len(values) else (len(wkb) if wkb is not None else 0)
    geometries = list(shapely.from_wkb(wkb)) if wkb is not None else [None] * n
    lat, lon_e = _positions(geometries, crs_wkt, columns)
    lonlat = _to_lonlat(geometries, crs_wkt)
    keep = np.isfinite(lat) & np.isfinite(lon_e)
    if not keep.all():
        warnings.append(f"{path}: {int((~keep).sum())} features of layer {name} have no position (no geometry and no "
                        "centroid columns) and are left out")
    diameter_column = next((c for c in DIAMETER_COLUMNS if c in columns), None)
    diameter = np.asarray(columns[diameter_column], float) if diameter_column else np.full(n, np.nan)
    return PitLayer(path, name, crs_wkt, [g for g, k in zip(lonlat, keep, strict=True) if k], lat[keep], lon_e[keep],
                    diameter[keep], diameter_column, {k: np.asarray(v)[keep] for k, v in columns.items()}, warnings)


def _to_lonlat(geometries: list, crs_wkt: str) -> list:
    from pyproj import CRS

    if CRS.from_wkt(crs_wkt).is_geographic:
        return geometries
    return [None if g is None else reproject(g, crs_wkt, MARS_LONLAT) for g in geometries]


def _positions(geometries: list, crs_wkt: str, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon 0..360 east), each (N,): geometry centroids in the layer's CRS, projected; the
    map's centroid columns where a feature has no geometry."""
    from pyproj import CRS

    if CRS.from_wkt(crs_wkt).is_geographic:
        lat, lon = lonlat_centroids(geometries)
    else:
        x, y = np.full(len(geometries), np.nan), np.full(len(geometries), np.nan)
        for i, g in enumerate(geometries):
            if g is not None and not g.is_empty:
                x[i], y[i] = g.centroid.x, g.centroid.y
        lon, lat = (np.asarray(v, float) for v in to_lonlat(crs_wkt, x, y))
    lon_name = next((n for n in ("centroid_lon_e", "centroid_lon") if n in columns), None)
    if "centroid_lat" in columns and lon_name:
        bad = ~np.isfinite(lat + lon)
        lat = np.where(bad, np.asarray(columns["centroid_lat"], float), lat)
        lon = np.where(bad, np.asarray(columns[lon_name], float), lon)
    return np.asarray(lat, float), east_longitude(lon)


def lonlat_centroids(geometries: list) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon), each (N,) degrees: centroids of lon/lat geometries, each unwrapped around its
    first vertex first (an outline across the +-180 or 0/360 meridian would otherwise span the planet)."""
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


def lon180(lon_e) -> np.ndarray:
    """0..360 east -> -180..180, as PROJ and the map's lon/lat layers have it."""
    return (np.asarray(lon_e, float) + 180.0) % 360.0 - 180.0
