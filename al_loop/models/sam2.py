"""SAM 2.1's single-image path: image features for the cache, and box/point prompts to masks.

SAM 2 (Ravi et al. 2024, github.com/facebookresearch/sam2, Apache-2.0) is a video model; on one
image it behaves as on the first frame of a video with nothing in memory, which is all this
project needs. This module is our own code for that path, written from the published model:

* the image encoder is al_loop.models.hiera (Hiera trunk + FPN neck);
* the prompt encoder and the two-way transformer are segment_anything's (SAM 1), which SAM 2
  kept unchanged in everything that reaches the numbers (see ``_two_way_transformer`` and
  ``sparse_prompt`` for the two places where only the packaging differs);
* the mask decoder is SAM 1's with three additions, written here: an object-score token that
  takes part in the attention, skip connections from the stride-4 and stride-8 encoder maps
  into the upsampling, and the "dynamic multimask" fallback for single-mask requests.

Module and parameter names are Meta's, because they are the keys of the official
``sam2.1_hiera_{tiny,small,base_plus,large}.pt`` checkpoints, which load strictly once the
memory/tracking parts (video only) are left out; ``build_sam2`` checks that exactly those are.

What SAM 2's ``SAM2ImagePredictor`` does and this reproduces (tests/test_sam2.py compares them):

* input: a plain (not aspect-preserving) bilinear resize to 1024x1024 with antialiasing, then
  ImageNet mean/std; prompt coordinates are scaled by 1024/W and 1024/H separately;
* the cached embedding is the stride-16 neck map *plus* the learned ``no_mem_embed`` (how SAM 2
  marks "no memory"), and the stride-4/8 maps are cached after the decoder's 1x1 convolutions
  ``conv_s0``/``conv_s1`` (32 and 64 channels), so a prompt costs only the decoder;
* low-resolution logits (256x256) are resized bilinearly to the original size, threshold 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from segment_anything.modeling import PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from al_loop.errors import UsageError
from al_loop.models.hiera import HIERA_CONFIGS, NECK_CHANNELS, ImageEncoder

SAM2_VARIANTS: tuple[str, ...] = ("hiera_t", "hiera_s", "hiera_b+", "hiera_l")
IMAGE_SIZE = 1024
GRID = IMAGE_SIZE // 16  # the embedding is 256 x 64 x 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_THRESHOLD = 0.0
NUM_MULTIMASK = 3

# Checkpoint entries of SAM2Base that only the video path (memory attention, memory encoder,
# object pointers) uses. A name ending in "." is a module prefix, the others are parameters.
MEMORY_KEYS = (
    "memory_attention.",
    "memory_encoder.",
    "mask_downsample.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_embed_spatial",
    "no_obj_ptr",
)

# build_sam2 turns these on for every SAM 2 model: when one mask is asked for and the
# single-mask output is unstable, answer with the best of the three multimask outputs.
STABILITY_DELTA = 0.05
STABILITY_THRESH = 0.98


@dataclass(frozen=True)
class Sam2Features:
    """What the cache keeps for one tile (16 MiB in float32)."""

    embedding: np.ndarray  # (256, 64, 64) float32, image embedding + no_mem_embed
    high_res_0: np.ndarray  # (32, 256, 256) float32, after conv_s0
    high_res_1: np.ndarray  # (64, 128, 128) float32, after conv_s1


def _two_way_transformer() -> TwoWayTransformer:
    """segment_anything's two-way transformer with SAM 2's dimensions and checkpoint keys.

    SAM 2's copy computes the same thing (its attention calls scaled_dot_product_attention where
    SAM 1 writes out softmax(QK^T/sqrt(d))V: equal to float rounding), but stores each block's
    Linear-ReLU-Linear as ``mlp.layers.{0,1}`` where SAM 1's MLPBlock has ``mlp.lin1``/``lin2``.
    segment_anything's own MLP is exactly Linear-ReLU-Linear under the ``layers`` names, so it
    replaces the MLPBlock and the official keys load as they are.
    """
    transformer = TwoWayTransformer(depth=2, embedding_dim=NECK_CHANNELS, mlp_dim=2048, num_heads=8)
    for block in transformer.layers:
        block.mlp = MLP(NECK_CHANNELS, 2048, NECK_CHANNELS, 2)
    return transformer


def _prompt_encoder() -> PromptEncoder:
    """segment_anything's prompt encoder: SAM 2 uses the same one, with the same keys."""
    return PromptEncoder(
        embed_dim=NECK_CHANNELS,
        image_embedding_size=(GRID, GRID),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )


class MaskDecoder(nn.Module):
    """SAM 1's mask decoder plus SAM 2's object-score token and high-resolution skips.

    Token order into the transformer: object score, IoU, 4 mask tokens (single + 3 multimask),
    then the prompt's sparse embeddings.
    """

    def __init__(self, dim: int = NECK_CHANNELS):
        super().__init__()
        self.transformer = _two_way_transformer()
        self.iou_token = nn.Embedding(1, dim)
        self.num_mask_tokens = NUM_MULTIMASK + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        # the object-score token only feeds pred_obj_score_head (is the object in this video
        # frame at all?), which a single image never reads, but it attends with the other tokens
        # and so shapes every mask
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)  # stride-4 map -> 32 channels
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)  # stride-8 map -> 64 channels
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)  # kept for the checkpoint; unused on one image

    def forward(
        self,
        embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """embedding, dense, image_pe (1,256,64,64); sparse (1,N,256); high_res (1,32,256,256) and
        (1,64,128,128) -> logits (1,K,256,256) and predicted IoU (1,K); K = 3 if multimask else 1."""
        logits, iou = self.all_masks(embedding, image_pe, sparse, dense, high_res)
        if multimask:
            return logits[:, 1:], iou[:, 1:]
        return self.single_or_best(logits, iou)

    def all_masks(
        self,
        embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 4 masks (1,4,256,256) and their predicted IoU (1,4): single-mask output first."""
        tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        b, c, h, w = embedding.shape
        hs, src = self.transformer(embedding + dense, image_pe, tokens)
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self._upscale(src, high_res)  # (1,32,256,256)
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        logits = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return logits, self.iou_prediction_head(hs[:, 1])

    def _upscale(self, src: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Two 2x transposed convolutions, each followed by adding the encoder map of its size."""
        up1, norm, act1, up2, act2 = self.output_upscaling
        s0, s1 = high_res
        x = act1(norm(up1(src) + s1))
        return act2(up2(x) + s0)

    def single_or_best(self, logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The single-mask output where it is stable (its area hardly moves when the threshold
        moves by +-STABILITY_DELTA), else the multimask output with the highest predicted IoU."""
        best = iou[:, 1:].argmax(dim=-1)
        rows = torch.arange(iou.shape[0], device=iou.device)
        best_logits = logits[:, 1:][rows, best].unsqueeze(1)
        best_iou = iou[:, 1:][rows, best].unsqueeze(1)
        single_logits, single_iou = logits[:, :1], iou[:, :1]
        stable = stability(single_logits) >= STABILITY_THRESH  # (B,1)
        chosen = torch.where(stable[..., None, None], single_logits, best_logits)
        return chosen, torch.where(stable, single_iou, best_iou)


def stability(logits: torch.Tensor) -> torch.Tensor:
    """(B,K,H,W) -> (B,K): area above +delta over area above -delta (1 where both are empty)."""
    flat = logits.flatten(-2)
    inner = (flat > STABILITY_DELTA).sum(-1).float()
    outer = (flat > -STABILITY_DELTA).sum(-1).float()
    return torch.where(outer > 0, inner / outer, 1.0)


def sparse_prompt(
    encoder: PromptEncoder, box: torch.Tensor | None, points: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Box (1,4) and points (1,N,2), in 1024 px input coordinates, -> sparse embeddings (1,T,256).

    SAM 2 gives its prompt encoder the box as two extra points labelled 2 and 3 (its copy of the
    encoder learnt those labels), put first, and no box; so the encoder always appends its
    "not a point" padding token. SAM 1's encoder embeds a box's corners with the very same
    embeddings (position + point_embeddings[2] / [3]) but pads only when there is no box. The
    tokens are therefore built here in SAM 2's order and number: box corners, points, padding.
    """
    tokens = []
    if box is not None:
        tokens.append(encoder._embed_boxes(box))
    tokens.append(encoder._embed_points(points, labels, pad=True))
    return torch.cat(tokens, dim=1)


class Sam2Image(nn.Module):
    """SAM 2.1 for single images: ``features`` for the cache, ``predict`` for prompts."""

    image_size: int = IMAGE_SIZE

    def __init__(self, variant: str):
        super().__init__()
        if variant not in SAM2_VARIANTS:
            raise UsageError(f"unknown SAM 2.1 variant {variant!r}; choose one of {', '.join(SAM2_VARIANTS)}")
        self.variant = variant
        self.image_encoder = ImageEncoder(HIERA_CONFIGS[variant])
        self.sam_prompt_encoder = _prompt_encoder()
        self.sam_mask_decoder = MaskDecoder()
        # learned "no memory" vector added to every position of the stride-16 map (1,1,256)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, NECK_CHANNELS))

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 -> (1,3,1024,1024) float32: plain bilinear resize (antialiased), ImageNet mean/std."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise UsageError(f"SAM 2 takes an HxWx3 uint8 RGB image, got a {got}")
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255)
        size = [self.image_size, self.image_size]
        x = TF.resize(x, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD)).unsqueeze(0)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1,3,1024,1024) -> embedding (1,256,64,64), high_res_0 (1,32,256,256), high_res_1 (1,64,128,128).

        One plain forward (no Python-side state), so that it can be exported as a graph. Any
        input side that is a multiple of 32 works; the model was trained at 1024.
        """
        s4, s8, s16 = self.image_encoder(x)
        embedding = s16 + self.no_mem_embed.view(1, -1, 1, 1)
        return embedding, self.sam_mask_decoder.conv_s0(s4), self.sam_mask_decoder.conv_s1(s8)

    def features(self, rgb: np.ndarray) -> Sam2Features:
        """Preprocess and encode one image (inference mode) into what the cache keeps."""
        with torch.inference_mode():
            maps = self.encode(self.preprocess(rgb).to(self.no_mem_embed.device))
        embedding, high_res_0, high_res_1 = (m[0].float().cpu().numpy() for m in maps)
        return Sam2Features(embedding=embedding, high_res_0=high_res_0, high_res_1=high_res_1)

    def predict(
        self,
        features: Sam2Features,
        original_size: tuple[int, int],
        box: np.ndarray | tuple[float, float, float, float] | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        multimask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks (K,H,W) bool at ``original_size`` = (H,W), and their predicted IoU (K,) float32.

        ``box`` is (x0,y0,x1,y1) and ``points`` (N,2) as (x,y), in original pixels; labels are 1
        (object) or 0 (background). K = 3 with ``multimask``, else 1.
        """
        logits, scores = self._low_res(features, original_size, box, points, point_labels, multimask)
        with torch.inference_mode():
            full = F.interpolate(logits[None], size=tuple(original_size), mode="bilinear", align_corners=False)[0]
        return (full > MASK_THRESHOLD).numpy(), scores.numpy()

    def _low_res(
        self,
        features: Sam2Features,
        original_size: tuple[int, int],
        box: np.ndarray | tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unclamped low-resolution logits (K,256,256) and predicted IoU (K,), on the CPU."""
        with torch.inference_mode():
            inputs = self._decoder_inputs(features, original_size, box, points, point_labels)
            logits, iou = self.sam_mask_decoder(*inputs, multimask=multimask)
        return logits[0].float().cpu(), iou[0].float().cpu()

    def _decoder_inputs(
        self,
        features: Sam2Features,
        original_size: tuple[int, int],
        box: np.ndarray | tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The mask decoder's inputs for one prompt: embedding, image_pe, sparse, dense, high_res."""
        device = self.no_mem_embed.device
        box_t, points_t, labels_t = (
            None if t is None else t.to(device) for t in self._prompt_tensors(original_size, box, points, point_labels)
        )
        maps = (features.embedding, features.high_res_0, features.high_res_1)
        embedding, s0, s1 = (torch.from_numpy(np.asarray(m, dtype=np.float32))[None].to(device) for m in maps)
        encoder = self.sam_prompt_encoder
        sparse = sparse_prompt(encoder, box_t, points_t, labels_t)
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, GRID, GRID)
        return embedding, encoder.get_dense_pe(), sparse, dense, (s0, s1)

    def _prompt_tensors(
        self,
        original_size: tuple[int, int],
        box: np.ndarray | tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        point_labels: np.ndarray | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Prompts in original pixels -> box (1,4), points (1,N,2), labels (1,N) in input pixels."""
        if box is None and points is None:
            raise UsageError("a SAM 2 prompt needs a box, points, or both")
        if (points is None) != (point_labels is None):
            raise UsageError("points and point_labels go together: one label (1 object, 0 background) per point")
        box_t = None
        if box is not None:
            box_t = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(-1, 2, 2)
            if box_t.shape[0] != 1:
                raise UsageError(f"one box (x0, y0, x1, y1) per prompt, got {tuple(np.shape(box))}")
            box_t = self._to_input(box_t, original_size).reshape(1, 4)
        if points is None:
            return box_t, torch.zeros((1, 0, 2)), torch.zeros((1, 0), dtype=torch.int)
        points_t = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 2)
        labels_t = torch.as_tensor(np.asarray(point_labels).astype(np.int32)).reshape(-1)
        if labels_t.shape[0] != points_t.shape[0]:
            raise UsageError(f"{points_t.shape[0]} points but {labels_t.shape[0]} point labels")
        return box_t, self._to_input(points_t, original_size)[None], labels_t[None]

    def _to_input(self, xy: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """(...,2) (x,y) in original pixels -> input pixels: x * 1024/W, y * 1024/H (plain resize)."""
        h, w = original_size
        xy = xy.clone()
        xy[..., 0] = xy[..., 0] / w
        xy[..., 1] = xy[..., 1] / h
        return xy * self.image_size


def build_sam2(variant: str, checkpoint: str | Path | None = None, seed: int = 0) -> Sam2Image:
    """SAM 2.1 ``variant`` in eval mode on the CPU.

    ``checkpoint`` None: seeded random weights (timing and tests; meaningless masks). Otherwise
    an official ``sam2.1_hiera_*.pt`` (``{"model": state_dict}``): the image-path entries are
    loaded strictly, and everything else in it must be a memory/tracking entry (MEMORY_KEYS).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2Image(variant)
        if checkpoint is None:
            _randomise_zero_initialised(model)
    if checkpoint is not None:
        state = _read_checkpoint(Path(checkpoint))
        model.load_state_dict(_image_path_state(state, model, Path(checkpoint)), strict=True)
    return model.eval()


def _randomise_zero_initialised(model: Sam2Image) -> None:
    """Random weights that exercise every parameter: those that start at zero (position
    embeddings, no_mem_embed) get small values, as SAM 2's own initialisation gives them."""
    trunk = model.image_encoder.trunk
    for parameter in (trunk.pos_embed, trunk.pos_embed_window, model.no_mem_embed):
        nn.init.trunc_normal_(parameter, std=0.02)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UsageError(f"{path}: no such SAM 2.1 checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle with code in it, not a torch file at all
        raise UsageError(f"{path}: not a readable SAM 2.1 checkpoint ({type(exc).__name__}: {exc})") from None
    state = loaded.get("model") if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(
            f"{path}: not in the official SAM 2.1 checkpoint format, a dict whose 'model' entry is the state dict"
        )
    return state


def _image_path_state(state: dict[str, torch.Tensor], model: Sam2Image, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's image-path entries; raises UsageError naming what does not fit."""
    expected = model.state_dict()
    wanted = {k: v for k, v in state.items() if k in expected}
    unexpected = sorted(k for k in state if k not in expected and not k.startswith(MEMORY_KEYS))
    missing = sorted(k for k in expected if k not in state)
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in wanted.items()
        if v.shape != expected[k].shape
    ]
    problems = []
    for what, names in (("unexpected keys", unexpected), ("missing keys", missing), ("wrong shapes", wrong)):
        if names:
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
            problems.append(f"{what}: {shown}")
    if problems:
        raise UsageError(
            f"{path}: does not fit SAM 2.1 {model.variant} (a checkpoint of another size?): " + "; ".join(problems)
        )
    return wanted
