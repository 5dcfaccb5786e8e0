"""The domain decoder: three transposed-conv up-sampling layers on frozen embeddings, sigmoid.

Each layer has kernel = stride = 2, as SAM's own mask up-scaling, so every output
pixel depends on exactly one embedding cell: an 8x8 patch per cell
(``forward_cells``, which training uses). This module holds the network, inference
(probabilities over the frame or over the tile) and saving/loading; training is
:mod:`al_loop.training.train`, and what counts as a pit in the output is
:mod:`al_loop.models.pits`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from al_loop.errors import UsageError
from al_loop.models.geometry import frame_to_tile

UPSCALE = 8  # three x2 layers


@lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    """True where the CPU has native bf16 matmuls (AVX-512 BF16 / AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(enabled: bool):
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


@torch.inference_mode()
def predict_frames(
    decoder: DomainDecoder, embeddings: np.ndarray | torch.Tensor, mc_samples: int = 0, bf16: bool | None = None
) -> np.ndarray:
    """Foreground probabilities over the frame: (N, 8G, 8G), or (T, N, 8G, 8G) with MC dropout."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    bf16 = bf16_is_fast() if bf16 is None else bf16

    def once() -> np.ndarray:
        with autocast(bf16):
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


def predict_tile(decoder: DomainDecoder, embedding: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Foreground probabilities over one tile, (H, W) of its original size."""
    return frame_to_tile(predict_frames(decoder, np.asarray(embedding)[None])[0], original_size)


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
        raise UsageError(
            f"decoder {path} was trained on embeddings of {blob['encoder_id']!r}, not {encoder_id!r}; "
            "retrain it for this encoder"
        )
    decoder = DomainDecoder(blob["in_channels"], tuple(blob["hidden"]), blob["dropout"])
    decoder.load_state_dict(blob["state_dict"])
    return decoder.eval(), {"encoder_id": blob["encoder_id"], **blob["meta"]}
