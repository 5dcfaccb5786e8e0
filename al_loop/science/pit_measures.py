"""Morphometry and shadow depth for pits on a product: ``map``'s pits, or any polygon layer
(``al-loop measure``: expert outlines, catalogue outlines).

Shape comes from the outline on an equal-area projection of the product's body; depth from
the pit's shadow in the product's pixels, along the sun direction of the product's label
(HiRISE ``VIEWING_PARAMETERS``). ``map`` reads those pixels from its own 8-bit tiles (a HiRISE
JP2 is one JPEG2000 tile, a window of it costs about a second; the shadow test is relative
to the pit and its surroundings, which one linear stretch per product leaves as it was);
``measure`` reads them from the product (whole, when it is small enough: windows of a one-tile
JP2 each cost about a second). Products without sun geometry get empty depths and a warning; a
label without EMISSION_ANGLE is measured as a nadir view, with a warning and a wider error. The
pixel's size is the label's MAP_SCALE or the raster's transform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from al_loop.data.mars import reproject
from al_loop.data.tiling import ProductEntry
from al_loop.data.viewing import Viewing, read_viewing
from al_loop.errors import ProductError, UsageError
from al_loop.science.morphometry import depth_columns, pit_depth, shape_measures, window_around

Window = tuple[int, int, int, int]  # col0, row0, col1, row1 in product pixels


def viewing_of(source: str | Path) -> Viewing | None:
    """The sun and view of a product whose label carries them (a HiRISE .LBL); None otherwise."""
    path = Path(source)
    if path.suffix.upper() != ".LBL":
        return None
    try:
        return read_viewing(path)
    except ProductError:
        return None


def viewing_warnings(product: str | Path, viewing: Viewing | None) -> list[str]:
    """What ``map`` and ``measure`` say about a product's sun and view: none (no depths), or what
    was assumed for what its label lacks."""
    if viewing is None:
        return [f"{product}: no sun geometry in its label (VIEWING_PARAMETERS): depths are left empty"]
    if viewing.assumed:
        return [f"{product}: {viewing.assumed}; depths say so in depth_note and carry the wider depth_err_m"]
    return []


def pit_columns(polygon, window: Window, pixels: np.ndarray, transform: tuple, crs_wkt: str, area_crs: str,
                viewing: Viewing | None) -> dict:
    """Shape and depth columns of one pit: ``polygon`` in the product's CRS, ``pixels`` the (H, W)
    float window (NaN = no data) at ``window`` of a product with ``transform``. The pixel's size is
    the label's MAP_SCALE, else the transform's (:func:`pixel_size_m`)."""
    shape = shape_measures(reproject(_filled(polygon), crs_wkt, area_crs))
    mask = _mask(polygon, window, transform, pixels.shape)
    pixel_m = viewing.map_scale_m if viewing is not None and viewing.map_scale_m else pixel_size_m(
        tuple(transform)[:6], crs_wkt, area_crs)
    depth = pit_depth(pixels, mask, viewing, pixel_m)
    shape.pop("area_m2", None)  # the map's own area_m2 column stays the one
    return {**shape, **depth_columns(depth, shape["diameter_m"], viewing)}


@lru_cache(maxsize=16)
def pixel_size_m(transform: tuple, crs_wkt: str, area_crs: str) -> float:
    """One pixel's side in metres on the ground: the transform's, in a projected CRS in metres (or
    another linear unit); otherwise (degrees) a pixel at the raster's origin projected onto the
    equal-area ``area_crs``. Never from a mask's pixel count (which depends on the outline)."""
    import shapely
    from pyproj import CRS

    a, b, c, d, e, f = transform
    crs = CRS.from_user_input(crs_wkt)
    det = abs(a * e - b * d)
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_conversion_factor:
        return math.sqrt(det) * float(crs.axis_info[0].unit_conversion_factor)
    square = shapely.Polygon([(c, f), (c + a, f + d), (c + a + b, f + d + e), (c + b, f + e)])
    return math.sqrt(reproject(square, crs_wkt, area_crs).area)


def _filled(polygon):
    """The outline without holes: a pit's shape is its rim's (a bright boulder on the floor, which the
    decoder leaves out, is no part of the pit's outline)."""
    import shapely

    parts = getattr(polygon, "geoms", [polygon])
    return shapely.union_all([shapely.Polygon(p.exterior) for p in parts])


def _mask(polygon, window: Window, transform: tuple, shape: tuple[int, int]) -> np.ndarray:
    from affine import Affine
    from rasterio.features import rasterize

    c0, r0, _, _ = window
    a, b, c, d, e, f = transform
    local = Affine(a, b, c + a * c0 + b * r0, d, e, f + d * c0 + e * r0)
    return rasterize([(polygon, 1)], out_shape=shape, transform=local, dtype="uint8").astype(bool)


def window_from_tiles(entry: ProductEntry, tiles_dir: Path, window: Window) -> np.ndarray:
    """The product's pixels in ``window`` as float, pasted from its 8-bit tiles (NaN for null and
    for what no tile covers)."""
    c0, r0, c1, r1 = window
    out = np.full((r1 - r0, c1 - c0), np.nan, np.float32)
    for tile in entry.tiles:
        x0, y0 = max(c0, tile.col), max(r0, tile.row)
        x1, y1 = min(c1, tile.col + tile.width), min(r1, tile.row + tile.height)
        if x0 >= x1 or y0 >= y1 or not np.isnan(out[y0 - r0:y1 - r0, x0 - c0:x1 - c0]).any():
            continue
        path = tiles_dir / tile.file
        part = _tile_pixels(str(path), path.stat().st_mtime_ns)[y0 - tile.row:y1 - tile.row, x0 - tile.col:x1 - tile.col]
        out[y0 - r0:y1 - r0, x0 - c0:x1 - c0] = np.where(part > 0, part, np.nan)
    return out


@lru_cache(maxsize=32)
def _tile_pixels(path: str, mtime_ns: int) -> np.ndarray:
    """A tile decoded once for all the pits on it (pits come top to bottom, so a few rows of tiles
    are all that is ever needed again; the modification time keeps a re-tiled file from being stale)."""
    from PIL import Image

    return np.asarray(Image.open(path))


@dataclass
class MeasureReport:
    rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None


# Products up to this many pixels are read once whole: a HiRISE JP2 is one JPEG2000 tile, and each
# window read from it costs about a second (the whole of a 4000 x 4000 product, about two).
WHOLE_READ_PIXELS = 64_000_000


def measure_layer(polygons: Path, product: Path, out: Path, layer: str | None = None) -> MeasureReport:
    """``al-loop measure``: every polygon of ``layer`` (reprojected to the product's CRS) measured
    on ``product``; written to ``out`` as ``measured`` in the product's CRS. Nothing is written when
    the layer holds no polygons (a :class:`UsageError` naming the layer)."""
    import rasterio

    from al_loop.data.products import open_product, valid_mask
    from al_loop.data.vectors import write_layer
    from al_loop.science.measure import product_area_crs

    info = open_product(product)
    if not info.crs_wkt:
        raise ProductError(product, "has no CRS: nothing to measure in metres")
    geometries, columns = _read_polygons(polygons, layer, info.crs_wkt)
    viewing, report = viewing_of(product), MeasureReport()
    report.warnings += viewing_warnings(product, viewing)
    area_crs = product_area_crs(info.crs_wkt, info.transform, info.width, info.height)
    windows = [_window_of(geometry, info) for geometry in geometries]
    with rasterio.open(info.path) as src:
        whole = src.read(1) if info.width * info.height <= WHOLE_READ_PIXELS else None
        for geometry, window in zip(geometries, windows, strict=True):
            c0, r0, c1, r1 = window
            values = (whole[r0:r1, c0:c1] if whole is not None
                      else src.read(1, window=((r0, r1), (c0, c1)))).astype(np.float32)
            values[~valid_mask(values, info.null)] = np.nan
            report.rows.append(pit_columns(geometry, window, values, info.transform, info.crs_wkt, area_crs, viewing))
    merged = {**columns, **{k: np.array([r[k] for r in report.rows]) for k in report.rows[0]}}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_layer(out, "measured", geometries, merged, info.crs_wkt)
    report.out = out
    return report


def _window_of(geometry, info) -> Window:
    from affine import Affine

    inverse = ~Affine(*info.transform)
    x0, y0, x1, y1 = geometry.bounds
    cols, rows = zip(*(inverse @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=False)
    bbox = (max(0, int(min(cols))), max(0, int(min(rows))), min(info.width, int(math.ceil(max(cols)))),
            min(info.height, int(math.ceil(max(rows)))))
    if bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
        raise UsageError(f"a polygon at {geometry.centroid.wkt} lies outside {info.path}")
    return window_around(bbox, info.width, info.height)


def _read_polygons(path: Path, layer: str | None, crs_wkt: str) -> tuple[list, dict]:
    """The polygons of ``layer`` (the file's only one when not named), in the product's CRS, and
    their attribute columns; a :class:`UsageError` for a missing layer, or one without polygons."""
    import pyogrio
    import pyogrio.raw
    import shapely
    from pyproj import CRS

    if not Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    layers = [name for name, _ in pyogrio.list_layers(path)]
    if layer is None and len(layers) != 1:
        raise UsageError(f"{path} holds {len(layers)} layers ({', '.join(layers)}): name the one to read", param="layer")
    name = layer or (layers[0] if layers else None)
    if name is None or name not in layers:
        raise UsageError(f"{path} has no layer {name!r}" + (f" (it holds {', '.join(layers)})" if layers else ""))
    meta, _, wkb, values = pyogrio.raw.read(path, layer=name)
    shapes = list(shapely.from_wkb(wkb)) if wkb is not None else []
    if not shapes or any(g is None or g.is_empty for g in shapes):
        empty = sum(g is None or g.is_empty for g in shapes)
        raise UsageError(f"{path}: layer {name} has no polygons to measure" if not shapes else
                         f"{path}: layer {name} has {empty} features without a geometry: nothing measured")
    source = CRS.from_user_input(meta["crs"]).to_wkt() if meta.get("crs") else None
    geometries = [g if source is None else reproject(g, source, crs_wkt) for g in shapes]
    return geometries, dict(zip(meta["fields"], values, strict=False))
