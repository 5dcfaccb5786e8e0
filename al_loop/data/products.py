"""Map-projected products (a HiRISE RDR, a GeoTIFF, a PDS image, an ISIS cube): opened through
rasterio without naming a driver, read by column strips, never whole.

GDAL's PDS driver reads the JPEG2000 a HiRISE ``.LBL`` names and the label's map
projection, but neither the null value nor the scaling, and when the label's size
disagrees with the image it silently uses the image's: those come from the label itself
(``CORE_NULL``, ``SCALING_FACTOR``, ``OFFSET``, ``LINES``/``LINE_SAMPLES``). A HiRISE JP2 is
one JPEG2000 tile, so random windows cost seconds each: :func:`convert` writes a tiled
GeoTIFF once, by full-height column strips, and tiles are cut from that.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from al_loop.data.mars import not_on_mars
from al_loop.errors import ProductError

# Tiled GeoTIFF blocks: what random tile windows read fast.
BLOCK = 256
# Bytes of one column strip while converting: bounds memory whatever the product's height.
STRIP_BYTES = 64 * 1024 * 1024
STRETCH_PERCENTILES = (0.5, 99.5)
# GDAL's block cache defaults to 5 % of the machine's memory and fills with every block
# written or read: capped, so memory stays flat as products grow.
GDAL_CACHE_MB = 64


def gdal_env():
    """The GDAL settings every product read and write runs under. One decoding thread: with
    several, a truncated multi-tile JPEG2000 read returns zeros instead of failing (measured
    here; not slower on 2 cores)."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_NUM_THREADS=1)


@dataclass(frozen=True)
class Product:
    """What the loop needs to know about a product, read once from its file (and label)."""

    path: str  # the file the user named (.LBL, .tif, .IMG, .cub)
    product_id: str
    width: int
    height: int
    dtype: str
    crs_wkt: str | None  # None: the file carries no CRS (the map is then in pixel coordinates)
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    null: float | None  # the value of pixels without data
    scaling: tuple[float, float] = (1.0, 0.0)  # (SCALING_FACTOR, OFFSET): DN -> I/F

    @property
    def pixel_size(self) -> float:
        return float(abs(self.transform[0]))


def open_product(path: str | Path) -> Product:
    """The product's description; a :class:`ProductError` naming the file for anything unusable."""
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.exists():
        raise ProductError(path, "no such file")
    label = read_label(path) if path.suffix.lower() == ".lbl" else {}
    try:
        with open_raster(path) as src:
            product = _describe(path, src, label)
    except RasterioIOError as exc:
        raise ProductError(path, f"cannot be read as a raster ({exc})") from None
    _check_label_size(product, label)
    if product.crs_wkt and (why := not_on_mars(product.crs_wkt)):
        raise ProductError(path, why)
    return product


def _describe(path: Path, src, label: dict) -> Product:
    if src.count < 1:
        raise ProductError(path, "holds no raster band")
    image = label.get("image", {})
    null = image.get("CORE_NULL", src.nodata)
    scaling = (float(image.get("SCALING_FACTOR", 1.0)), float(image.get("OFFSET", 0.0)))
    crs = src.crs.to_wkt() if src.crs else None
    return Product(str(path), str(label.get("PRODUCT_ID") or path.stem), src.width, src.height, src.dtypes[0],
                   crs, tuple(src.transform)[:6], None if null is None else float(null), scaling)


def read_label(path: Path) -> dict:
    """PRODUCT_ID and the IMAGE object's size, null and scaling from a PDS3 label (``pvl``)."""
    import pvl

    try:
        label = pvl.load(str(path))
    except (OSError, ValueError, pvl.exceptions.LexerError) as exc:
        raise ProductError(path, f"not a readable PDS3 label ({exc})") from None
    image = _find_image(label)
    values = {k: _plain(image[k]) for k in ("LINES", "LINE_SAMPLES", "CORE_NULL", "SCALING_FACTOR", "OFFSET") if k in image}
    return {"PRODUCT_ID": _plain(label.get("PRODUCT_ID")), "image": values}


def _find_image(label) -> dict:
    # HiRISE RDR labels nest IMAGE inside UNCOMPRESSED_FILE; plain PDS labels have it at the top.
    if "IMAGE" in label:
        return label["IMAGE"]
    for _, value in label.items():
        if hasattr(value, "get") and "IMAGE" in value:
            return value["IMAGE"]
    return {}


def _plain(value):
    """pvl's Quantity (value with units) -> its number; strings as they are."""
    return getattr(value, "value", value)


def _check_label_size(product: Product, label: dict) -> None:
    image = label.get("image", {})
    if "LINES" in image and "LINE_SAMPLES" in image:
        said = (int(image["LINE_SAMPLES"]), int(image["LINES"]))
        if said != (product.width, product.height):
            raise ProductError(product.path, f"the label says {said[0]} x {said[1]} pixels but its image holds "
                                             f"{product.width} x {product.height}: label and image do not belong together")


def read_strip(src, col: int, width: int, row: int = 0, height: int | None = None) -> np.ndarray:
    """One window of band 1: full height by default (what a single-tile JPEG2000 reads fastest)."""
    from rasterio.windows import Window

    height = src.height - row if height is None else height
    return src.read(1, window=Window(col, row, width, height))


def strip_width(product: Product) -> int:
    """Columns per strip so one strip holds at most ``STRIP_BYTES``, a whole number of blocks."""
    per_column = product.height * np.dtype(product.dtype).itemsize
    return int(min(product.width, max(BLOCK, (STRIP_BYTES // max(1, per_column)) // BLOCK * BLOCK)))


def needs_conversion(src) -> bool:
    """True unless the file is already a GeoTIFF tiled in small blocks (random windows are cheap)."""
    block_h, block_w = src.block_shapes[0]
    return src.driver != "GTiff" or block_h > 1024 or block_w > 1024 or block_h == 1


def convert(product: Product, dest: Path, progress: bool = True) -> Path:
    """Write ``product`` as a tiled GeoTIFF at ``dest``, reading full-height column strips
    (memory holds one strip); the temporary file is renamed into place only when whole."""
    import rasterio
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    step = strip_width(product)
    with gdal_env(), open_raster(product.path) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": src.dtypes[0],
                   "crs": src.crs, "transform": src.transform, "nodata": product.null, "tiled": True,
                   "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(tmp, "w", **profile) as dst:
            for col in tqdm(range(0, src.width, step), desc=f"convert {product.product_id}", unit="strip", disable=not progress):
                width = min(step, src.width - col)
                dst.write(read_strip(src, col, width), 1, window=((0, src.height), (col, col + width)))
    tmp.replace(dest)
    return dest


def open_raster(path: str | Path):
    """rasterio.open, without the warning a raster without georeferencing raises (it is allowed)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


@dataclass(frozen=True)
class Stretch:
    """One linear stretch per product (DN ``lo`` -> 1, ``hi`` -> 255; 0 is kept for null), so
    neighbouring tiles join without seams."""

    lo: float
    hi: float

    def apply(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        span = max(self.hi - self.lo, 1e-12)
        scaled = np.clip((values.astype(np.float32) - self.lo) / span, 0.0, 1.0) * 254.0 + 1.0
        return np.where(valid, np.round(scaled), 0).astype(np.uint8)


def product_stretch(product: Product, src, overview_side: int = 2048) -> Stretch:
    """Percentiles of a decimated read of the whole product (JPEG2000 serves it from its
    resolution levels), nulls excluded."""
    factor = max(1, int(np.ceil(max(src.width, src.height) / overview_side)))
    shape = (max(1, src.height // factor), max(1, src.width // factor))
    overview = src.read(1, out_shape=shape)
    valid = valid_mask(overview, product.null)
    if not valid.any():
        raise ProductError(product.path, "holds no valid pixels (all null)")
    lo, hi = np.percentile(overview[valid], STRETCH_PERCENTILES)
    return Stretch(float(lo), float(hi))


def valid_mask(values: np.ndarray, null: float | None) -> np.ndarray:
    """Pixels that hold data: not the null value, and finite."""
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if null is not None:
        valid &= values != null
    return valid


# -- the area actually searched: valid pixels, not the null border --------------------------------------------------

# Cells of a valid mask are counted in blocks of this side, each count weighted by the true area of one cell at
# the block's centre: the projection's area scale changes by far less than 1e-4 across a block of a product.
AREA_BLOCK = 64
VALID_MASK_SIDE = 4096  # a product's valid pixels are sampled on a grid of at most this side


@dataclass(frozen=True)
class ValidMask:
    """Where a product holds data, on a grid of cells ``factor`` product pixels a side, each cell
    represented by the product pixel at its centre (a decimated read samples, it does not average)."""

    valid: np.ndarray  # (h, w) bool
    transform: tuple[float, float, float, float, float, float]  # the cells' affine in the product's CRS
    factor: int  # product pixels per cell side
    crs_wkt: str | None

    @property
    def area_m2(self) -> float:
        """The true area of the valid cells in m2 (NaN without a CRS): see :func:`valid_area_m2`."""
        return valid_area_m2(self.valid, self.transform, self.crs_wkt)


def sampled_transform(transform: tuple, factor: int) -> tuple[float, float, float, float, float, float]:
    """The affine of a grid that keeps every ``factor``-th product pixel (pixels 0, f, 2f, ..., as
    the quicklook's overview pastes them from tiles), each cell centred on the pixel it keeps."""
    from affine import Affine

    shift = 0.5 - factor / 2.0  # cell i spans product pixels [f*i + 0.5 - f/2, f*i + 0.5 + f/2)
    return tuple(Affine(*transform) @ Affine.translation(shift, shift) @ Affine.scale(factor))[:6]


def valid_area_m2(valid: np.ndarray, transform: tuple, crs_wkt: str | None, block: int = AREA_BLOCK) -> float:
    """The true area in m2 of the True cells of ``valid`` ((H, W) bool, a grid with affine
    ``transform`` in ``crs_wkt``): valid cells counted per ``block`` x ``block`` block, each count
    times the area of one cell at the block's centre measured on a Lambert azimuthal equal-area
    projection centred on the grid (true for equirectangular, stereographic or lon/lat grids alike).
    NaN without a CRS (pixels have no size on the ground)."""
    if not crs_wkt:
        return float("nan")
    valid = np.asarray(valid, bool)
    height, width = valid.shape
    if not valid.any():
        return 0.0
    hb, wb = -(-height // block), -(-width // block)
    padded = np.zeros((hb * block, wb * block), bool)
    padded[:height, :width] = valid
    counts = padded.reshape(hb, block, wb, block).sum(axis=(1, 3))
    rows, cols = np.nonzero(counts)
    # the centre of each block's part inside the grid (the last row and column of blocks may be partial)
    centre_col = cols * block + np.minimum(block, width - cols * block) / 2.0
    centre_row = rows * block + np.minimum(block, height - rows * block) / 2.0
    return float((counts[rows, cols] * cell_areas_m2(transform, crs_wkt, centre_col, centre_row)).sum())


def cell_areas_m2(transform: tuple, crs_wkt: str, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(K,) true areas in m2 of the grid cells centred at pixel coordinates (``cols``, ``rows``), each (K,):
    the cell's four corners on an equal-area projection centred on the grid's origin cell, by the shoelace."""
    from affine import Affine
    from pyproj import CRS, Transformer

    from al_loop.data.mars import equal_area_crs, to_lonlat

    t = Affine(*transform)
    x0, y0 = t @ (float(np.mean(cols)), float(np.mean(rows)))
    lon, lat = to_lonlat(crs_wkt, x0, y0)
    to_area = Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_wkt(equal_area_crs(crs_wkt, float(lon), float(lat))),
                                   always_xy=True)
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    xy = [to_area.transform(*(t @ (cols + dc, rows + dr))) for dc, dr in corners]
    x, y = np.array([p[0] for p in xy]), np.array([p[1] for p in xy])  # (4, K)
    return 0.5 * np.abs((x * np.roll(y, -1, axis=0) - np.roll(x, -1, axis=0) * y).sum(axis=0))


def read_valid_mask(product: Product, side: int = VALID_MASK_SIDE) -> ValidMask:
    """The product's valid pixels, sampled at most ``side`` cells a side (a decimated read:
    JPEG2000 serves it from its resolution levels, a tiled GeoTIFF from its overviews or blocks)."""
    from affine import Affine

    factor = max(1, -(-max(product.width, product.height) // side))
    shape = (-(-product.height // factor), -(-product.width // factor))
    with gdal_env(), open_raster(product.path) as src:
        values = src.read(1, out_shape=shape) if factor > 1 else src.read(1)
    # GDAL fits the decimated grid to the product exactly (nearest pixel to each cell's centre)
    scale = Affine.scale(product.width / shape[1], product.height / shape[0])
    return ValidMask(valid_mask(values, product.null), tuple(Affine(*product.transform) @ scale)[:6], factor,
                     product.crs_wkt)
