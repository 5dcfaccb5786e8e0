"""One radiometry from training to map: a product's tiles are brought to the grey values the
decoder was trained on before the encoder sees them.

A decoder learns what a pit looks like in the values of its training tiles. Those reach it
by different roads: a YOLO set's JPEGs (each stretched by whoever exported it), tiles that
``al-loop tile`` cut from a product with one percentile stretch per product, Label Studio
task images. A product mapped later comes through ``tile``'s stretch, and the same ground can
arrive twice as contrasted (the issue's decoder found 5.7 % of pixels pit on its own tiles and
30.3 % on the same pixels after the product stretch). So a decoder records the statistics of
its training tiles' grey values (mean and sd, nulls left out), and ``map`` remaps each
product's tiles by one linear stretch per product so that their pooled statistics equal
those: the product keeps one stretch (no seams), and it is the training tiles' radiometry.

Chosen by measurement (``bench/radiometry.py``, ``docs/radiometry.md``): against the raw
values, a per-tile percentile stretch and a per-tile standardisation, matching per scene
keeps the mapped pit area and the boxes found closest to what the decoder gives on its own
tiles. Per-tile stretches were the worst: a 1024-px tile of plain terrain stretched to full
contrast looks like pits to a decoder that never saw such contrast.

A decoder without the record (trained before it existed) maps tiles as they were cut.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SAMPLE_STEP = 4  # every 4th pixel of every 4th row: statistics to 3 digits at 1/16 of the reading
IDENTITY_TOLERANCE = (0.01, 0.5)  # |scale - 1|, |offset| under which a remap changes nothing worth a new embedding


@dataclass(frozen=True)
class ValueStatistics:
    """Pooled statistics of 8-bit grey values over tiles; 0 (null in ``tile``'s tiles) left out."""

    mean: float
    sd: float
    tiles: int

    def to_meta(self) -> dict:
        return {"kind": "matched", "mean": round(self.mean, 3), "sd": round(self.sd, 3), "tiles": self.tiles}

    def describe(self) -> str:
        return f"each product matched to its training tiles' grey values (mean {self.mean:.1f}, sd {self.sd:.1f}, {self.tiles} tiles)"


def grey_values(pixels: np.ndarray) -> np.ndarray:
    """The sampled non-null grey values of one tile (H, W) or (H, W, C) uint8."""
    grey = pixels[::SAMPLE_STEP, ::SAMPLE_STEP]
    if grey.ndim == 3:
        grey = grey[..., :3].mean(axis=2)
    values = np.asarray(grey, dtype=np.float64).ravel()
    return values[values > 0]


@dataclass(frozen=True)
class ValueSums:
    """Running sums of sampled grey values: added up per tile, so a training run can pool any
    subset of its tiles without keeping their pixels."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    tiles: int = 0

    @classmethod
    def of(cls, pixels: np.ndarray) -> ValueSums:
        """One 8-bit tile's sums (nothing for other depths: 16-bit data is stretched per tile by
        the encoders, so there is no 8-bit radiometry to match)."""
        if pixels.dtype != np.uint8:
            return cls()
        values = grey_values(pixels)
        return cls(len(values), float(values.sum()), float((values**2).sum()), 1)

    def __add__(self, other: ValueSums) -> ValueSums:
        return ValueSums(self.count + other.count, self.total + other.total, self.squares + other.squares,
                         self.tiles + other.tiles)

    def statistics(self) -> ValueStatistics | None:
        if self.count < 2:
            return None
        mean = self.total / self.count
        return ValueStatistics(float(mean), float(math.sqrt(max(self.squares / self.count - mean * mean, 0.0))),
                               self.tiles)


def tile_statistics(tiles: Iterable[np.ndarray]) -> ValueStatistics | None:
    """Pooled statistics of 8-bit tiles; None when no tile holds a valid 8-bit pixel."""
    return sum((ValueSums.of(pixels) for pixels in tiles), ValueSums()).statistics()


def file_statistics(paths: Iterable[str | Path]) -> ValueStatistics | None:
    """:func:`tile_statistics` of image files (PNG, JPEG...)."""
    from PIL import Image

    def arrays():
        for path in paths:
            with Image.open(path) as image:
                yield np.asarray(image.convert("L") if image.mode not in ("L", "RGB") else image)

    return tile_statistics(arrays())


@dataclass(frozen=True)
class Linear:
    """grey -> grey * scale + offset on valid pixels (clipped to 1..255; 0 stays 0, null)."""

    scale: float
    offset: float

    @property
    def id(self) -> str:
        """Suffix of the encoder's cache id: an embedding is of the tile as remapped."""
        return f"+lin{self.scale:.4f}{self.offset:+.2f}"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8:
            return pixels
        out = np.clip(np.round(pixels.astype(np.float32) * self.scale + self.offset), 1, 255).astype(np.uint8)
        return np.where(pixels == 0, np.uint8(0), out)

    def describe(self) -> str:
        return f"grey x {self.scale:.3f} {self.offset:+.1f}"


def matching(product: ValueStatistics, training: ValueStatistics) -> Linear | None:
    """The linear stretch that gives ``product``'s values ``training``'s mean and sd; None when it
    would change nothing (or the product is flat)."""
    if product.sd < 0.5:
        return None
    scale = training.sd / product.sd
    offset = training.mean - product.mean * scale
    if abs(scale - 1) < IDENTITY_TOLERANCE[0] and abs(offset) < IDENTITY_TOLERANCE[1]:
        return None
    return Linear(round(scale, 4), round(offset, 2))


class MatchedEncoder:
    """An encoder whose input tiles are remapped first; its id names the remap, so the cache keeps
    the embeddings of the tiles as remapped apart from those as cut."""

    def __init__(self, encoder, linear: Linear):
        self.inner, self.linear = encoder, linear
        self.id = f"{encoder.id}{linear.id}"
        self.grid, self.channels = encoder.grid, encoder.channels

    def encode(self, tile):
        return self.inner.encode(replace(tile, pixels=self.linear.apply(tile.pixels)))


def of_decoder(meta: dict) -> ValueStatistics | None:
    """The training tiles' statistics a decoder recorded (None: it maps tiles as they were cut)."""
    recorded = meta.get("radiometry")
    if not isinstance(recorded, dict) or recorded.get("kind") != "matched":
        return None
    return ValueStatistics(float(recorded["mean"]), float(recorded["sd"]), int(recorded.get("tiles", 0)))


def describe_decoder(meta: dict) -> str:
    stats = of_decoder(meta)
    return stats.describe() if stats else "none recorded: products are mapped as tiled (one percentile stretch each)"
