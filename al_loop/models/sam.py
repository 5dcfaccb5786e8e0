"""Segment Anything: a model registry and one prompt-to-mask predictor over cached embeddings.

``vit_b``/``vit_l``/``vit_h`` are the official architectures loaded from official
checkpoints; ``vit_t`` is MobileSAM (a TinyViT image encoder distilled from ViT-H's, with SAM's
own prompt encoder and mask decoder), from its authors' checkpoint. ``tiny`` is the same SAM architecture with small dimensions and seeded
random weights: real code paths, meaningless masks. It exists for tests and CI only.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from al_loop.errors import UsageError
from al_loop.models.geometry import clip_to_box
from al_loop.models.weights import CHECKPOINTS, resolve_checkpoint
from al_loop.settings import SAM2_MODELS

MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "vit_t", *SAM2_MODELS, "tiny")  # SAM 1 architectures and SAM 2.1
TINY_SEED = 0


def build_tiny_sam(seed: int = TINY_SEED) -> Sam:
    """SAM's architecture at toy size (256 px input, 16x16x32 embedding), seeded random weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        img_size, patch, dim = 256, 16, 32
        grid = img_size // patch
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size,
                patch_size=patch,
                embed_dim=64,
                depth=2,
                num_heads=2,
                mlp_ratio=2,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=4,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=4
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    finally:
        torch.random.set_rng_state(generator_state)
    return sam.eval()


def load_sam(model_type: str, checkpoint: str | Path | None = None) -> tuple[Sam, str]:
    """Build a SAM model and return it with an id that names its weights.

    The id goes into embedding-cache keys, so embeddings from different weights
    never mix.
    """
    model_id = sam_id(model_type, checkpoint)
    if model_type == "tiny":
        return build_tiny_sam(), model_id
    path = resolve_checkpoint(model_type, checkpoint)
    if model_type in SAM2_MODELS:  # SAM 2.1: our Hiera image path with SAM 2's prompt heads
        from al_loop.models.sam2 import build_sam2

        return build_sam2(model_type.split("-", 1)[1], path), model_id
    if model_type == "vit_t":  # MobileSAM: our TinyViT, SAM's own prompt encoder and mask decoder
        from al_loop.models.tinyvit import build_sam_vit_t

        return build_sam_vit_t(path), model_id
    return sam_model_registry[model_type](checkpoint=str(path)).eval(), model_id


def sam_id(model_type: str, checkpoint: str | Path | None = None) -> str:
    """``sam-<type>-<weights tag>``: the md5 prefix of an official file, else a hash of the file."""
    if model_type == "tiny":
        return f"sam-tiny-seed{TINY_SEED}"
    if model_type not in MODEL_TYPES:
        raise UsageError(f"unknown SAM model {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    prefix = "" if model_type in SAM2_MODELS else "sam-"
    return f"{prefix}{model_type}-{_weights_tag(model_type, resolve_checkpoint(model_type, checkpoint))}"


def random_sam(model_type: str, seed: int = 0) -> Sam:
    """An official-size SAM with seeded random weights: valid for timing, not for masks."""
    torch.manual_seed(seed)
    if model_type == "vit_t":
        from al_loop.models.tinyvit import build_sam_vit_t

        return build_sam_vit_t(None)
    return sam_model_registry[model_type](checkpoint=None).eval()


def _weights_tag(model_type: str, path: Path) -> str:
    official = CHECKPOINTS.get(model_type)
    if official and path.name == official.filename:
        return official.tag
    stat = path.stat()
    return _file_tag(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _file_tag(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class PromptMask:
    mask: np.ndarray  # HxW bool, the tile's original size
    score: float  # SAM's predicted IoU


class PromptSegmenter:
    """Box and point prompts -> masks, from a cached image embedding (no encoder pass)."""

    def __init__(self, sam: Sam, model_id: str | None = None, runtime: str | None = "torch"):
        """``runtime`` None: :func:`~al_loop.models.runtimes.default_prompt_runtime`."""
        if runtime is None:
            from al_loop.models.runtimes import default_prompt_runtime

            runtime = default_prompt_runtime()
        from al_loop.models.sam2 import Sam2Image

        self.sam2 = sam if isinstance(sam, Sam2Image) else None  # SAM 2.1 takes Sam2Features, not an embedding
        if self.sam2 is not None:
            self.predictor = self.decoder = None
            return
        self.predictor = SamPredictor(sam)
        self.decoder = None  # torch: SamPredictor itself; else segment-anything's ONNX export on the runtime
        if runtime != "torch":
            from al_loop.models.runtimes import CompiledPromptDecoder, Conversion, check_runtime

            check_runtime(runtime, "fp32")
            conversion = Conversion(runtime, model_id or "sam", "fp32", sam.image_encoder.img_size, part="prompt")
            self.decoder = CompiledPromptDecoder(sam, conversion)

    def _set_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        p = self.predictor
        p.reset_image()
        p.original_size = tuple(original_size)
        p.input_size = p.transform.get_preprocess_shape(original_size[0], original_size[1], p.model.image_encoder.img_size)
        p.features = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None]
        p.is_image_set = True

    @torch.inference_mode()
    def segment(
        self,
        embedding: np.ndarray,
        original_size: tuple[int, int],
        box: tuple[float, float, float, float] | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        clip: bool = True,
    ) -> PromptMask:
        """The mask for an expert's prompt: a box ``(x0, y0, x1, y1)`` in pixels, points
        ``(N, 2)`` as ``(x, y)`` with labels 1 (pit) / 0 (not pit), or both.

        With a box, SAM's answer is clipped to it: the expert's box bounds the pit, and
        what SAM paints beyond it is a neighbour or a shadow. The Label Studio backend, the
        loop (boxes drawn without waiting for the mask) and the SAM oracle all get their
        masks here. ``clip=False`` gives SAM's own answer, as ``SamPredictor`` does."""
        if box is None and points is None:
            raise ValueError("a prompt needs a box, points, or both")
        # One point alone is ambiguous (pit floor? whole pit?): let SAM propose three
        # masks and keep the one it rates best, as its authors recommend.
        multimask = box is None and points is not None and len(points) == 1
        if self.sam2 is not None:  # ``embedding`` holds SAM 2.1's three maps
            masks, scores = self.sam2.predict(embedding, tuple(original_size), None if box is None else np.asarray(box),
                                              points, point_labels, multimask)
        else:
            self._set_embedding(embedding, original_size)
            masks, scores = self._predict(embedding, original_size, box, points, point_labels, multimask)
        best = int(np.argmax(scores))
        mask = masks[best].astype(bool)
        if box is not None and clip:
            mask = clip_to_box(mask, tuple(box))
        return PromptMask(mask=mask, score=float(scores[best]))

    def _predict(self, embedding, original_size, box, points, point_labels, multimask: bool):
        coords = None if points is None else np.asarray(points, dtype=np.float32)
        boxes = None if box is None else np.asarray(box, dtype=np.float32)
        if self.decoder is None:
            masks, scores, _ = self.predictor.predict(
                point_coords=coords, point_labels=None if points is None else np.asarray(point_labels, dtype=np.int64),
                box=boxes, multimask_output=multimask,
            )
            return masks, scores
        transform = self.predictor.transform  # prompts into SAM's frame, as SamPredictor.predict does
        return self.decoder.predict(
            embedding, tuple(original_size),
            None if coords is None else transform.apply_coords(coords, original_size), point_labels,
            None if boxes is None else transform.apply_boxes(boxes, original_size), multimask,
        )

    def box_masks(self, embedding: np.ndarray, original_size: tuple[int, int], boxes) -> list[PromptMask]:
        """One clipped mask per box ``(x0, y0, x1, y1)``, sharing one embedding."""
        return [self.segment(embedding, original_size, box=tuple(b)) for b in np.asarray(boxes, dtype=np.float32).reshape(-1, 4)]
