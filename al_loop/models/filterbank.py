"""The no-weights encoder: ilastik's classical multi-scale features, pooled onto SAM's grid.

Per scale sigma: Gaussian smoothing, Laplacian of Gaussian, Gaussian gradient
magnitude, the two Hessian eigenvalues and the two structure-tensor eigenvalues
(ilastik's pixel-classification feature set). Derivative features are
scale-normalised (times sigma^order) so a pit looks alike whatever its size. The
feature maps are averaged over SAM's 16-pixel cells, giving a (42, 64, 64)
"embedding" the domain decoder trains on exactly as on SAM's.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.feature import hessian_matrix_eigvals, structure_tensor, structure_tensor_eigenvalues
from skimage.measure import block_reduce

from al_loop.data.images import DecodedTile, as_grey_float
from al_loop.models.geometry import PREPROCESSING_VERSION, scaled_shape

# Sigmas in pixels of the 512-px working frame (ilastik's defaults, 0.3 left out:
# it is below the working frame's pixel).
SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
FEATURES_PER_SIGMA = 7
WORK_SIDE = 512  # half of SAM's 1024 frame: a 16-px SAM cell is 8 px here
GRID = 64


class FilterbankEncoder:
    id = f"filterbank-v{PREPROCESSING_VERSION}"
    grid = GRID
    channels = len(SIGMAS) * FEATURES_PER_SIGMA

    def encode(self, tile: DecodedTile) -> np.ndarray:
        grey = as_grey_float(tile.pixels)
        h, w = scaled_shape(grey.shape[0], grey.shape[1], WORK_SIDE)
        small = np.asarray(Image.fromarray(grey).resize((w, h), Image.BILINEAR), dtype=np.float32)
        maps = filter_bank(small)  # (C, h, w)
        framed = np.zeros((maps.shape[0], WORK_SIDE, WORK_SIDE), dtype=np.float32)
        framed[:, :h, :w] = maps
        cell = WORK_SIDE // GRID
        return block_reduce(framed, (1, cell, cell), np.mean).astype(np.float32)


def filter_bank(image: np.ndarray, sigmas: tuple[float, ...] = SIGMAS) -> np.ndarray:
    """(len(sigmas) * 7, H, W) feature maps of a float image in [0, 1]."""
    out = []
    for s in sigmas:
        # Gaussian derivatives once per order; LoG, gradient and Hessian all reuse them.
        d = {o: ndimage.gaussian_filter(image, s, order=o, mode="reflect") for o in _ORDERS}
        out.append(d[(0, 0)])
        out.append((d[(2, 0)] + d[(0, 2)]) * s**2)  # Laplacian of Gaussian
        out.append(np.hypot(d[(1, 0)], d[(0, 1)]) * s)  # gradient magnitude
        out.extend(hessian_matrix_eigvals([d[(2, 0)], d[(1, 1)], d[(0, 2)]]) * s**2)
        tensor = structure_tensor(image, sigma=s, order="rc")
        out.extend(structure_tensor_eigenvalues(tensor))  # sobel derivatives: not scale-dependent
    return np.stack(out).astype(np.float32)


_ORDERS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
