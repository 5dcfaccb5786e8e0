"""Generated Mars-like tiles with pits and skylights, and the boxes an expert would draw.

For the demo and the tests: a product must show its loop without anyone's data.
Terrain is fractal noise (dust, ripples, small craters); a pit is a dark elliptical
floor with a shadowed up-sun wall and a bright down-sun rim, the way collapse pits
look under HiRISE's afternoon sun. Deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class SyntheticTile:
    image: np.ndarray  # (H, W) uint8
    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1 in pixels
    kinds: list[str]  # "pit" or "skylight" per box


def _terrain(rng: np.random.Generator, size: int) -> np.ndarray:
    field = np.zeros((size, size), dtype=np.float32)
    for scale, weight in ((64, 1.0), (16, 0.5), (4, 0.25), (1, 0.12)):
        noise = rng.normal(size=(size, size)).astype(np.float32)
        field += weight * ndimage.gaussian_filter(noise, scale) * scale**0.5
    field = (field - field.mean()) / (field.std() + 1e-6)
    # Aeolian ripples: faint periodic bands at a random azimuth.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ripples = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 6))
    return 0.55 + 0.08 * field + 0.02 * ripples


def _crater(img: np.ndarray, rng: np.random.Generator, yy, xx) -> None:
    size = img.shape[0]
    cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 10)
    d = np.hypot(yy - cy, xx - cx) / r
    img -= 0.05 * np.exp(-(d**2) * 2) - 0.03 * np.exp(-((d - 1) ** 2) * 8)


def _pit(img: np.ndarray, rng: np.random.Generator, yy, xx, sun_azimuth: float, skylight: bool) -> tuple:
    size = img.shape[0]
    r = rng.uniform(0.03, 0.07) * size if skylight else rng.uniform(0.05, 0.14) * size
    ry, rx = r * rng.uniform(0.75, 1.25), r * rng.uniform(0.75, 1.25)
    cy, cx = rng.uniform(ry + 2, size - ry - 2), rng.uniform(rx + 2, size - rx - 2)
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    inside = d < 1
    sun = np.array([np.sin(sun_azimuth), np.cos(sun_azimuth)])
    # Shadow falls on the floor next to the up-sun wall; a skylight is all shadow.
    along = ((yy - cy) * sun[0] / ry + (xx - cx) * sun[1] / rx)
    floor = 0.12 if skylight else 0.35
    shadow = inside & ((along < 0.3) | skylight)
    img[inside] = img[inside] * 0.5 + floor * 0.5
    img[shadow] = 0.04 + 0.02 * rng.random()
    rim = (d >= 1) & (d < 1.18) & (along > 0)
    img[rim] += 0.12
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def generate_tile(seed: int, size: int = 512, max_pits: int = 3, light_azimuth: float | None = None) -> SyntheticTile:
    """One tile with 0..max_pits pits/skylights (about one tile in six has none). ``light_azimuth``
    is the way the sunlight travels across the image (radians clockwise from the image's +x, y
    down); None: a random one (drawn all the same, so the rest of the tile is the seed's)."""
    rng = np.random.default_rng(seed)
    img = _terrain(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(rng.integers(5, 20)):
        _crater(img, rng, yy, xx)
    sun_azimuth = rng.uniform(0, 2 * np.pi)
    sun_azimuth = sun_azimuth if light_azimuth is None else light_azimuth
    n = int(rng.choice(np.arange(max_pits + 1), p=_counts_prior(max_pits)))
    boxes, kinds = [], []
    for _ in range(n):
        skylight = bool(rng.random() < 0.3)
        boxes.append(_pit(img, rng, yy, xx, sun_azimuth, skylight))
        kinds.append("skylight" if skylight else "pit")
    img = ndimage.gaussian_filter(img, 0.7) + rng.normal(0, 0.015, img.shape)
    image = np.clip(img * 255, 0, 255).astype(np.uint8)
    box_array = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0, size)
    return SyntheticTile(image, box_array, kinds)


def _counts_prior(max_pits: int) -> np.ndarray:
    p = np.array([1.0] + [2.0] * max_pits)
    return p / p.sum()


def write_images(directory: str | Path, count: int, seed: int = 0, size: int = 512) -> list[tuple[Path, SyntheticTile]]:
    """``count`` PNG tiles named ``tile_0000.png``...; returns each path with its tile."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        tile = generate_tile(seed * 100_003 + i, size)
        path = directory / f"tile_{i:04d}.png"
        Image.fromarray(tile.image).save(path)
        out.append((path, tile))
    return out


def write_yolo_dataset(root: str | Path, train: int = 30, valid: int = 8, seed: int = 0, size: int = 512) -> Path:
    """A YOLO-format dataset (``data.yaml``, ``train``/``valid`` images and labels) of generated tiles."""
    root = Path(root)
    for split, count, split_seed in (("train", train, seed), ("valid", valid, seed + 1)):
        labels = root / split / "labels"
        labels.mkdir(parents=True, exist_ok=True)
        for path, tile in write_images(root / split / "images", count, split_seed, size):
            lines = []
            for (x0, y0, x1, y1), kind in zip(tile.boxes, tile.kinds, strict=False):
                cls = 1 if kind == "skylight" else 0
                lines.append(f"{cls} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} {(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
            (labels / (path.stem + ".txt")).write_text("\n".join(lines))
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnc: 2\nnames: ['pit', 'skylight']\n")
    return root
