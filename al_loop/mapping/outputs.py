"""What ``al-loop map`` writes besides the pit layers: a probability GeoTIFF per product (written
strip by strip as the map is made) and a quicklook PNG (the product's overview, pits outlined,
coloured by confidence)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from al_loop.data.tiling import ProductEntry
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


def write_quicklook(path: Path, entry: ProductEntry, tiles_dir: Path, pits: list, confidences: list[float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    overview, factor = overview_from_tiles(entry, tiles_dir)
    a, _, c, _, e, f = entry.transform
    fig, ax = plt.subplots(figsize=(10, 10 * overview.shape[0] / max(1, overview.shape[1])))
    ax.imshow(overview, cmap="gray", vmin=0, vmax=255)
    norm, cmap = colors.Normalize(0.5, 1.0), matplotlib.colormaps["plasma"]
    for polygon, confidence in zip(pits, confidences):
        for ring in getattr(polygon, "geoms", [polygon]):
            x, y = np.asarray(ring.exterior.xy)
            ax.plot((x - c) / a / factor, (y - f) / e / factor, color=cmap(norm(confidence)), linewidth=1.2)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, label="pit confidence (mean probability)")
    ax.set_title(f"{entry.product_id}: {len(pits)} pits")
    ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
