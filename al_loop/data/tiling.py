"""Cutting a product into overlapping 8-bit tiles, and the manifest that ties each tile back to it.

Windows step by ``size - overlap``; the last row and column snap to the product's edge
(so every pixel is in a tile and no tile hangs over the edge). A tile that is mostly null
(outside the image footprint of a map-projected product) is skipped. Tiles are PNG, one
contrast stretch per product so neighbours join without seams; the manifest records each
tile's window, affine transform and content hash (the embedding cache key), and the
product's CRS, stretch and null value: ``al-loop map`` needs nothing else.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from al_loop.data.files import atomic_write
from al_loop.data.products import (
    Product,
    Stretch,
    convert,
    gdal_env,
    needs_conversion,
    open_raster,
    product_stretch,
    valid_mask,
)
from al_loop.errors import ProductError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
MAX_NULL_FRACTION = 0.95


@dataclass(frozen=True)
class Window:
    col: int
    row: int
    width: int
    height: int


def starts(length: int, size: int, step: int) -> list[int]:
    """Window starts along one axis: every ``step``, the last one snapped to the edge."""
    if length <= size:
        return [0]
    out = list(range(0, length - size, step))
    return out + [length - size]


def tile_windows(width: int, height: int, size: int = 1024, overlap: int = 256) -> list[Window]:
    """Row-major windows of ``size`` (or the product's side, if smaller) overlapping by ``overlap``."""
    if size < 16 or not 0 <= overlap < size:
        raise ProductError("<tiling>", f"tile size {size} and overlap {overlap}: need size >= 16 and 0 <= overlap < size")
    step = size - overlap
    w, h = min(size, width), min(size, height)
    return [Window(c, r, w, h) for r in starts(height, size, step) for c in starts(width, size, step)]


@dataclass(frozen=True)
class TileRecord:
    """One tile as the manifest keeps it."""

    file: str  # relative to the manifest's folder
    product_id: str
    col: int
    row: int
    width: int
    height: int
    transform: tuple[float, float, float, float, float, float]  # the tile's own affine (pixel (0, 0) = its corner)
    sha256: str  # of the PNG's bytes: the embedding cache key
    null_fraction: float

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)


@dataclass
class ProductEntry:
    """A product as the manifest keeps it: enough to map tiles back without reopening it."""

    product_id: str
    source: str
    width: int
    height: int
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    null: float | None
    stretch: tuple[float, float]
    tile_size: int
    overlap: int
    tiles: list[TileRecord] = field(default_factory=list)
    skipped_null: int = 0

    @cached_property
    def window_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(col, row, width, height) of every tile as arrays: a map asks per pit, thousands of times."""
        return tuple(np.array([getattr(t, k) for t in self.tiles], dtype=np.int64) for k in ("col", "row", "width", "height"))


def tile_transform(product_transform, window: Window) -> tuple[float, float, float, float, float, float]:
    """The affine of a window: the product's, moved to the window's corner."""
    a, b, c, d, e, f = product_transform
    return (a, b, c + a * window.col + b * window.row, d, e, f + d * window.col + e * window.row)


def cut_tiles(product: Product, out_dir: Path, size: int = 1024, overlap: int = 256, work_dir: Path | None = None,
              progress: bool = True) -> ProductEntry:
    """Tile one product into ``out_dir/<product_id>/``; returns its manifest entry (not yet saved)."""
    from tqdm import tqdm

    source = _readable_source(product, work_dir or out_dir / ".work", progress)
    folder = out_dir / safe_name(product.product_id)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):  # a product tiled again (another size) must not keep old tiles
        stale.unlink()
    with gdal_env(), open_raster(source) as src:
        stretch = product_stretch(product, src)
        entry = ProductEntry(product.product_id, product.path, product.width, product.height, product.crs_wkt,
                             product.transform, product.null, (stretch.lo, stretch.hi), size, overlap)
        windows = tile_windows(product.width, product.height, size, overlap)
        for window in tqdm(windows, desc=f"tile {product.product_id}", unit="tile", disable=not progress):
            record = _write_tile(src, product, stretch, window, folder, out_dir)
            if record is None:
                entry.skipped_null += 1
            else:
                entry.tiles.append(record)
    return entry


def _write_tile(src, product: Product, stretch: Stretch, window: Window, folder: Path, out_dir: Path) -> TileRecord | None:
    values = src.read(1, window=((window.row, window.row + window.height), (window.col, window.col + window.width)))
    valid = valid_mask(values, product.null)
    null_fraction = 1.0 - float(valid.mean())
    if null_fraction > MAX_NULL_FRACTION:
        return None
    buffer = io.BytesIO()
    Image.fromarray(stretch.apply(values, valid)).save(buffer, format="PNG")
    data = buffer.getvalue()
    path = folder / f"{safe_name(product.product_id)}_r{window.row:06d}_c{window.col:06d}.png"
    atomic_write(path, data)
    return TileRecord(str(path.relative_to(out_dir)), product.product_id, window.col, window.row, window.width,
                      window.height, tile_transform(product.transform, window), hashlib.sha256(data).hexdigest(),
                      round(null_fraction, 4))


def _readable_source(product: Product, work_dir: Path, progress: bool) -> Path:
    """The product itself when windows read fast from it, else a tiled GeoTIFF written once."""
    with open_raster(product.path) as src:
        if not needs_conversion(src):
            return Path(product.path)
    # not .tif: the tile folder is imported into Label Studio, and this is no tile
    converted = work_dir / f"{safe_name(product.product_id)}.gtiff"
    if converted.is_file():
        return converted
    return convert(product, converted, progress)


def safe_name(name: str) -> str:
    """A product id as file and layer names carry it (``tiles_<id>``, ``valid_<id>``, its tile folder)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# -- the manifest -------------------------------------------------------------------------


def load_manifest(folder: Path) -> dict[str, ProductEntry]:
    """Product id -> entry, from ``folder/manifest.json`` (empty when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        blob = json.loads(path.read_text())
        return {pid: _entry(raw) for pid, raw in blob["products"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ProductError(path, f"not a tile manifest this version can read ({exc})") from None


def _entry(raw: dict) -> ProductEntry:
    tiles = [TileRecord(**{**t, "transform": tuple(t["transform"])}) for t in raw.pop("tiles")]
    return ProductEntry(**{**raw, "transform": tuple(raw["transform"]), "stretch": tuple(raw["stretch"]), "tiles": tiles})


def save_manifest(folder: Path, entries: dict[str, ProductEntry]) -> Path:
    """Write the manifest whole (a product tiled again replaces its entry)."""
    payload = {"version": MANIFEST_VERSION, "products": {pid: asdict(e) for pid, e in sorted(entries.items())}}
    path = folder / MANIFEST
    atomic_write(path, json.dumps(payload, indent=1).encode())
    return path


# -- a run over several products --------------------------------------------------------


@dataclass
class TilingReport:
    entries: dict[str, ProductEntry] = field(default_factory=dict)  # tiled in this run
    failures: list[ProductError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manifest: Path | None = None


# What a folder given to `tile` is searched for. A HiRISE .JP2 is opened through the .LBL beside it
# (the label holds its geometry), so a .JP2 counts only where no .LBL of its name is there.
PRODUCT_SUFFIXES = (".lbl", ".tif", ".tiff", ".img", ".cub", ".jp2")


def products_in(paths: list[Path]) -> list[Path]:
    """``paths`` with each folder replaced by the products in it and below it, in name order (a
    folder of `al-loop fetch` holds one folder per product); a folder without one is refused."""
    found: list[Path] = []
    for path in paths:
        if not Path(path).is_dir():
            found.append(path)
            continue
        files = sorted(f for f in Path(path).rglob("*") if f.is_file() and f.suffix.lower() in PRODUCT_SUFFIXES)
        labels = {f.with_suffix("").as_posix().lower() for f in files if f.suffix.lower() == ".lbl"}
        inside = [f for f in files if not (f.suffix.lower() == ".jp2" and f.with_suffix("").as_posix().lower() in labels)]
        if not inside:
            raise ProductError(path, "a folder with no product in it (looked for "
                               f"{', '.join(s.upper() for s in PRODUCT_SUFFIXES)} files)")
        found += inside
    return found


def tile_products(paths: list[Path], out_dir: Path, size: int = 1024, overlap: int = 256,
                  progress: bool = True) -> TilingReport:
    """Tile every product (a folder: every product in it); one that cannot be read is reported and
    the others still complete. The manifest (and the footprints GeoPackage) in ``out_dir`` gain the
    products tiled here; nothing is created there until a product has opened."""
    from al_loop.data.products import open_product

    tile_windows(size, size, size, overlap)  # refuse a bad size/overlap before any work
    report = TilingReport()
    known = load_manifest(out_dir) if out_dir.is_dir() else {}  # a damaged one fails before any work
    for path in products_in(paths):
        try:
            product = open_product(path)
            if product.crs_wkt is None:
                report.warnings.append(f"{path}: no CRS; its tiles and map will be in pixel coordinates")
            out_dir.mkdir(parents=True, exist_ok=True)
            report.entries[product.product_id] = cut_tiles(product, out_dir, size, overlap, progress=progress)
        except ProductError as exc:
            report.failures.append(exc)
    if report.entries:
        known.update(report.entries)
        report.manifest = save_manifest(out_dir, known)
        write_footprints(out_dir / "tiles.gpkg", report.entries.values())
    return report


def write_footprints(path: Path, entries) -> None:
    """One layer of tile outlines per product, in its CRS: where each tile lies, in QGIS."""
    import shapely

    from al_loop.data.vectors import write_layer

    for entry in entries:
        outlines = [shapely.box(*_bounds(t.transform, t.width, t.height)) for t in entry.tiles]
        columns = {"file": [t.file for t in entry.tiles], "col": [t.col for t in entry.tiles],
                   "row": [t.row for t in entry.tiles], "sha256": [t.sha256 for t in entry.tiles]}
        write_layer(path, f"tiles_{safe_name(entry.product_id)}", outlines, columns, entry.crs_wkt)


def _bounds(transform, width: int, height: int) -> tuple[float, float, float, float]:
    a, b, c, d, e, f = transform
    xs = [c, c + a * width, c + b * height, c + a * width + b * height]
    ys = [f, f + d * width, f + e * height, f + d * width + e * height]
    return min(xs), min(ys), max(xs), max(ys)
