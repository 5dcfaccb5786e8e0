"""Pits out of final map strips: threshold, label, polygonize, and join pieces across strip seams.

Each strip's components get global ids; a component touching the strip's first row is
joined (union-find) with the previous strip's components above it, so one pit is one
pit however many strips, and tiles, it spans. Polygons are made per strip with the
strip's own affine (``rasterio.features.shapes``) and united per pit at the end; pixel
edges line up exactly, so the union is one polygon. Labelling and polygonizing both use
4-connectivity, so what counts as one pit is the same in both.

With ``split`` (off by default: see :data:`SPLIT_OBJECTS`), each pit also keeps its pixels'
probabilities (a crop of its bounding box), and at the end a pit that joins several maxima is
cut at its saddles (mapping/objects.py) and polygonized part by part. Every pit is scored as a
whole (:class:`ObjectPit`: ``object_score``, ``flag``) against the training pits' sizes when given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from al_loop.mapping.blend import Strip
from al_loop.mapping.objects import DEFAULT_RULE, ObjectRule, flags, object_scores, split_component
from al_loop.models.pits import THRESHOLD
from al_loop.science.measure import PitPixels

FOUR = ndimage.generate_binary_structure(2, 1)
# Outlines are simplified within this many pixels: enough to straighten the pixel staircase (a
# diagonal step is 0.71 px off the line), never enough to move an edge by a whole pixel.
SIMPLIFY_PIXELS = 0.75
# Whether the map cuts merged pits at their saddles. Off: on held-out HiRISE mosaics it found more
# of the expert's pits but cut terrain blobs into more false ones, and object F1 fell (0.30 -> 0.21 and
# 0.18 -> 0.14 at box IoU >= 0.5 on two test halves; bench/object_split.py, docs/guide/methods.md "Objects").
SPLIT_OBJECTS = False


@dataclass
class ObjectPit(PitPixels):
    """A mapped pit with its score as a whole object (mapping/objects.py): ``object_score`` in
    [0, 1], ``flag`` "" or objects.FLAG_LOW_SCORE, and ``parts`` > 1 where it was cut out of a
    blob of that many parts."""

    object_score: float = 1.0
    flag: str = ""
    parts: int = 1


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
    # With splitting: (probability, mask, edge) over bbox, (rows, cols) float32, bool, bool
    crops: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def merge(self, other: _Parts) -> None:
        bbox = [min(self.bbox[0], other.bbox[0]), min(self.bbox[1], other.bbox[1]),
                max(self.bbox[2], other.bbox[2]), max(self.bbox[3], other.bbox[3])]
        if self.crops is not None and other.crops is not None:
            self.crops = _pasted(bbox, (self.bbox, self.crops), (other.bbox, other.crops))
        self.n, self.total, self.peak = self.n + other.n, self.total + other.total, max(self.peak, other.peak)
        self.bbox = bbox
        self.edge = self.edge or other.edge
        self.polygons += other.polygons


def _pasted(bbox: list[int], *pieces: tuple[list[int], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Crops of several pieces of one pit pasted onto its joint ``bbox`` (col0, row0, col1, row1)."""
    shape = (bbox[3] - bbox[1], bbox[2] - bbox[0])
    out = (np.zeros(shape, np.float32), np.zeros(shape, bool), np.zeros(shape, bool))
    for box, crops in pieces:
        rows, cols = slice(box[1] - bbox[1], box[3] - bbox[1]), slice(box[0] - bbox[0], box[2] - bbox[0])
        own = crops[1]
        for target, crop in zip(out, crops, strict=True):
            target[rows, cols][own] = crop[own]
    return out


class PitAssembler:
    def __init__(self, transform: tuple, width: int, height: int, threshold: float = THRESHOLD,
                 split: bool = SPLIT_OBJECTS, rule: ObjectRule = DEFAULT_RULE):
        self.transform, self.width, self.height, self.threshold = transform, width, height, threshold
        self.split, self.rule = split, rule
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
        edge_pixels = self._edge_pixels(strip)
        edges = ndimage.maximum(edge_pixels, labels, index)
        for k, box in enumerate(ndimage.find_objects(labels)):
            rows, cols = box
            own = labels[box] == k + 1
            crops = (np.where(own, strip.probability[box], 0).astype(np.float32), own, edge_pixels[box] & own) \
                if self.split else None
            self.parts[self.next_id + k] = _Parts(int(sizes[k]), float(totals[k]), float(peaks[k]),
                                                  [cols.start, rows.start + strip.row0, cols.stop, rows.stop + strip.row0],
                                                  bool(edges[k]), crops=crops)

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

    def finish(self, min_pixels: int = 1, sizes: dict | None = None, size_scale: float = 1.0,
               drop_flagged: bool = False) -> list[ObjectPit]:
        """Every pit of at least ``min_pixels`` pixels, top to bottom, scored as a whole object
        against ``sizes`` (a decoder card's ``pit_sizes``; a map pixel counts ``size_scale``
        training pixels); ``drop_flagged`` leaves out those scoring under the rule's ``min_score``."""
        import shapely

        merged: dict[int, _Parts] = {}
        for i, parts in self.parts.items():
            root = self._find(i)
            if root in merged:
                merged[root].merge(parts)
            else:
                merged[root] = parts
        pits: list[ObjectPit] = []
        rule = replace(self.rule, min_pixels=max(self.rule.min_pixels, min_pixels))  # no cut leaves a piece to drop
        for _, p in sorted(merged.items()):
            pieces = self._split(p, rule) if self.split and p.crops is not None else [(p, 1)]
            pits += [ObjectPit(shapely.union_all(q.polygons), q.n, q.total, q.peak, tuple(q.bbox), q.edge, parts=n)
                     for q, n in pieces if q.n >= min_pixels]
        scores = object_scores(np.array([pit.confidence for pit in pits]), np.array([pit.n_pixels for pit in pits]) * size_scale,
                               sizes, self.threshold)
        for pit, score, flag in zip(pits, scores, flags(scores, self.rule), strict=True):
            pit.object_score, pit.flag = float(score), flag
        pits = [pit for pit in pits if not (drop_flagged and pit.flag)]
        return sorted(pits, key=lambda pit: (pit.bbox[1], pit.bbox[0]))

    def _split(self, p: _Parts, rule: ObjectRule) -> list[tuple[_Parts, int]]:
        """The pit's parts cut at its saddles (itself when it has one), each polygonized from its
        crop, with how many parts it was cut into."""
        probability, mask, edge = p.crops
        labels, count = split_component(probability, mask, rule)
        if count == 1:
            return [(p, 1)]
        import shapely.geometry
        from rasterio.features import shapes

        c0, r0 = p.bbox[0], p.bbox[1]
        index = np.arange(1, count + 1)
        sizes, totals = ndimage.sum_labels(mask, labels, index), ndimage.sum_labels(probability, labels, index)
        peaks, edges = ndimage.maximum(probability, labels, index), ndimage.maximum(edge, labels, index)
        out = [_Parts(int(sizes[k]), float(totals[k]), float(peaks[k]),
                      [c0 + box[1].start, r0 + box[0].start, c0 + box[1].stop, r0 + box[0].stop], bool(edges[k]))
               for k, box in enumerate(ndimage.find_objects(labels))]
        a, b, c, d, e, f = self.transform
        transform = _affine((a, b, c + a * c0 + b * r0, d, e, f + d * c0 + e * r0))
        for geometry, value in shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
            out[int(value) - 1].polygons.append(shapely.geometry.shape(geometry))
        return [(q, count) for q in out]


def _affine(values: tuple):
    from affine import Affine

    a, b, c, d, e, f = values
    return Affine(a, b, c, d, e, f)
