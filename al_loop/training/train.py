"""Training the domain decoder on frozen embeddings (the encoder never runs here).

Every output pixel of the decoder depends on one embedding cell, so training works on
cells: each epoch visits every cell that holds foreground and a random fraction of the
background cells, weighted by the inverse fraction, so the loss is an unbiased
estimate of the whole-tile loss at a fraction of its cost.

With K pit types the loss is a class-weighted cross-entropy over background and the
types: each type weighs the inverse of its share of the labelled pit pixels (clipped),
so a type seen 159 times is not drowned by one seen 426 times. One type is the binary
case: the same loss is then BCE with ``pos_weight``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from al_loop.errors import UsageError
from al_loop.models.decoder import UPSCALE, DomainDecoder, autocast, class_log_probabilities
from al_loop.models.geometry import frame_target, frame_types

TYPE_WEIGHT_RANGE = (0.25, 4.0)  # how far a type's weight may move from the pit weight


@dataclass
class TrainingSet:
    """Embeddings with their masks mapped into the decoder's output frame."""

    types: int = 1  # K: pit types the masks distinguish (1 = binary "pit")
    embeddings: list[np.ndarray] = field(default_factory=list)  # (C, G, G) each
    targets: list[np.ndarray] = field(default_factory=list)  # (8G, 8G) float in [0, 1]: pit, any type
    type_maps: list[np.ndarray] = field(default_factory=list)  # (8G, 8G) uint8: the pit's type, 0 = none
    valid: list[np.ndarray] = field(default_factory=list)  # (8G, 8G) bool: the tile, not padding

    def add(self, embedding: np.ndarray, labels: np.ndarray) -> None:
        """Add one tile: ``labels`` is the tile-sized (H, W) expert mask, a type number per
        pixel (0 = no pit, 1..K) or bool for one type; all 0 = a tile without pits."""
        labels = np.asarray(labels)
        if labels.dtype != bool and labels.size and (labels.min() < 0 or labels.max() > self.types):
            raise UsageError(f"a mask holds type {int(labels.max())}; this training set has types 1..{self.types}")
        side = embedding.shape[-1] * UPSCALE
        target, valid = frame_target(labels > 0, side)
        self.embeddings.append(np.asarray(embedding))
        self.targets.append(target)
        self.type_maps.append(frame_types(labels, side, self.types))
        self.valid.append(valid)

    def __len__(self) -> int:
        return len(self.embeddings)


def _cells(a: np.ndarray) -> np.ndarray:
    """(8G, 8G) -> (G*G, 8, 8): the output patch of each embedding cell."""
    g = a.shape[0] // UPSCALE
    return a.reshape(g, UPSCALE, g, UPSCALE).transpose(0, 2, 1, 3).reshape(g * g, UPSCALE, UPSCALE)


@dataclass
class CellSet:
    """A training set seen cell by cell, held once (labelled sets are small).

    Row-major (one cell per contiguous row): concatenating transposed views would give a
    column-major array, which made every gather and product stride across memory.
    """

    x: torch.Tensor  # (cells, C) embedding vectors
    y: torch.Tensor  # (cells, 8, 8) targets: pit, any type
    t: torch.Tensor  # (cells, 8, 8) uint8 type of the pit, 1..K (1 where there is none: y is 0 there)
    w: torch.Tensor  # (cells, 8, 8) 1 where the pixel belongs to the tile
    foreground: np.ndarray  # indices of cells holding any pit pixel
    background: np.ndarray  # indices of the other cells inside a tile
    valid_px: np.ndarray  # per cell: its tile pixels, what one cell weighs in the loss

    @classmethod
    def of(cls, data: TrainingSet) -> CellSet:
        channels = data.embeddings[0].shape[0]
        x = np.ascontiguousarray(np.concatenate([e.reshape(channels, -1).T for e in data.embeddings]), dtype=np.float32)
        y = np.concatenate([_cells(t) for t in data.targets])
        t = np.maximum(np.concatenate([_cells(m) for m in data.type_maps]), 1)
        w = np.concatenate([_cells(v) for v in data.valid]).astype(np.float32)
        in_tile = w.any(axis=(1, 2))
        foreground = (y > 0).any(axis=(1, 2)) & in_tile
        return cls(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(t), torch.from_numpy(w),
                   np.flatnonzero(foreground), np.flatnonzero(~foreground & in_tile), w.sum(axis=(1, 2)))

    def type_pixels(self, types: int) -> np.ndarray:
        """(K,) labelled pit pixels of each type (in the frame, fractional at edges)."""
        y, t = self.y.numpy(), self.t.numpy()
        return np.array([float(y[t == k].sum()) for k in range(1, types + 1)])

    def standardise(self, decoder: DomainDecoder) -> None:
        """Fit the decoder's per-channel standardisation on the cells inside tiles."""
        used = self.x.numpy()[np.sort(np.concatenate([self.foreground, self.background]))]  # cell order, as always
        decoder.mean.copy_(torch.from_numpy(used.mean(axis=0)))
        decoder.std.copy_(torch.from_numpy(used.std(axis=0) + 1e-6))


@dataclass
class EpochSampler:
    """Which cells an epoch visits, with their loss weights, gathered into buffers kept
    across epochs (every epoch has the same number of cells): index_select is far quicker
    than fancy indexing per batch, and reusing the memory spares the page faults of a
    fresh 30 MB array each epoch."""

    cells: CellSet
    background_fraction: float
    rng: np.random.Generator
    buffers: tuple[torch.Tensor, ...] | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(x, y, t, weighted w, total weight) for one epoch, in a fresh random order."""
        cells, background = self.cells, self.cells.background
        n_background = max(1, int(round(self.background_fraction * len(background)))) if len(background) else 0
        chosen = self.rng.choice(background, size=n_background, replace=False) if n_background else background
        idx = np.concatenate([cells.foreground, chosen])
        weight = np.concatenate([np.ones(len(cells.foreground), np.float32),
                                 np.full(len(chosen), len(background) / max(1, len(chosen)), np.float32)])
        order = self.rng.permutation(len(idx))
        idx, weight = idx[order], weight[order]
        if self.buffers is None:
            self.buffers = (cells.x.new_empty(len(idx), cells.x.shape[1]), cells.y.new_empty(len(idx), 8, 8),
                            cells.t.new_empty(len(idx), 8, 8), cells.w.new_empty(len(idx), 8, 8))
        x, y, t, w = self.buffers
        sel = torch.from_numpy(idx)
        torch.index_select(cells.x, 0, sel, out=x)
        torch.index_select(cells.y, 0, sel, out=y)
        torch.index_select(cells.t, 0, sel, out=t)
        torch.index_select(cells.w, 0, sel, out=w)
        w.mul_(torch.from_numpy(weight)[:, None, None])
        return x, y, t, w, float((weight * cells.valid_px[idx]).sum())


def train_decoder(
    data: TrainingSet,
    epochs: int = 100,
    seed: int = 0,
    lr: float = 5e-3,
    background_fraction: float = 0.1,
    batch_cells: int = 1024,
    hidden: tuple[int, int] = (32, 16),
    dropout: float = 0.1,
    pos_weight: float = 3.0,
    bf16: bool = False,
    progress: bool = True,
) -> DomainDecoder:
    """Fit a fresh decoder on ``data``; deterministic for a given seed on one machine.

    ``bf16`` runs the matmuls under bf16 autocast (float32 weights and loss); off by
    default: on the 2-core development CPU it was slower than float32 (27.8 s vs 20.3 s
    for 50 tiles x 100 epochs of 256 channels).
    """
    if len(data) == 0:
        raise UsageError("no labelled tiles to train on")
    torch.manual_seed(seed)
    cells = CellSet.of(data)
    decoder = DomainDecoder(cells.x.shape[1], hidden, dropout, data.types)
    cells.standardise(decoder)
    decoder.class_weights = class_weights(cells.type_pixels(data.types), pos_weight)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr, foreach=True)
    sampler = EpochSampler(cells, background_fraction, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    # Dropout masks come from one bank drawn up front, read at a random row offset per batch:
    # every cell still gets a fresh random mask each epoch, at a fraction of the cost.
    bank = torch.rand(2 * batch_cells, cells.x.shape[1], generator=generator) >= dropout
    step = _Step(decoder, optimiser, torch.tensor(decoder.class_weights), bf16)
    decoder.train()
    for _ in tqdm(range(epochs), desc="train decoder", unit="epoch", disable=not progress, leave=False):
        x, y, t, w, total_weight = sampler.next()
        for start in range(0, len(x), batch_cells):
            stop = min(start + batch_cells, len(x))
            offset = int(torch.randint(0, batch_cells + 1, (1,), generator=generator))
            step(x[start:stop], y[start:stop], t[start:stop], w[start:stop], bank[offset : offset + stop - start],
                 total_weight)
    return decoder.eval()


def class_weights(type_pixels: np.ndarray, pit_weight: float) -> list[float]:
    """Loss weights of background (1) and each type: ``pit_weight`` scaled by the inverse of the
    type's share of the labelled pit pixels (a type seen half as often weighs twice as much),
    clipped to :data:`TYPE_WEIGHT_RANGE`; a type with no labelled pixel keeps ``pit_weight``."""
    pixels = np.asarray(type_pixels, dtype=float)
    present = pixels > 0
    scale = np.ones_like(pixels)
    if present.any():
        scale[present] = np.clip(pixels[present].mean() / pixels[present], *TYPE_WEIGHT_RANGE)
    return [1.0] + [float(pit_weight * v) for v in scale]


@dataclass
class _Step:
    """One optimiser step on a batch of cells: class-weighted cross-entropy over their 8x8
    patches, with soft pit targets (a pixel partly covered by a pit is partly background)."""

    decoder: DomainDecoder
    optimiser: torch.optim.Optimizer
    weights: torch.Tensor  # (K+1,) background first
    bf16: bool

    def __call__(self, x, y, t, w, keep, total_weight: float) -> None:
        with autocast(self.bf16):
            logits = self.decoder.forward_cells(x, keep)
        log_p = class_log_probabilities(logits.float())  # (n, K+1, 8, 8)
        if len(self.weights) == 2:  # one type: every pit pixel is type 1, so no gather (the same numbers, faster)
            pit, pit_weight = log_p[:, 1], self.weights[1]
        else:
            t = t.long()
            pit, pit_weight = log_p.gather(1, t[:, None])[:, 0], self.weights[t]
        nll = -(self.weights[0] * (1 - y) * log_p[:, 0] + pit_weight * y * pit)
        loss = (nll * w).sum() / total_weight
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
