"""What ``al-loop map`` writes besides the pit layers: a probability GeoTIFF per product (written
strip by strip as the map is made) and a quicklook PNG (the product's overview, pits outlined,
coloured by confidence and numbered with their ``pit_id``, a scale bar, a north arrow, the sun's
direction with its incidence, and latitude / longitude ticks along the frame).

The overview is pasted from the product's 8-bit tiles, where 0 is null: so it is also where the
map searched (valid pixels under a kept tile), and :func:`searched_mask` makes that mask from it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from al_loop.data.products import ValidMask, sampled_transform
from al_loop.data.tiling import ProductEntry
from al_loop.data.viewing import Viewing
from al_loop.mapping.blend import Strip

QUICKLOOK_SIDE = 2000


class ProbabilityRaster:
    """uint8 probabilities (0..255; 0 also where no tile covered) in the product's CRS and grid."""

    def __init__(self, path: Path, entry: ProductEntry):
        import rasterio
        from affine import Affine

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.dataset = rasterio.open(path, "w", driver="GTiff", width=entry.width, height=entry.height, count=1,
                                     dtype="uint8", crs=entry.crs_wkt, transform=Affine(*entry.transform), tiled=True,
                                     blockxsize=256, blockysize=256, compress="deflate")

    def write(self, strip: Strip) -> None:
        values = np.round(np.clip(strip.probability, 0, 1) * 255).astype(np.uint8)
        rows = (strip.row0, strip.row0 + values.shape[0])
        self.dataset.write(values, 1, window=(rows, (0, values.shape[1])))

    def close(self) -> None:
        self.dataset.close()


def overview_from_tiles(entry: ProductEntry, tiles_dir: Path, side: int = QUICKLOOK_SIDE) -> tuple[np.ndarray, int]:
    """The product at 1/factor scale, pasted from its 8-bit tiles (no need to reopen the product)."""
    factor = max(1, math.ceil(max(entry.width, entry.height) / side))
    out = np.zeros((math.ceil(entry.height / factor), math.ceil(entry.width / factor)), dtype=np.uint8)
    for tile in entry.tiles:
        # the product's rows and columns that fall on the overview grid (multiples of factor)
        off_r, off_c = -tile.row % factor, -tile.col % factor
        part = np.asarray(Image.open(tiles_dir / tile.file))[off_r::factor, off_c::factor]
        r, c = (tile.row + off_r) // factor, (tile.col + off_c) // factor
        h, w = min(part.shape[0], out.shape[0] - r), min(part.shape[1], out.shape[1] - c)
        out[r : r + h, c : c + w] = part[:h, :w]
    return out, factor


def searched_mask(entry: ProductEntry, overview: np.ndarray, factor: int) -> ValidMask:
    """Where the map searched, on the overview's grid: the valid pixels under a kept tile (tiles
    keep 0 for null and nothing is pasted where no tile was kept). Its ``area_m2`` is the
    product's ``valid_area_m2``: exact at factor 1, and a sample of one pixel per cell above."""
    return ValidMask(overview > 0, sampled_transform(entry.transform, factor), factor, entry.crs_wkt)


def write_quicklook(path: Path, entry: ProductEntry, tiles_dir: Path, pits: list, confidences: list[float],
                    overlay: Overlay | None = None, *, overview: tuple[np.ndarray, int] | None = None,
                    pit_ids: list[int] | None = None, viewing: Viewing | None = None) -> Path:
    """The product's overview (``overview``: (image, factor) from :func:`overview_from_tiles`, read
    when not given) with the pits outlined, coloured on a scale spanning their confidences and
    labelled with ``pit_ids``, a scale bar, a north arrow and lat/lon ticks (with a CRS), the sun's
    direction and incidence (with ``viewing``), and ``overlay``'s features drawn over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm

    overview, factor = overview or overview_from_tiles(entry, tiles_dir)
    to_pixels = _overview_pixels(entry.transform, factor)
    fig, ax = plt.subplots(figsize=(10, 10 * overview.shape[0] / max(1, overview.shape[1])))
    ax.imshow(overview, cmap="gray", vmin=0, vmax=255)
    norm, cmap = confidence_scale(confidences), matplotlib.colormaps["plasma"]
    for polygon, confidence in zip(pits, confidences, strict=False):
        for part in getattr(polygon, "geoms", [polygon]):
            ax.plot(*to_pixels(*np.asarray(part.exterior.xy)), color=cmap(norm(confidence)), linewidth=1.2)
    if pit_ids is not None:
        _pit_labels(ax, pits, pit_ids, to_pixels)
    if overlay is not None:
        _draw_overlay(ax, overlay.in_crs(entry.crs_wkt), to_pixels, overlay.name)
    if viewing is not None:
        _sun_arrow(ax, viewing, overview.shape)
    ax.set_xlim(0, overview.shape[1])
    ax.set_ylim(overview.shape[0], 0)
    if entry.crs_wkt:
        _scale_bar(ax, overview.shape, factor * _pixel_metres(entry.transform))
        _north_arrow(ax, entry, overview.shape)
        _lonlat_ticks(ax, entry, factor, overview.shape)
    else:
        ax.set_axis_off()
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, label="pit confidence (mean probability)")
    ax.set_title(f"{entry.product_id}: {len(pits)} pits")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confidence_scale(confidences: list[float]):
    """A colour scale spanning the pits' own confidences (a fixed 0.5-1 one paints every pit alike
    when they all lie in 0.56-0.76), widened to 0.05 when they are all nearly equal."""
    from matplotlib import colors

    if not len(confidences):
        return colors.Normalize(0.5, 1.0)
    lo, hi = float(min(confidences)), float(max(confidences))
    if hi - lo < 0.05:
        middle = (lo + hi) / 2
        lo, hi = middle - 0.025, middle + 0.025
    return colors.Normalize(lo, hi)


def _overview_pixels(transform: tuple, factor: int):
    """(x, y) in the product's CRS -> (column, row) on the overview."""
    from affine import Affine

    inverse = ~Affine(*transform)

    def to_pixels(x, y):
        cols, rows = inverse @ (np.asarray(x, float), np.asarray(y, float))
        return np.asarray(cols) / factor, np.asarray(rows) / factor

    return to_pixels


def _pixel_metres(transform: tuple) -> float:
    a, b, _, d, e, _ = transform
    return float(abs(a * e - b * d) ** 0.5)


def nice_length(most: float) -> float:
    """The longest 1, 2 or 5 x 10^k not over ``most``."""
    power = 10.0 ** math.floor(math.log10(most))
    return max(m * power for m in (1, 2, 5) if m * power <= most)


def _scale_bar(ax, shape: tuple[int, int], metres_per_pixel: float) -> None:
    height, width = shape
    metres = nice_length(0.25 * width * metres_per_pixel)
    length = metres / metres_per_pixel
    x0, y0 = 0.05 * width, 0.95 * height
    ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=6, solid_capstyle="butt")
    ax.plot([x0, x0 + length], [y0, y0], color="black", linewidth=2, solid_capstyle="butt")
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    ax.text(x0 + length / 2, y0 - 0.015 * height, label, color="white", ha="center", va="bottom", fontsize=10,
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"})


def north_direction(entry: ProductEntry) -> tuple[float, float]:
    """Unit (d column, d row) pointing to planetocentric north at the product's centre."""
    from affine import Affine

    from al_loop.data.mars import from_lonlat, to_lonlat

    a, b, c, d, e, f = entry.transform
    x, y = c + a * entry.width / 2 + b * entry.height / 2, f + d * entry.width / 2 + e * entry.height / 2
    lon, lat = (float(v) for v in to_lonlat(entry.crs_wkt, x, y))
    step = 0.001 if lat < 89.9 else -0.001
    x2, y2 = from_lonlat(entry.crs_wkt, lon, lat + step)
    inverse = ~Affine(*entry.transform)
    (c0, r0), (c1, r1) = inverse @ (x, y), inverse @ (float(x2), float(y2))
    dc, dr = (c1 - c0) * (1 if step > 0 else -1), (r1 - r0) * (1 if step > 0 else -1)
    norm = math.hypot(dc, dr) or 1.0
    return dc / norm, dr / norm


def _north_arrow(ax, entry: ProductEntry, shape: tuple[int, int]) -> None:
    dc, dr = north_direction(entry)
    height, width = shape
    size = 0.08 * min(width, height)
    x, y = 0.92 * width, 0.12 * height + size / 2
    ax.annotate("N", xy=(x + dc * size / 2, y + dr * size / 2), xytext=(x - dc * size / 2, y - dr * size / 2),
                color="white", ha="center", va="center", fontsize=12, fontweight="bold",
                arrowprops={"arrowstyle": "-|>", "color": "white", "linewidth": 2})


def _pit_labels(ax, pits: list, pit_ids: list[int], to_pixels) -> None:
    """Each pit's id just above-right of its outline, white on a dark halo (legible on any ground)."""
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=2, foreground="black")]
    for polygon, pit_id in zip(pits, pit_ids, strict=False):
        x0, y0, x1, y1 = polygon.bounds
        cols, rows = to_pixels([x1, x0], [y1, y0])
        ax.text(float(max(cols)), float(min(rows)), str(pit_id), color="white", fontsize=7, ha="left", va="bottom",
                path_effects=halo)


def _sun_arrow(ax, viewing: Viewing, shape: tuple[int, int]) -> None:
    """An arrow the way sunlight travels across the image (from the sun's side), labelled with the
    incidence: shadows fall on the sun's side inside a pit, on the far side of a boulder."""
    dc, dr = viewing.sunlight()
    height, width = shape
    size = 0.1 * min(width, height)
    x, y = 0.90 * width, 0.12 * height + 2.2 * size  # below the north arrow
    tail = (x - dc * size / 2, y - dr * size / 2)
    ax.annotate("", xy=(x + dc * size / 2, y + dr * size / 2), xytext=tail,
                arrowprops={"arrowstyle": "-|>", "color": "gold", "linewidth": 2.5, "mutation_scale": 18})
    # the label stands off the tail, on the sun's side, clear of the arrow
    ax.text(tail[0] - dc * 0.55 * size, tail[1] - dr * 0.55 * size, f"sun i={viewing.incidence_deg:.0f}°", color="gold",
            ha="center", va="center", fontsize=9, fontweight="bold",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"})


def lonlat_ticks(entry: ProductEntry, factor: int, shape: tuple[int, int]) -> tuple[tuple, tuple]:
    """((x positions, labels), (y positions, labels)) on an overview of ``shape`` at ``factor``:
    longitudes where the bottom edge meets round values, latitudes where the left edge does (true
    along the frame whatever the projection)."""
    from affine import Affine
    from matplotlib.ticker import MaxNLocator

    from al_loop.data.mars import to_lonlat

    height, width = shape
    t = Affine(*entry.transform)
    along = np.linspace(0.0, 1.0, 256)
    lon, _ = to_lonlat(entry.crs_wkt, *(t @ (along * width * factor, np.full(256, height * factor))))
    _, lat = to_lonlat(entry.crs_wkt, *(t @ (np.zeros(256), along * height * factor)))
    lon = np.degrees(np.unwrap(np.radians(lon)))  # no jump across a meridian
    out = []
    for values, positions, label in ((lon, along * width, _lon_label), (lat, along * height, _lat_label)):
        ticks = [v for v in MaxNLocator(4).tick_values(values.min(), values.max()) if values.min() <= v <= values.max()]
        order = np.argsort(values)
        step = np.diff(ticks).min() if len(ticks) > 1 else 1.0
        decimals = max(0, -int(math.floor(math.log10(step))))
        out.append((np.interp(ticks, values[order], positions[order]), [label(v, decimals) for v in ticks]))
    return out[0], out[1]


def _lonlat_ticks(ax, entry: ProductEntry, factor: int, shape: tuple[int, int]) -> None:
    (x, x_labels), (y, y_labels) = lonlat_ticks(entry, factor, shape)
    ax.set_xticks(x, x_labels)
    ax.set_yticks(y, y_labels)
    ax.tick_params(labelsize=8)


def _lon_label(lon: float, decimals: int) -> str:
    return f"{lon % 360.0:.{decimals}f}°E"


def _lat_label(lat: float, decimals: int) -> str:
    return f"{abs(lat):.{decimals}f}°{'N' if lat >= 0 else 'S'}"


@dataclass(frozen=True)
class Overlay:
    """Features to draw over the quicklooks: shapely geometries in their file's CRS."""

    name: str
    geometries: list
    crs: str | None

    def in_crs(self, crs_wkt: str | None) -> list:
        if not (crs_wkt and self.crs):
            return self.geometries
        from pyproj import CRS

        from al_loop.data.mars import reproject

        source = CRS.from_user_input(self.crs).to_wkt()
        return [reproject(g, source, crs_wkt) for g in self.geometries]


def read_overlay(path: Path) -> Overlay:
    """A vector file (GeoPackage, GeoJSON, shapefile...) read once, before any product is mapped,
    so a file GDAL cannot read fails at once."""
    import pyogrio.errors
    import pyogrio.raw
    import shapely

    from al_loop.errors import UsageError

    try:
        meta, _, wkb, _ = pyogrio.raw.read(str(path), read_geometry=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise UsageError(f"{path}: not a vector file GDAL reads, to draw over the quicklook ({exc})", param="overlay") from None
    return Overlay(path.name, [g for g in shapely.from_wkb(wkb) if g is not None], meta.get("crs"))


def _draw_overlay(ax, geometries: list, to_pixels, name: str) -> None:
    drawn = False
    for geometry in geometries:
        for part in getattr(geometry, "geoms", [geometry]):
            if part.geom_type == "Point":
                ax.plot(*to_pixels([part.x], [part.y]), marker="+", color="cyan", markersize=12, mew=2,
                        linestyle="none", label=None if drawn else name)
            else:
                ring = part.exterior if part.geom_type == "Polygon" else part
                ax.plot(*to_pixels(*np.asarray(ring.xy)), color="cyan", linewidth=1.0, linestyle="--",
                        label=None if drawn else name)
            drawn = True
    if drawn:
        ax.legend(loc="upper left", fontsize=9, framealpha=0.6)
