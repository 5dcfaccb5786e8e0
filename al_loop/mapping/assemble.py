"""Pits out of final map strips: threshold, label, polygonize, and join pieces across strip seams.

Each strip's components get global ids; a component touching the strip's first row is
joined (union-find) with the previous strip's components above it, so one pit is one
pit however many strips, and tiles, it spans. Polygons are made per strip with the
strip's own affine (``rasterio.features.shapes``) and united per pit at the end; pixel
edges line up exactly, so the union is one polygon. Labelling and polygonizing both use
4-connectivity, so what counts as one pit is the same in both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from al_loop.mapping.blend import Strip
from al_loop.models.pits import THRESHOLD
from al_loop.science.measure import PitPixels

FOUR = ndimage.generate_binary_structure(2, 1)
# Outlines are simplified within this many pixels: enough to straighten the pixel staircase (a
# diagonal step is 0.71 px off the line), never enough to move an edge by a whole pixel.
SIMPLIFY_PIXELS = 0.75


def pixel_size(transform: tuple) -> float:
    """One pixel's side in the product's CRS units (metres for a projected Mars CRS)."""
    a, b, _, d, e, _ = transform
    return float(abs(a * e - b * d) ** 0.5)


def simplify_outline(polygon, pixel: float):
    """The pixel outline without its staircase: Douglas-Peucker within ``SIMPLIFY_PIXELS`` pixels,
    holes and validity kept (a disc 32 px across goes from 85 vertices to 37)."""
    import shapely

    return shapely.simplify(polygon, SIMPLIFY_PIXELS * pixel, preserve_topology=True)


@dataclass
class _Parts:
    n: int = 0
    total: float = 0.0
    peak: float = 0.0
    bbox: list[int] = field(default_factory=lambda: [2**62, 2**62, -1, -1])
    edge: bool = False
    polygons: list = field(default_factory=list)

    def merge(self, other: _Parts) -> None:
        self.n, self.total, self.peak = self.n + other.n, self.total + other.total, max(self.peak, other.peak)
        self.bbox = [min(self.bbox[0], other.bbox[0]), min(self.bbox[1], other.bbox[1]),
                     max(self.bbox[2], other.bbox[2]), max(self.bbox[3], other.bbox[3])]
        self.edge = self.edge or other.edge
        self.polygons += other.polygons


class PitAssembler:
    def __init__(self, transform: tuple, width: int, height: int, threshold: float = THRESHOLD):
        self.transform, self.width, self.height, self.threshold = transform, width, height, threshold
        self.parent: dict[int, int] = {}
        self.parts: dict[int, _Parts] = {}
        self.next_id = 1
        self._previous_last_row: np.ndarray | None = None

    def add(self, strip: Strip) -> None:
        mask = (strip.probability >= self.threshold) & strip.covered
        labels, count = ndimage.label(mask, structure=FOUR)
        ids = np.where(labels > 0, labels + (self.next_id - 1), 0)
        for i in range(self.next_id, self.next_id + count):
            self.parent[i] = i
        self._measure(strip, labels, count, mask)
        self._polygonize(strip, labels, count)
        self._join(ids[0])
        self._previous_last_row = ids[-1].copy()
        self.next_id += count

    def _measure(self, strip: Strip, labels: np.ndarray, count: int, mask: np.ndarray) -> None:
        if not count:
            return
        index = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(mask, labels, index)
        totals = ndimage.sum_labels(strip.probability, labels, index)
        peaks = ndimage.maximum(strip.probability, labels, index)
        edges = ndimage.maximum(self._edge_pixels(strip), labels, index)
        for k, box in enumerate(ndimage.find_objects(labels)):
            rows, cols = box
            self.parts[self.next_id + k] = _Parts(int(sizes[k]), float(totals[k]), float(peaks[k]),
                                                  [cols.start, rows.start + strip.row0, cols.stop, rows.stop + strip.row0],
                                                  bool(edges[k]))

    def _edge_pixels(self, strip: Strip) -> np.ndarray:
        """Pixels on the product's border, or next to a part no tile covered (null, skipped tiles)."""
        edge = ndimage.binary_dilation(~strip.covered, structure=FOUR) & strip.covered
        edge[:, 0] = edge[:, -1] = True
        if strip.row0 == 0:
            edge[0] = True
        if strip.row0 + len(edge) >= self.height:
            edge[-1] = True
        return edge

    def _polygonize(self, strip: Strip, labels: np.ndarray, count: int) -> None:
        if not count:
            return
        import shapely.geometry
        from rasterio.features import shapes

        a, b, c, d, e, f = self.transform
        transform = _affine((a, b, c + b * strip.row0, d, e, f + e * strip.row0))
        for geometry, value in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=transform):
            self.parts[self.next_id + int(value) - 1].polygons.append(shapely.geometry.shape(geometry))

    def _join(self, first_row_ids: np.ndarray) -> None:
        above = self._previous_last_row
        if above is None:
            return
        touching = (above > 0) & (first_row_ids > 0)
        for upper, lower in set(zip(above[touching].tolist(), first_row_ids[touching].tolist(), strict=False)):
            self._union(upper, lower)

    def _find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def finish(self, min_pixels: int = 1) -> list[PitPixels]:
        """Every pit of at least ``min_pixels`` pixels, top to bottom."""
        import shapely

        merged: dict[int, _Parts] = {}
        for i, parts in self.parts.items():
            root = self._find(i)
            if root in merged:
                merged[root].merge(parts)
            else:
                merged[root] = parts
        pits = [PitPixels(shapely.union_all(p.polygons), p.n, p.total, p.peak, tuple(p.bbox), p.edge)
                for _, p in sorted(merged.items()) if p.n >= min_pixels]
        return sorted(pits, key=lambda pit: (pit.bbox[1], pit.bbox[0]))


def _affine(values: tuple):
    from affine import Affine

    a, b, c, d, e, f = values
    return Affine(a, b, c, d, e, f)
