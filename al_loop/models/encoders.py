"""Image encoders: a tile in, a frozen embedding (C, G, G) out, built by name from a registry.

Like segment-anything's ``sam_model_registry``: :data:`ENCODERS` maps a name to what is
known without loading anything (grid, channels, the cache id) and to a builder. Every
encoder follows SAM's frame geometry (:mod:`al_loop.models.geometry`), so the domain
decoder works on any of them.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from al_loop.data.images import DecodedTile, as_rgb8
from al_loop.errors import UsageError
from al_loop.models.engines import Engine, engine_for
from al_loop.models.filterbank import FilterbankEncoder
from al_loop.models.runtimes import CompiledImageEncoder, Conversion, runtime_cache_id
from al_loop.settings import PRECISIONS, SAM2_MODELS  # the one copy: the parser offers the same names


class Encoder(Protocol):
    id: str  # names the encoder, its weights and precision: part of every cache key
    grid: int  # embedding is (channels, grid, grid)
    channels: int

    def encode(self, tile: DecodedTile) -> np.ndarray:
        """(channels, grid, grid) float32 for one tile."""
        ...




def embedding_shape(sam) -> tuple[int, int]:
    """(grid, channels) of a SAM's image embedding: the prompt encoder was built for it, whatever
    the image encoder (ViT, TinyViT)."""
    grid = sam.prompt_encoder.image_embedding_size[0]
    return int(grid), int(sam.prompt_encoder.embed_dim)


def encoder_device(precision: str) -> torch.device:
    """Where SAM's image encoder runs: a GPU when this process sees one (a Ray actor given
    ``num_gpus`` sees its own), else the CPU; int8 is a CPU-only (dynamic quantisation) path."""
    if precision != "int8" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class SamEncoder:
    """SAM's ViT image encoder, frozen, in fp32, bf16 autocast or dynamic int8 linear layers."""

    def __init__(self, sam, model_id: str, precision: str = "fp32", runtime: str = "torch"):
        from segment_anything import SamPredictor

        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.sam = sam
        self.precision, self.runtime = precision, runtime
        self.id = runtime_cache_id(model_id, runtime, precision)
        enc = sam.image_encoder
        self.grid, self.channels = embedding_shape(sam)
        self._image_encoder = enc
        self.device = encoder_device(precision) if runtime == "torch" else torch.device("cpu")
        if runtime != "torch":
            # OpenVINO / ONNX Runtime: converted once, checked against torch, kept on disk.
            self._image_encoder = CompiledImageEncoder(enc, Conversion(runtime, model_id, precision, enc.img_size))
        elif precision == "int8":
            # Dynamic int8 on nn.Linear (the attention and MLP matmuls, where the time goes);
            # a quantised copy, so the float model used for prompts stays as it is.
            self._image_encoder = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(enc), {torch.nn.Linear}, dtype=torch.qint8
            )
        elif self.device.type == "cuda":
            # Only the image encoder moves: prompts are decoded on the CPU from the cached embedding.
            self._image_encoder = enc.to(self.device)
        self._predictor = SamPredictor(sam)

    @torch.inference_mode()
    def encode(self, tile: DecodedTile) -> np.ndarray:
        rgb = as_rgb8(tile.pixels)
        p = self._predictor
        resized = p.transform.apply_image(rgb)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
        x = self.sam.preprocess(x.float()).to(self.device)
        if self.precision == "bf16" and self.runtime == "torch":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                features = self._image_encoder(x)
        else:
            features = self._image_encoder(x)
        return features[0].float().cpu().numpy()

    def box_masks(self, embedding: np.ndarray, size: tuple[int, int], boxes) -> np.ndarray:
        """(N, H, W) bool: SAM's mask for each box from this embedding, as the backend makes them."""
        from al_loop.models.sam import PromptSegmenter

        segmenter = PromptSegmenter(self.sam)
        return np.stack([segmenter.segment(embedding, size, box=box).mask for box in boxes])


class Sam2Encoder:
    """SAM 2.1's image encoder (Hiera + FPN neck), frozen: its 256 x 64 x 64 embedding for the
    domain decoder and the two high-res maps its prompts need; on torch (fp32, or bf16
    autocast) or converted to OpenVINO / ONNX Runtime under the same agreement check as SAM's."""

    grid, channels = 64, 256

    # The cache keeps the three maps of a tile under the encoder's id and these suffixes: the
    # decoder reads the first alone, prompts all three (2 + 4 + 2 MiB a tile in float16).
    MAPS = ("", "+hr0", "+hr1")

    def __init__(self, name: str, checkpoint=None, precision: str = "fp32", runtime: str = "torch", model=None):
        """``model``: the Sam2Image already loaded from ``checkpoint`` (the backend shares its own)."""
        from al_loop.models.sam import load_sam, sam_id

        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if runtime == "torch" and precision == "int8":
            raise UsageError(f"{name} on torch runs in fp32 or bf16; int8 is offered on the onnx runtime", param="precision")
        self.precision, self.runtime = precision, runtime
        self.model = model if model is not None else load_sam(name, checkpoint)[0]
        model_id = sam_id(name, checkpoint)
        self.id = runtime_cache_id(model_id, runtime, precision)
        self._compiled = None if runtime == "torch" else CompiledImageEncoder(
            _ImagePath(self.model), Conversion(runtime, model_id, precision, self.model.image_size))

    @torch.inference_mode()
    def features(self, tile: DecodedTile):
        """All three maps of a tile (:class:`~al_loop.models.sam2.Sam2Features`)."""
        from al_loop.models.sam2 import Sam2Features

        rgb = as_rgb8(tile.pixels)
        if self._compiled is not None:
            maps = self._compiled(self.model.preprocess(rgb))
            return Sam2Features(*(m[0].float().numpy() for m in maps))
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model.features(rgb)
        return self.model.features(rgb)

    def encode(self, tile: DecodedTile) -> np.ndarray:
        return self.features(tile).embedding

    @property
    def map_ids(self) -> list[str]:
        """The cache ids of the three maps, in :class:`~al_loop.models.sam2.Sam2Features` order."""
        return [self.id + suffix for suffix in self.MAPS]

    def encode_maps(self, tile: DecodedTile) -> list[np.ndarray]:
        """The three maps, in :attr:`map_ids` order, from one encoder pass."""
        maps = self.features(tile)
        return [maps.embedding, maps.high_res_0, maps.high_res_1]

    def box_masks(self, embedding, size: tuple[int, int], boxes) -> np.ndarray:
        """(N, H, W) bool: SAM 2.1's mask for each box, from a tile's three maps (``embedding``
        is its :class:`~al_loop.models.sam2.Sam2Features`), as the backend makes them."""
        from al_loop.models.sam import PromptSegmenter

        return np.stack([m.mask for m in PromptSegmenter(self.model).box_masks(embedding, size, boxes)])


class _ImagePath(torch.nn.Module):
    """SAM 2.1's image path as one module, image -> its three maps: what a runtime converts."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.encode(x)


@dataclass(frozen=True)
class EncoderSpec:
    grid: int
    channels: int
    sam_model: str | None  # SAM model type, None for the filter bank

    def cache_id(self, checkpoint=None, precision: str = "fp32", runtime: str = "torch") -> str:
        """The id of this encoder in cache keys, known without loading any weights."""
        if self.sam_model is None:
            return FilterbankEncoder.id
        from al_loop.models.sam import sam_id

        return runtime_cache_id(sam_id(self.sam_model, checkpoint), runtime, precision)

    def build(self, checkpoint=None, precision: str = "fp32", runtime: str = "torch") -> Encoder:
        if self.sam_model is None:
            return FilterbankEncoder()
        if self.sam_model.startswith("sam2.1-"):
            return Sam2Encoder(self.sam_model, checkpoint, precision, runtime)
        from al_loop.models.sam import load_sam

        sam, model_id = load_sam(self.sam_model, checkpoint)
        return SamEncoder(sam, model_id, precision, runtime)


ENCODERS: dict[str, EncoderSpec] = {
    "filterbank": EncoderSpec(64, 42, None),
    "sam-vit_b": EncoderSpec(64, 256, "vit_b"),
    "sam-vit_l": EncoderSpec(64, 256, "vit_l"),
    "sam-vit_h": EncoderSpec(64, 256, "vit_h"),
    "sam-vit_t": EncoderSpec(64, 256, "vit_t"),  # MobileSAM: SAM's embedding shape from a TinyViT
    # SAM 2.1: Hiera's embedding (after no_mem_embed), the shape the decoder takes.
    **{name: EncoderSpec(64, 256, name) for name in SAM2_MODELS},
    "sam-tiny": EncoderSpec(16, 32, "tiny"),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise UsageError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def encoder_of_model(model: str) -> str:
    """The encoder name of a ``--model``: ``sam-vit_b`` for ``vit_b``; SAM 2.1's names are both."""
    return model if model in SAM2_MODELS else f"sam-{model}"


def model_id(name: str, checkpoint=None) -> str:
    """The id of an encoder's weights (no precision or runtime in it): what engine choices are recorded under."""
    spec = encoder_spec(name)
    if spec.sam_model is None:
        return FilterbankEncoder.id
    from al_loop.models.sam import sam_id

    return sam_id(spec.sam_model, checkpoint)


def resolve_engine(name: str, checkpoint=None, precision: str | None = None, runtime: str | None = None) -> Engine:
    """The runtime and precision an encoder runs on, and why: what is named wins, else this
    machine's measured choice (:mod:`al_loop.models.engines`), else the rule."""
    return engine_for(name, checkpoint, model_id(name, checkpoint), runtime, precision)


def encoder_id(name: str, checkpoint=None, precision: str | None = None, runtime: str | None = None) -> str:
    """The cache id of an encoder, known without loading its weights."""
    engine = resolve_engine(name, checkpoint, precision, runtime)
    return encoder_spec(name).cache_id(checkpoint, engine.precision, engine.runtime)


def build_encoder(name: str, checkpoint=None, precision: str | None = None, runtime: str | None = None) -> Encoder:
    """An encoder by registry name (``filterbank``, ``sam-vit_b``, ..., ``sam-tiny``) on a runtime
    (``torch``, ``openvino``, ``onnx``) and precision; None: :func:`resolve_engine`."""
    engine = resolve_engine(name, checkpoint, precision, runtime)
    return encoder_spec(name).build(checkpoint, engine.precision, engine.runtime)


class LazyEncoder:
    """An encoder whose id, grid and channels are known at once and whose model loads on
    first use: a pool that is already cached never loads SAM at all."""

    def __init__(self, name: str, checkpoint=None, precision: str | None = None, runtime: str | None = None):
        spec = encoder_spec(name)
        self.name, self.checkpoint = name, checkpoint
        self.engine = resolve_engine(name, checkpoint, precision, runtime)  # what runs, and why
        self.precision, self.runtime = self.engine.precision, self.engine.runtime
        self.id = spec.cache_id(checkpoint, self.precision, self.runtime)
        self.grid, self.channels = spec.grid, spec.channels
        self._encoder: Encoder | None = None
        self.load_seconds = 0.0  # how long building the model took (0 until it is built)

    @property
    def loaded(self) -> Encoder:
        if self._encoder is None:
            started = time.perf_counter()
            self._encoder = build_encoder(self.name, self.checkpoint, self.precision, self.runtime)
            self.load_seconds = time.perf_counter() - started
        return self._encoder

    def encode(self, tile: DecodedTile) -> np.ndarray:
        return self.loaded.encode(tile)
