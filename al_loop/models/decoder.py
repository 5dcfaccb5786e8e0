"""The domain decoder: three transposed-conv up-sampling layers on frozen embeddings.

It scores K pit types against background: K output channels are the types' logits and
background's logit is fixed at 0, so the K+1 class probabilities are a softmax over
(0, logits). For one type (binary "pit") that is exactly a sigmoid of the one logit, and
a decoder saved before types existed is the K = 1 case of the same network.

Each layer has kernel = stride = 2, as SAM's own mask up-scaling, so every output
pixel depends on exactly one embedding cell: an 8x8 patch per cell
(``forward_cells``, which training uses). This module holds the network, inference
(probabilities over the frame or over the tile) and saving/loading; training is
:mod:`al_loop.training.train`, and what counts as a pit in the output is
:mod:`al_loop.models.pits`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from al_loop.errors import DecoderFileError, UsageError
from al_loop.models.card import DecoderCard, card_from_record
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
    def __init__(self, in_channels: int, hidden: tuple[int, int] = (32, 16), dropout: float = 0.1, types: int = 1):
        super().__init__()
        if types < 1:
            raise UsageError(f"a decoder needs at least one pit type, not {types}")
        self.in_channels = in_channels
        self.types = types
        # The loss weight of background and each type in training (inverse frequency), kept
        # with the decoder: the rare-type strategy ranks by it.
        self.class_weights = [1.0] * (types + 1)
        self.hidden = tuple(hidden)
        self.dropout_p = dropout
        # Per-channel standardisation of the frozen embedding, fitted on the training tiles:
        # filter-bank channels differ by orders of magnitude, SAM's less so.
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        self.dropout = nn.Dropout(dropout)  # also what MC-dropout samples at scoring time
        self.up1 = nn.ConvTranspose2d(in_channels, hidden[0], kernel_size=2, stride=2)
        self.up2 = nn.ConvTranspose2d(hidden[0], hidden[1], kernel_size=2, stride=2)
        self.up3 = nn.ConvTranspose2d(hidden[1], types, kernel_size=2, stride=2)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Type logits (N, K, 8h, 8w) for embeddings (N, C, h, w); background's is 0."""
        x = (embedding - self.mean[:, None, None]) / self.std[:, None, None]
        x = self.dropout(x)
        x = F.gelu(self.up1(x))
        x = F.gelu(self.up2(x))
        return self.up3(x)

    def forward_cells(self, cells: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Type logits (N, K, 8, 8) for single cells (N, C): the same function as ``forward`` on
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
        # rows are now ordered (cell, dy1, dx1, dy2, dx2, dy3, dx3), columns the types: put each
        # type's rows into an 8x8 patch
        x = x.reshape(n, 2, 2, 2, 2, 2, 2, self.types)
        return x.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(n, self.types, 8, 8)


def class_probabilities(type_logits: torch.Tensor) -> torch.Tensor:
    """(N, K, ...) type logits -> (N, K+1, ...) probabilities, background first."""
    background = type_logits.new_zeros(type_logits[:, :1].shape)
    return torch.softmax(torch.cat([background, type_logits], dim=1), dim=1)


def class_log_probabilities(type_logits: torch.Tensor) -> torch.Tensor:
    """log of :func:`class_probabilities`, computed stably (what the loss uses)."""
    background = type_logits.new_zeros(type_logits[:, :1].shape)
    return torch.log_softmax(torch.cat([background, type_logits], dim=1), dim=1)


@torch.inference_mode()
def predict_class_frames(
    decoder: DomainDecoder, embeddings: np.ndarray | torch.Tensor, bf16: bool | None = None, sample: bool = False
) -> np.ndarray:
    """Class probabilities over the frame, (N, K+1, 8G, 8G), background first. ``sample``
    keeps dropout on: one draw from the decoder's posterior (MC dropout)."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    bf16 = bf16_is_fast() if bf16 is None else bf16
    decoder.train(sample)
    try:
        with autocast(bf16):
            logits = decoder(x)
        return class_probabilities(logits.float()).numpy()
    finally:
        decoder.eval()


def predict_frames(
    decoder: DomainDecoder, embeddings: np.ndarray | torch.Tensor, mc_samples: int = 0, bf16: bool | None = None
) -> np.ndarray:
    """Pit probabilities (any type) over the frame: (N, 8G, 8G), or (T, N, 8G, 8G) with MC dropout."""
    # The sum over types, not 1 - background: no cancellation where a pit is very unlikely.
    if mc_samples <= 0:
        return predict_class_frames(decoder, embeddings, bf16)[:, 1:].sum(axis=1)
    return np.stack([predict_class_frames(decoder, embeddings, bf16, sample=True)[:, 1:].sum(axis=1)
                     for _ in range(mc_samples)])


def predict_tile(decoder: DomainDecoder, embedding: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Pit probabilities (any type) over one tile, (H, W) of its original size."""
    return frame_to_tile(predict_frames(decoder, np.asarray(embedding)[None])[0], original_size)


def predict_tile_classes(decoder: DomainDecoder, embedding: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Class probabilities over one tile, (K+1, H, W), background first."""
    frames = predict_class_frames(decoder, np.asarray(embedding)[None])[0]
    return np.stack([frame_to_tile(frame, original_size) for frame in frames])


def save_decoder(decoder: DomainDecoder, path: str | Path, card: DecoderCard) -> Path:
    """Save weights with their card (atomically: a reader sees the old file or the new). The card
    is stamped with the time and the versions of al-loop and torch unless it has them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    card = replace(card, created=card.created if card.created is not None else time.time(),
                   versions=card.versions or {"al_loop": _installed_version(), "torch": str(torch.__version__)})
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "state_dict": decoder.state_dict(),
            "in_channels": decoder.in_channels,
            "hidden": list(decoder.hidden),
            "dropout": decoder.dropout_p,
            "types": decoder.types,
            "class_weights": list(decoder.class_weights),
            "encoder_id": card.encoder_id,  # also at the top: what an older al-loop checks
            "card": card.to_record(),
        },
        tmp,
    )
    tmp.replace(path)
    return path


def _installed_version() -> str:
    try:
        return metadata.version("mars-pits-al")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _decoder_blob(path: Path) -> dict:
    """The saved dict of a decoder file; a missing, truncated or foreign file is one clear error."""
    if not path.is_file():
        raise DecoderFileError(f"{path}: no such decoder file")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol before it fails
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds (pickle, zip, EOF, runtime) on a bad file; its
        # messages run to paragraphs of advice that does not apply here (weights_only=False): the kind says enough
        raise DecoderFileError(f"{path}: not a decoder file al-loop can read ({type(exc).__name__}); train the "
                               "decoder again or restore the file") from None
    if not isinstance(blob, dict) or not {"in_channels", "hidden", "dropout", "state_dict"} <= set(blob):
        raise DecoderFileError(f"{path}: a torch file, but not an al-loop decoder (its keys are not a decoder's)")
    return blob


def load_decoder(path: str | Path, encoder_id: str | None = None) -> tuple[DomainDecoder, DecoderCard]:
    """Load a saved decoder and its card; refuses one trained on another encoder's embeddings.
    A file from before cards (an untyped ``meta`` dict) is read through :func:`card.migrate`."""
    blob = _decoder_blob(Path(path))
    if "card" in blob:
        card = card_from_record(blob["card"], path)
    else:
        card = card_from_record({**(blob.get("meta") or {}), "encoder_id": blob.get("encoder_id")}, path)
    if encoder_id is not None and card.encoder_id != encoder_id:
        raise UsageError(
            f"decoder {path} was trained on embeddings of {card.encoder_id!r}, not {encoder_id!r}; "
            "retrain it for this encoder"
        )
    # Decoders saved before pit types existed have neither key: they are the one-type case.
    decoder = DomainDecoder(blob["in_channels"], tuple(blob["hidden"]), blob["dropout"], blob.get("types", 1))
    decoder.class_weights = list(blob.get("class_weights", decoder.class_weights))
    decoder.load_state_dict(blob["state_dict"])
    return decoder.eval(), card
