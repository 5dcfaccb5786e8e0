"""Image chips of candidates, cut from their products, and each product's coverage record.

A chip is a PNG at the product's full resolution, ``CHIP_DIAMETERS`` diameters across (at least
``MIN_CHIP_PX`` pixels, at most ``MAX_CHIP_PX``), centred on the pit, in the product's own linear
stretch (:func:`al_loop.data.products.product_stretch`, one per product, as its tiles have). Drawn
on it: the pit's outline (yellow), a scale bar (bottom left), north (top right, from the
product's CRS) and the direction to the sun with its incidence (top left, from the label's
``VIEWING_PARAMETERS``; a product without them gets the chip and "sun: not in label").
Null pixels (beyond the product's edge too) are black.

A candidate's product is the one whose product ID it carries, else the first given whose raster
holds its position. Each product given gets its coverage record
(:mod:`al_loop.science.coverage_record`, the one ``map`` reports too), counting the catalogue
entries a pit of the layer matched.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from al_loop.data.catalogue import CatalogueEntry
from al_loop.data.mars import MARS_LONLAT, from_lonlat, reproject
from al_loop.data.products import Product, Stretch, gdal_env, open_product, open_raster, product_stretch, valid_mask
from al_loop.data.viewing import Viewing, read_viewing
from al_loop.mapping.outputs import nice_length, north_direction
from al_loop.science.coverage_record import CoverageRecord, product_coverage

CHIP_DIAMETERS = 3.0
MIN_CHIP_PX = 128
MAX_CHIP_PX = 2048
OUTLINE = (255, 221, 0)
SUN = (255, 140, 0)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@dataclass
class OpenProduct:
    info: Product
    viewing: Viewing | None
    stretch: Stretch


def open_for_chips(path: Path) -> OpenProduct:
    info = open_product(path)
    viewing = read_viewing(path) if Path(path).suffix.upper() == ".LBL" else None
    with gdal_env(), open_raster(info.path) as src:
        stretch = product_stretch(info, src)
    return OpenProduct(info, viewing, stretch)


# ---- which product, which pixels -------------------------------------------------------------------------------


def pixel_of(info: Product, lat: float, lon_e: float) -> tuple[float, float]:
    """(col, row) of a point in the product's pixels (may lie outside it)."""
    from affine import Affine

    x, y = from_lonlat(info.crs_wkt, (lon_e + 180.0) % 360.0 - 180.0, lat)
    col, row = ~Affine(*info.transform) * (float(x), float(y))
    return col, row


def product_for(candidate, products: Sequence[OpenProduct]) -> OpenProduct | None:
    named = [p for p in products if p.info.product_id.upper() == candidate.product_id.upper()]
    if named:
        return named[0]
    for product in products:
        if product.info.crs_wkt:
            col, row = pixel_of(product.info, candidate.lat, candidate.lon_e)
            if 0 <= col < product.info.width and 0 <= row < product.info.height:
                return product
    return None


def chip_window(col: float, row: float, diameter_px: float) -> tuple[int, int, int]:
    """(col0, row0, side) of the square chip around a pit (module docstring's size rule)."""
    side = int(min(MAX_CHIP_PX, max(MIN_CHIP_PX, math.ceil(CHIP_DIAMETERS * diameter_px)))) if math.isfinite(diameter_px) \
        else MIN_CHIP_PX
    return int(round(col - side / 2)), int(round(row - side / 2)), side


def read_window(src, product: Product, col0: int, row0: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (side, side) float32, valid (side, side) bool): the product's pixels in the window,
    what lies beyond its edge invalid."""
    values = np.zeros((side, side), np.float32)
    valid = np.zeros((side, side), bool)
    c0, r0 = max(0, col0), max(0, row0)
    c1, r1 = min(product.width, col0 + side), min(product.height, row0 + side)
    if c0 < c1 and r0 < r1:
        part = src.read(1, window=((r0, r1), (c0, c1)))
        values[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = part
        valid[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = valid_mask(part, product.null)
    return values, valid


# ---- drawing ---------------------------------------------------------------------------------------------------


def render_chip(grey: np.ndarray, outline_px: list[np.ndarray], metres_per_px: float, north: tuple[float, float],
                viewing: Viewing | None):
    """An RGB PIL image of ``grey`` (side, side) uint8 with the outline rings ((K, 2) col, row each),
    scale bar, north and sun drawn on."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(image)
    side = grey.shape[0]
    font = ImageFont.load_default(size=max(11, side // 16))
    for ring in outline_px:
        draw.line([tuple(p) for p in ring], fill=OUTLINE, width=max(1, side // 128))
    metres = nice_length(0.3 * side * metres_per_px)
    length, y = metres / metres_per_px, side * 0.92
    draw.rectangle([side * 0.05 - 1, y - 2, side * 0.05 + length + 1, y + 3], fill=BLACK)
    draw.rectangle([side * 0.05, y - 1, side * 0.05 + length, y + 2], fill=WHITE)
    draw.text((side * 0.05, y - 4), f"{metres:g} m" if metres < 1000 else f"{metres / 1000:g} km", fill=WHITE,
              font=font, anchor="ls", stroke_width=2, stroke_fill=BLACK)
    _arrow(draw, (side * 0.88, side * 0.14), north, side * 0.1, "N", font, WHITE)
    if viewing is not None:
        _arrow(draw, (side * 0.14, side * 0.14), viewing.toward_sun(), side * 0.1, "", font, SUN)
        draw.text((side * 0.04, side * 0.27), f"sun i={viewing.incidence_deg:.0f}", fill=WHITE, font=font,
                  stroke_width=2, stroke_fill=BLACK)
    else:
        draw.text((side * 0.04, side * 0.04), "sun: not in label", fill=WHITE, font=font, stroke_width=2, stroke_fill=BLACK)
    return image


def _arrow(draw, centre: tuple[float, float], direction: tuple[float, float], size: float, label: str, font,
           fill: tuple[int, int, int]) -> None:
    """An arrow of ``size`` pixels through ``centre`` pointing along ``direction`` (d_col, d_row), edged in black."""
    (x, y), (dx, dy) = centre, direction
    tail, head = (x - dx * size / 2, y - dy * size / 2), (x + dx * size / 2, y + dy * size / 2)
    thick = max(2, int(size / 12))
    for width, colour in ((thick + 2, BLACK), (thick, fill)):
        draw.line([tail, head], fill=colour, width=width)
        left = (head[0] - dx * size / 3 - dy * size / 5, head[1] - dy * size / 3 + dx * size / 5)
        right = (head[0] - dx * size / 3 + dy * size / 5, head[1] - dy * size / 3 - dx * size / 5)
        draw.line([left, head, right], fill=colour, width=width)
    if label:
        draw.text((tail[0] - dx * 8, tail[1] - dy * 8), label, fill=WHITE, font=font, anchor="mm", stroke_width=2,
                  stroke_fill=BLACK)


def outline_pixels(outline_lonlat, product: Product, col0: int, row0: int) -> list[np.ndarray]:
    """The outline's exterior rings as (K, 2) chip pixel coordinates; [] without an outline."""
    import shapely
    from affine import Affine

    if outline_lonlat is None or outline_lonlat.is_empty or outline_lonlat.geom_type == "Point":
        return []
    local = reproject(outline_lonlat, MARS_LONLAT, product.crs_wkt)
    inverse = ~Affine(*product.transform)
    rings = []
    for part in getattr(local, "geoms", [local]):
        xy = shapely.get_coordinates(part.exterior)
        cols, rows = inverse * (xy[:, 0], xy[:, 1])
        rings.append(np.column_stack([np.asarray(cols) - col0, np.asarray(rows) - row0]))
    return rings


# ---- the candidates' chips and the products' records -----------------------------------------------------------


def write_chip(candidate, outline, product: OpenProduct, folder: Path) -> Path:
    info = product.info
    col, row = pixel_of(info, candidate.lat, candidate.lon_e)
    diameter_px = candidate.diameter_m / info.pixel_size if math.isfinite(candidate.diameter_m) else _outline_px(outline, info)
    col0, row0, side = chip_window(col, row, diameter_px)
    with gdal_env(), open_raster(info.path) as src:
        values, valid = read_window(src, info, col0, row0, side)
    grey = product.stretch.apply(values, valid)
    image = render_chip(grey, outline_pixels(outline, info, col0, row0), info.pixel_size, north_direction(info),
                        product.viewing)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(candidate.id)}.png"
    image.save(path)
    return path


def _outline_px(outline, info: Product) -> float:
    if outline is None or outline.geom_type == "Point":
        return math.nan
    local = reproject(outline, MARS_LONLAT, info.crs_wkt)
    x0, y0, x1, y1 = local.bounds
    return max(x1 - x0, y1 - y0) / info.pixel_size


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "pit"


def write_chips(candidates: list, outlines: dict, product_paths: Sequence[Path], folder: Path,
                entries: Sequence[CatalogueEntry], found: np.ndarray) -> tuple[list[CoverageRecord], list[str]]:
    """Each candidate's chip (its ``chip`` set to ``chips/<id>.png``) and each product's record;
    ``found`` (M,) bool: the catalogue entries a pit of the layer matched."""
    products = [open_for_chips(Path(p)) for p in product_paths]
    warnings = []
    for candidate in candidates:
        product = product_for(candidate, products)
        if product is None or not product.info.crs_wkt:
            continue
        path = write_chip(candidate, outlines.get(candidate.id), product, folder)
        candidate.chip = f"{folder.name}/{path.name}"
    unchipped = [c.id for c in candidates if not c.chip]
    if unchipped:
        why = "no --product given" if not products else "no product given holds them"
        warnings.append(f"{len(unchipped)} candidate(s) without a chip ({why}): {', '.join(unchipped[:10])}")
    counts = {}
    for candidate in candidates:
        product = product_for(candidate, products)
        if product is not None:
            counts[product.info.product_id] = counts.get(product.info.product_id, 0) + 1
    return [product_record(p, entries, found, counts.get(p.info.product_id, 0)) for p in products], warnings


def product_record(product: OpenProduct, entries: Sequence[CatalogueEntry], found: np.ndarray,
                   candidates: int) -> CoverageRecord:
    """The product's coverage record; ``entries`` empty when no catalogue was given."""
    return product_coverage(product.info.path, list(entries) if len(entries) else None, found, candidates)
