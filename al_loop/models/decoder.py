"""The domain decoder: three transposed-conv up-sampling layers on frozen embeddings, sigmoid.

Each layer has kernel = stride = 2, as SAM's own mask up-scaling, so every output
pixel depends on exactly one embedding cell: an 8x8 patch per cell. Training uses
that: each epoch it visits every cell that holds foreground and a random fraction of
the background cells, weighted by the inverse fraction, so the loss is an unbiased
estimate of the whole-tile loss at a fraction of its cost. Only decoder weights
train; the encoder never runs here, it was run once into the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from al_loop.models.encoders import valid_shape

UPSCALE = 8  # three x2 layers


@lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    """True where the CPU has native bf16 matmuls (AVX-512 BF16 / AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


class DomainDecoder(nn.Module):
    def __init__(self, in_channels: int, hidden: tuple[int, int] = (32, 16), dropout: float = 0.1):
        super().__init__()
        self.in_channels = in_channels
        self.hidden = tuple(hidden)
        self.dropout_p = dropout
        # Per-channel standardisation of the frozen embedding, fitted on the training tiles:
        # filter-bank channels differ by orders of magnitude, SAM's less so.
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        self.dropout = nn.Dropout(dropout)  # also what MC-dropout samples at scoring time
        self.up1 = nn.ConvTranspose2d(in_channels, hidden[0], kernel_size=2, stride=2)
        self.up2 = nn.ConvTranspose2d(hidden[0], hidden[1], kernel_size=2, stride=2)
        self.up3 = nn.ConvTranspose2d(hidden[1], 1, kernel_size=2, stride=2)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, 8h, 8w) for embeddings (N, C, h, w)."""
        x = (embedding - self.mean[:, None, None]) / self.std[:, None, None]
        x = self.dropout(x)
        x = F.gelu(self.up1(x))
        x = F.gelu(self.up2(x))
        return self.up3(x)

    def forward_cells(self, cells: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, 8, 8) for single cells (N, C): the same function as ``forward`` on
        (N, C, 1, 1), computed as three matrix products (a kernel = stride transposed
        conv on one cell is one), several times faster on a CPU.

        ``keep`` is an (N, C) bool dropout mask drawn by the caller (training draws them in
        bulk: per-call Bernoulli sampling cost more than the matrix products)."""
        x = (cells - self.mean) / self.std
        if keep is None:
            x = self.dropout(x)
        elif self.training and self.dropout_p > 0:
            x = x * keep / (1.0 - self.dropout_p)
        n = x.shape[0]
        for layer, act in ((self.up1, True), (self.up2, True), (self.up3, False)):
            cin, cout = layer.weight.shape[:2]
            # weight (in, out, dy, dx) -> columns ordered (dy, dx, out), so the product's rows
            # split into one row per sub-pixel without moving activations: each sub-pixel is
            # the next layer's cell.
            weight = layer.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)
            x = torch.addmm(layer.bias.repeat(4), x, weight)
            x = F.gelu(x) if act else x
            x = x.reshape(-1, cout)
        # rows are now ordered (cell, dy1, dx1, dy2, dx2, dy3, dx3); put them into an 8x8 patch
        x = x.reshape(n, 2, 2, 2, 2, 2, 2)
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, 8, 8)


@dataclass
class TrainingSet:
    """Embeddings with their masks mapped into the decoder's output frame."""

    embeddings: list[np.ndarray] = field(default_factory=list)  # (C, G, G) each
    targets: list[np.ndarray] = field(default_factory=list)  # (8G, 8G) float in [0, 1]
    valid: list[np.ndarray] = field(default_factory=list)  # (8G, 8G) bool: the tile, not padding

    def add(self, embedding: np.ndarray, mask: np.ndarray) -> None:
        """Add one tile: ``mask`` is the tile-sized (H, W) expert mask (all False = no pit)."""
        grid = embedding.shape[-1]
        target, valid = frame_target(mask, grid * UPSCALE)
        self.embeddings.append(np.asarray(embedding))
        self.targets.append(target)
        self.valid.append(valid)

    def __len__(self) -> int:
        return len(self.embeddings)


def frame_target(mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile-sized mask scaled into the top-left of a ``side`` x ``side`` frame (area-averaged)."""
    h, w = valid_shape(mask.shape, side)
    scaled = Image.fromarray(mask.astype(np.float32)).resize((w, h), Image.BOX)
    target = np.zeros((side, side), dtype=np.float32)
    target[:h, :w] = np.clip(np.asarray(scaled), 0.0, 1.0)
    valid = np.zeros((side, side), dtype=bool)
    valid[:h, :w] = True
    return target, valid


def _cells(a: np.ndarray) -> np.ndarray:
    """(8G, 8G) -> (G*G, 8, 8): the output patch of each embedding cell."""
    g = a.shape[0] // UPSCALE
    return a.reshape(g, UPSCALE, g, UPSCALE).transpose(0, 2, 1, 3).reshape(g * g, UPSCALE, UPSCALE)


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
        raise ValueError("no labelled tiles to train on")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    channels = data.embeddings[0].shape[0]
    # Cell view of the whole training set, held once (labelled sets are small).
    # Row-major (one cell per contiguous row): concatenating transposed views would give a
    # column-major array, which made every gather and product stride across memory.
    cell_x = np.ascontiguousarray(np.concatenate([e.reshape(channels, -1).T for e in data.embeddings]), dtype=np.float32)
    cell_y = np.concatenate([_cells(t) for t in data.targets])
    cell_w = np.concatenate([_cells(v) for v in data.valid]).astype(np.float32)
    in_tile = cell_w.any(axis=(1, 2))
    foreground = (cell_y > 0).any(axis=(1, 2)) & in_tile
    background = np.flatnonzero(~foreground & in_tile)
    foreground = np.flatnonzero(foreground)

    decoder = DomainDecoder(channels, hidden, dropout)
    used = cell_x[in_tile]
    decoder.mean.copy_(torch.from_numpy(used.mean(axis=0)))
    decoder.std.copy_(torch.from_numpy(used.std(axis=0) + 1e-6))
    del used
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr, foreach=True)
    x_all = torch.from_numpy(cell_x)
    y_all = torch.from_numpy(cell_y)
    w_all = torch.from_numpy(cell_w)
    valid_px = cell_w.sum(axis=(1, 2))  # per cell: what one cell weighs in the loss
    n_background = max(1, int(round(background_fraction * len(background)))) if len(background) else 0
    pos_weight_t = torch.tensor(float(pos_weight))
    generator = torch.Generator().manual_seed(seed)
    # Dropout masks come from one bank drawn up front, read at a random row offset per batch:
    # every cell still gets a fresh random mask each epoch, at a fraction of the cost.
    bank = torch.rand(2 * batch_cells, channels, generator=generator) >= dropout
    x_epoch = y_epoch = w_epoch = None
    decoder.train()
    for _ in tqdm(range(epochs), desc="train decoder", unit="epoch", disable=not progress, leave=False):
        chosen = rng.choice(background, size=n_background, replace=False) if n_background else background
        idx = np.concatenate([foreground, chosen])
        weight = np.concatenate(
            [np.ones(len(foreground), np.float32), np.full(len(chosen), len(background) / max(1, len(chosen)), np.float32)]
        )
        order = rng.permutation(len(idx))
        idx, weight = idx[order], weight[order]
        total_weight = float((weight * valid_px[idx]).sum())
        # One gather per epoch into buffers kept across epochs (every epoch has the same
        # number of cells): index_select is far quicker than fancy indexing per batch, and
        # reusing the memory spares the page faults of a fresh 30 MB array each epoch.
        sel = torch.from_numpy(idx)
        if x_epoch is None:
            x_epoch, y_epoch, w_epoch = x_all.new_empty(len(idx), channels), y_all.new_empty(len(idx), 8, 8), w_all.new_empty(len(idx), 8, 8)
        torch.index_select(x_all, 0, sel, out=x_epoch)
        torch.index_select(y_all, 0, sel, out=y_epoch)
        torch.index_select(w_all, 0, sel, out=w_epoch)
        w_epoch.mul_(torch.from_numpy(weight)[:, None, None])
        for start in range(0, len(idx), batch_cells):
            stop = min(start + batch_cells, len(idx))
            offset = int(torch.randint(0, batch_cells + 1, (1,), generator=generator))
            with _autocast(bf16):
                logits = decoder.forward_cells(x_epoch[start:stop], bank[offset : offset + stop - start])
            bce = F.binary_cross_entropy_with_logits(
                logits.float(), y_epoch[start:stop], reduction="none", pos_weight=pos_weight_t
            )
            loss = (bce * w_epoch[start:stop]).sum() / total_weight
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return decoder.eval()


@torch.inference_mode()
def predict_frames(
    decoder: DomainDecoder, embeddings: np.ndarray | torch.Tensor, mc_samples: int = 0, bf16: bool | None = None
) -> np.ndarray:
    """Foreground probabilities over the frame: (N, 8G, 8G), or (T, N, 8G, 8G) with MC dropout."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    bf16 = bf16_is_fast() if bf16 is None else bf16

    def once() -> np.ndarray:
        with _autocast(bf16):
            logits = decoder(x)
        return torch.sigmoid(logits.float())[:, 0].numpy()

    if mc_samples <= 0:
        decoder.eval()
        return once()
    decoder.train()  # dropout on: each pass is one sample of the decoder's posterior
    try:
        return np.stack([once() for _ in range(mc_samples)])
    finally:
        decoder.eval()


def frame_to_tile(frame: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Crop the tile's part of a frame map and resize it to the tile's (H, W), bilinear."""
    h, w = valid_shape(original_size, frame.shape[-1])
    crop = np.ascontiguousarray(frame[:h, :w], dtype=np.float32)
    return np.asarray(Image.fromarray(crop).resize((original_size[1], original_size[0]), Image.BILINEAR))


def valid_region(frame: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """The tile's part of a frame map (no resize): what scoring looks at."""
    h, w = valid_shape(original_size, frame.shape[-1])
    return frame[..., :h, :w]


def save_decoder(decoder: DomainDecoder, path: str | Path, encoder_id: str, **meta) -> Path:
    """Save weights with the encoder id they belong to (and any round metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "state_dict": decoder.state_dict(),
            "in_channels": decoder.in_channels,
            "hidden": list(decoder.hidden),
            "dropout": decoder.dropout_p,
            "encoder_id": encoder_id,
            "meta": meta,
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load_decoder(path: str | Path, encoder_id: str | None = None) -> tuple[DomainDecoder, dict]:
    """Load a saved decoder; refuses one trained on another encoder's embeddings."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if encoder_id is not None and blob["encoder_id"] != encoder_id:
        raise ValueError(
            f"decoder {path} was trained on embeddings of {blob['encoder_id']!r}, not {encoder_id!r}; "
            "retrain it for this encoder"
        )
    decoder = DomainDecoder(blob["in_channels"], tuple(blob["hidden"]), blob["dropout"])
    decoder.load_state_dict(blob["state_dict"])
    return decoder.eval(), {"encoder_id": blob["encoder_id"], **blob["meta"]}
