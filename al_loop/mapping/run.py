"""``al-loop map``: a decoder over every tile of each product, to a GIS layer of pits.

Per product: embeddings from the shared cache (missing ones encoded), the decoder's
probabilities blended across overlaps row band by row band, thresholded and polygonized
into pits joined across seams, measured, and written: a GeoPackage layer per product in
its own CRS, one layer of every pit in Mars lon/lat (IAU_2015:49900), the tile
footprints, the area searched (``valid_<product>``: the valid pixels under kept tiles, with
its ``valid_area_m2`` and ``pixel_m``; tiles up to 95 % null are kept, so the tile outlines
overstate it), optionally GeoJSON (lon/lat), a probability GeoTIFF and a quicklook PNG.
``valid_area_m2`` and ``pixel_m`` are also the GDAL metadata of the product's ``pits_`` and
``valid_`` layers (``pits_lonlat``'s: their sums over products and the coarsest pixel). Each
product gets its coverage record (:mod:`al_loop.science.coverage_record`: sun and view, scale,
smallest diameter, and with a catalogue the entries in the area searched that its pits matched),
in the report's summary. A product that cannot be mapped is reported; the others still complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.catalogue import CatalogueEntry, read_catalogue
from al_loop.data.mars import lonlat_wkt
from al_loop.data.products import open_product
from al_loop.data.tiling import (
    ProductEntry,
    load_manifest,
    safe_name,
    tile_products,
    write_footprints,
)
from al_loop.data.vectors import write_geojson, write_layer
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import embed_files
from al_loop.errors import AlLoopError, ImageError, ProductError
from al_loop.mapping.assemble import PitAssembler, pixel_size, simplify_outline
from al_loop.mapping.blend import RowBlender
from al_loop.mapping.model import MapModel, load_map_model
from al_loop.mapping.outputs import (
    ProbabilityRaster,
    overview_from_tiles,
    read_overlay,
    searched_mask,
    write_quicklook,
)
from al_loop.mapping.pit_types import pit_types
from al_loop.models.decoder import predict_tile, predict_tile_classes
from al_loop.models.pits import THRESHOLD, default_area_limits, min_object_pixels
from al_loop.science.compare import Footprint, mask_polygon
from al_loop.science.coverage_record import CoverageRecord, coverage_record, entries_found
from al_loop.science.measure import (
    PitPixels,
    lonlat_outline,
    measure,
    product_area_crs,
    tiles_touched,
)
from al_loop.science.morphometry import window_around
from al_loop.science.pit_measures import pit_columns, viewing_of, viewing_warnings, window_from_tiles
from al_loop.settings import Settings, resolve

EXPERT_WEIGHT = 1000.0
DEFAULT_TILE_SIDE = 1024  # for decoders that do not record their training tiles' side


@dataclass
class MapJob:
    products: list[Path]
    out: Path  # the GeoPackage
    tiles: Path  # the tile folder (its manifest); products not in it are tiled there first
    decoder: Path | None = None
    workspace: Path | None = None
    geojson: Path | None = None
    probabilities: Path | None = None  # folder for <product>_probability.tif
    quicklook: bool = True
    size: int | None = None  # tile side for products tiled now; None: the decoder's training tiles' side
    overlap: int | None = None  # None: a quarter of the tile side
    cache_dir: Path | None = None
    progress: bool = True
    token: str | None = None  # Label Studio token: with --workspace, the expert's answers replace the decoder
    settings: Settings | None = None  # SAM (for the expert's bare boxes) and the image encoder's engine
    threshold: float = THRESHOLD  # a pixel is pit where the blended probability reaches this
    min_area_m2: float | None = None  # None: from the sizes of the decoder's training pits
    max_area_m2: float | None = None
    overlay: Path | None = None  # a vector file drawn over the quicklooks (expert boxes, catalogue points)
    catalogue: Path | None = None  # MGC3 or a lat/lon CSV: each coverage record's found and recall
    split_objects: bool = False  # cut merged blobs at their saddles (mapping/objects.py; off: measured worse)
    drop_low_score: bool = False  # leave out objects flagged low_score instead of writing them flagged


@dataclass
class MapReport:
    pits: dict[str, int] = field(default_factory=dict)  # product id -> pits mapped
    failures: list[AlLoopError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    left_out: dict[str, tuple[int, int]] = field(default_factory=dict)  # product id -> (too small, too large)
    flagged: dict[str, int] = field(default_factory=dict)  # product id -> pits written with a flag (low_score)
    limits: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # product id -> (min, max) m2
    radiometry: dict[str, str] = field(default_factory=dict)  # product id -> how its tiles were remapped
    valid_area_m2: dict[str, float] = field(default_factory=dict)  # product id -> area searched (NaN: no CRS)
    coverage: dict[str, CoverageRecord] = field(default_factory=dict)  # product id -> its coverage record

    def summary(self) -> dict:
        """What a JSON summary of the run holds (numbers and paths, no objects): ``coverage`` holds
        each product's :meth:`CoverageRecord.summary`."""
        return {"pits": self.pits, "valid_area_m2": {k: (v if v == v else None) for k, v in self.valid_area_m2.items()},
                "coverage": {k: record.summary() for k, record in self.coverage.items()},
                "left_out": self.left_out, "flagged": self.flagged, "limits": self.limits, "radiometry": self.radiometry,
                "outputs": [str(p) for p in self.outputs], "warnings": self.warnings,
                "failures": [str(f) for f in self.failures]}


def map_products(job: MapJob) -> MapReport:
    """Map every product; the GeoPackage lands under ``job.out`` only when one was mapped (it is
    written beside it under a temporary name until then, so a failed run leaves no map)."""
    cache, report = EmbeddingCache(job.cache_dir), MapReport()
    entries = read_catalogue(job.catalogue) if job.catalogue else None  # refused before any work
    model = load_map_model(job.decoder, job.workspace, job.token, cache, job.settings or resolve())
    job = _sized_tiles(job, model)
    overlay = read_overlay(job.overlay) if job.overlay and job.quicklook else None
    partial = job.out.with_name(f".{job.out.stem}.partial{job.out.suffix}")  # GDAL checks the extension
    partial.unlink(missing_ok=True)
    catalogue: list[tuple[object, dict]] = []  # (lon/lat outline, row) over every product
    for path in job.products:
        try:
            entry = _entry_for(path, job, report)
            pits, types = map_product(entry, model, cache, job, report)
        except (ProductError, ImageError) as exc:
            report.failures.append(exc)
            continue
        pits, rows = _sized_pits(entry, pits, types, model, job, len(catalogue), report)
        overview = overview_from_tiles(entry, job.tiles)  # the quicklook's image and where the map searched
        if job.quicklook:
            report.outputs.append(write_quicklook(job.out.with_name(f"{job.out.stem}_{entry.product_id}_quicklook.png"),
                                                  entry, job.tiles, [p.polygon for p in pits],
                                                  [r["confidence"] for r in rows], overlay, overview=overview,
                                                  pit_ids=[r["pit_id"] for r in rows], viewing=viewing_of(entry.source)))
        searched = _write_searched(partial, entry, overview, report)
        catalogue += _write_product(partial, entry, pits, rows, report)
        report.coverage[entry.product_id] = product_record(entry, rows, report.valid_area_m2[entry.product_id],
                                                           searched, entries)
    if report.pits:
        _write_catalogue(job, partial, catalogue, report)
        partial.replace(job.out)
    else:
        partial.unlink(missing_ok=True)
    return report


def _sized_pits(entry: ProductEntry, pits: list[PitPixels], types: list[tuple[str, float]], model: MapModel,
                job: MapJob, numbered: int, report: MapReport) -> tuple[list[PitPixels], list[dict]]:
    """The pits within the area limits, outlines simplified, with their table rows (numbered on
    from ``numbered``). Measures are of the pixel outline; the simplified one is what is drawn."""
    area_crs = product_area_crs(entry.crs_wkt, entry.transform, entry.width, entry.height) if entry.crs_wkt else None
    rows = [{**_row(pit, entry, model, area_crs, 0), "class": kind, "type_prob": share}
            for pit, (kind, share) in zip(pits, types, strict=False)]
    low, high = _area_limits(entry, model, job, report)
    areas = np.array([r["area_m2"] for r in rows], dtype=float)
    small = (areas < low) if low is not None else np.zeros(len(rows), bool)
    large = (areas > high) if high is not None else np.zeros(len(rows), bool)
    report.left_out[entry.product_id] = (int(small.sum()), int(large.sum()))
    kept = [i for i in range(len(pits)) if not (small[i] or large[i])]
    pixel = pixel_size(entry.transform)
    rows = [rows[i] for i in kept]
    pits = [replace(pits[i], polygon=simplify_outline(pits[i].polygon, pixel)) for i in kept]
    # shape on the simplified outline: the pixel staircase would inflate the perimeter by 4/pi
    shapes = _morphometry(entry, pits, area_crs, job, report)
    return pits, [{**row, **shape, "pit_id": numbered + n + 1} for n, (row, shape) in enumerate(zip(rows, shapes, strict=False))]


def _morphometry(entry: ProductEntry, pits: list[PitPixels], area_crs: str | None, job: MapJob,
                 report: MapReport) -> list[dict]:
    """Shape and shadow depth per pit (nothing without a CRS: no metres to measure in)."""
    if not entry.crs_wkt:
        return [{} for _ in pits]
    viewing = viewing_of(entry.source)
    if pits:
        report.warnings += viewing_warnings(entry.product_id, viewing)
    out = []
    for pit in pits:
        window = window_around(pit.bbox, entry.width, entry.height)
        pixels = window_from_tiles(entry, job.tiles, window)
        out.append(pit_columns(pit.polygon, window, pixels, entry.transform, entry.crs_wkt, area_crs, viewing))
    return out


def _area_limits(entry: ProductEntry, model: MapModel, job: MapJob, report: MapReport) -> tuple[float | None, float | None]:
    """(min, max) pit area in m2: the flags, else from the decoder's training pits; none without a CRS."""
    if not entry.crs_wkt:
        if job.min_area_m2 is not None or job.max_area_m2 is not None:
            report.warnings.append(f"{entry.product_id}: no CRS, so no area in m2: the area limits are not applied")
        return None, None
    low, high = default_area_limits(model.pit_sizes, pixel_size(entry.transform) ** 2)
    limits = (low if job.min_area_m2 is None else job.min_area_m2, high if job.max_area_m2 is None else job.max_area_m2)
    report.limits[entry.product_id] = limits
    return limits


def _write_product(gpkg: Path, entry: ProductEntry, pits: list[PitPixels], rows: list[dict],
                   report: MapReport) -> list[tuple[object, dict]]:
    """A product's pit layer and footprints; its (lon/lat outline, row) pairs for the all-pits layer."""
    write_layer(gpkg, f"pits_{entry.product_id}", [p.polygon for p in pits], _columns(rows), entry.crs_wkt,
                metadata=_area_metadata(entry, report.valid_area_m2.get(entry.product_id)))
    write_footprints(gpkg, [entry])
    report.pits[entry.product_id] = len(pits)
    report.flagged[entry.product_id] = sum(bool(r.get("flag")) for r in rows)
    if not entry.crs_wkt:
        report.warnings.append(f"{entry.product_id}: no CRS, so its pits are in pixel coordinates and left out of "
                               "the lon/lat layer and the GeoJSON")
        return []
    return [(lonlat_outline(p, entry.crs_wkt), r) for p, r in zip(pits, rows, strict=False)]


def _area_metadata(entry: ProductEntry, area_m2: float | None) -> dict[str, float | None]:
    """A product layer's metadata: the area searched and the pixel size in metres (None without a CRS)."""
    return {"valid_area_m2": area_m2, "pixel_m": pixel_size(entry.transform) if entry.crs_wkt else None}


def _write_searched(gpkg: Path, entry: ProductEntry, overview: tuple[np.ndarray, int], report: MapReport) -> Footprint | None:
    """``valid_<product>``: the valid pixels the map searched, as polygons in the product's CRS, with
    their true area (``valid_area_m2``, on an equal-area projection) and the pixel size, as columns
    and as the layer's metadata. Returns them as the product's footprint (None without a CRS or valid pixels)."""
    mask = searched_mask(entry, *overview)
    area = mask.area_m2
    report.valid_area_m2[entry.product_id] = area
    polygon = mask_polygon(mask.valid, mask.transform) if mask.valid.any() else None
    columns = {"product_id": np.array([entry.product_id], dtype=object), "valid_area_m2": np.array([area]),
               "pixel_m": np.array([pixel_size(entry.transform) if entry.crs_wkt else np.nan]),
               "sample_factor": np.array([mask.factor])}
    write_layer(gpkg, f"valid_{safe_name(entry.product_id)}", [polygon], columns, entry.crs_wkt,
                "MultiPolygon", metadata=_area_metadata(entry, area))
    if polygon is None or not entry.crs_wkt:
        return None
    return Footprint(entry.product_id, entry.crs_wkt, polygon, f"valid pixels of {entry.product_id}")


def product_record(entry: ProductEntry, rows: list[dict], area_m2: float, searched: Footprint | None,
                   entries: list[CatalogueEntry] | None) -> CoverageRecord:
    """The product's coverage record: ``area_m2`` searched (NaN: unknown), its pits (``rows``, as the
    layer holds them) against the catalogue's ``entries`` (None: none given) inside ``searched``."""
    found = None
    if entries is not None and rows and entry.crs_wkt:
        found = entries_found(*(np.array([r[k] for r in rows], float) for k in ("centroid_lon_e", "centroid_lat", "diameter_m")),
                              entries)
    pixel = pixel_size(entry.transform) if entry.crs_wkt else None
    return coverage_record(entry.product_id, entry.source, pixel, area_m2, searched, entries, found, len(rows))


def _sized_tiles(job: MapJob, model: MapModel) -> MapJob:
    """Products are tiled at the side of the decoder's training tiles unless told otherwise: every
    encoder scales a tile to one frame, so a pit in a 1024-px tile looks 12 % smaller than in a
    900-px one, and a decoder sees the ground at the scale it learned (bench/radiometry.py)."""
    size = job.size or model.tile_side or DEFAULT_TILE_SIDE
    return replace(job, size=size, overlap=size // 4 if job.overlap is None else job.overlap)


def _entry_for(path: Path, job: MapJob, report: MapReport | None = None) -> ProductEntry:
    product = open_product(path)
    entry = load_manifest(job.tiles).get(product.product_id)
    if entry is not None and report is not None and entry.tile_size != job.size:
        report.warnings.append(f"{product.product_id}: its tiles in {job.tiles} are {entry.tile_size} px, the decoder "
                               f"learned on {job.size} px tiles: pits look {entry.tile_size / job.size:.2f}x their "
                               f"size to it (tile it again at {job.size} px into another folder)")
    if entry is None:
        tiled = tile_products([path], job.tiles, job.size, job.overlap, job.progress)
        if tiled.failures:
            raise tiled.failures[0]
        entry = tiled.entries[product.product_id]
    if not entry.tiles:
        raise ProductError(path, "has no tile with data (every tile was mostly null)")
    return entry


def map_product(entry: ProductEntry, model: MapModel, cache: EmbeddingCache, job: MapJob,
                report: MapReport) -> tuple[list[PitPixels], list[tuple[str, float]]]:
    """The product's pits and their (type, share of probability): tiles brought to the training
    radiometry, decoded row by row, blended, assembled, typed."""
    encoder, linear = model.encoder_for(entry, job.tiles)
    report.radiometry[entry.product_id] = linear.describe() if linear else "as tiled"
    embedded = embed_files([job.tiles / t.file for t in entry.tiles], encoder, cache, job.progress)
    if embedded.failures:
        raise embedded.failures[0]
    blender = RowBlender(entry.width, entry.tile_size, ramp=max(1, entry.overlap))
    assembler = PitAssembler(entry.transform, entry.width, entry.height, job.threshold, split=job.split_objects)
    raster = ProbabilityRaster(job.probabilities / f"{entry.product_id}_probability.tif", entry) if job.probabilities else None
    bar = tqdm(total=len(entry.tiles), desc=f"map {entry.product_id}", unit="tile", disable=not job.progress)
    try:
        for row, tiles in groupby(sorted(entry.tiles, key=lambda t: (t.row, t.col)), key=lambda t: t.row):
            _consume(blender.advance(row), assembler, raster)
            for tile in tiles:
                probability, weight = _tile_probability(model, cache.load(tile.sha256, encoder.id), tile)
                valid = _has_data(job.tiles / tile.file) if tile.null_fraction > 0 else None  # decode only when needed
                blender.add(tile.col, tile.row, probability, valid=valid, weight=weight)
                bar.update()
        _consume(blender.finish(entry.height), assembler, raster)
    finally:
        bar.close()
        if raster:
            raster.close()
            report.outputs.append(raster.path)
    pits = assembler.finish(min_pixels=min_object_pixels((entry.tile_size, entry.tile_size), model.encoder.grid),
                            sizes=model.pit_sizes, size_scale=_size_scale(model.pit_sizes, entry),
                            drop_flagged=job.drop_low_score)
    if model.decoder.types == 1:
        return pits, [("pit", 1.0)] * len(pits)
    names = model.type_names or [f"type {k}" for k in range(1, model.decoder.types + 1)]
    return pits, pit_types(entry, pits, lambda tile: predict_tile_classes(
        model.decoder, cache.load(tile.sha256, encoder.id), (tile.height, tile.width)), names)


def _size_scale(sizes: dict | None, entry: ProductEntry) -> float:
    """Training pixels per map pixel (by area), to hold an object against the training pits'
    sizes: 1 where the training tiles' pixel size is not recorded (taken as the product's)."""
    trained = (sizes or {}).get("metres_per_pixel")
    return (pixel_size(entry.transform) / trained) ** 2 if trained and entry.crs_wkt else 1.0


def _tile_probability(model: MapModel, embedding: np.ndarray, tile) -> tuple[np.ndarray, float]:
    """The expert's mask where the expert answered the tile (outweighing overlapping decoder
    tiles), else the decoder's probabilities."""
    mask = model.expert_masks.get(tile.sha256)
    if mask is not None and mask.shape == (tile.height, tile.width):
        return mask.astype(np.float32), EXPERT_WEIGHT
    return predict_tile(model.decoder, embedding, (tile.height, tile.width)), 1.0


def _has_data(tile_png: Path) -> np.ndarray:
    """Pixels of a tile that hold data: tiling keeps 0 for null (the stretch starts at 1)."""
    from PIL import Image

    return np.asarray(Image.open(tile_png)) > 0


def _consume(strips, assembler: PitAssembler, raster: ProbabilityRaster | None) -> None:
    for strip in strips:
        assembler.add(strip)
        if raster:
            raster.write(strip)


def _row(pit: PitPixels, entry: ProductEntry, model: MapModel, area_crs: str | None, pit_id: int) -> dict:
    task_id, status = model.review(pit, entry)
    return {
        "pit_id": pit_id, "product_id": entry.product_id, "class": "pit", "confidence": pit.confidence,
        "max_prob": pit.max_probability, "object_score": getattr(pit, "object_score", np.nan),
        "flag": getattr(pit, "flag", ""), "parts": getattr(pit, "parts", 1),
        **measure(pit, entry.crs_wkt, area_crs), "touches_edge": pit.touches_edge,
        "n_tiles": tiles_touched(pit, entry), "model_version": model.version,
        "encoder_id": model.encoder.id, "review_status": status, "ls_task_id": task_id,
    }


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    if not rows:
        return {}
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    tasks = columns.pop("ls_task_id")
    columns["ls_task_id"] = np.ma.masked_array([t or 0 for t in tasks], mask=[t is None for t in tasks], dtype=np.int64)
    return columns


def _write_catalogue(job: MapJob, gpkg: Path, catalogue: list, report: MapReport) -> None:
    outlines, rows = [o for o, _ in catalogue], [r for _, r in catalogue]
    areas = [a for a in report.valid_area_m2.values() if a == a]
    # the products in this layer: those with a CRS (a known area)
    pixels = [r.map_scale_m for r in report.coverage.values() if r.map_scale_m is not None and r.valid_area_m2 is not None]
    write_layer(gpkg, "pits_lonlat", outlines, _columns(rows), lonlat_wkt(),
                metadata={"valid_area_m2": sum(areas) if areas else None, "pixel_m": max(pixels, default=None)})
    report.outputs.insert(0, job.out)
    if job.geojson:
        write_geojson(job.geojson, outlines, _columns(rows))
        report.outputs.insert(1, job.geojson)
