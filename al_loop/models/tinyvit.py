"""MobileSAM's ``vit_t`` image encoder: a TinyViT-5M with SAM's neck, inside segment_anything's ``Sam``.

MobileSAM (Zhang et al. 2023, github.com/ChaoningZhang/MobileSAM) distilled SAM ViT-H's image
encoder into a TinyViT (Wu et al. 2022, microsoft/Cream, MIT licence) and kept SAM's prompt
encoder and mask decoder unchanged. This module is the project's own implementation of that
encoder, written from the published architecture; only the parameter names follow upstream's,
because they must, for the official ``mobile_sam.pt`` to load with ``strict=True``. The prompt
encoder, mask decoder, ``Sam`` wrapper and ``SamPredictor`` are segment_anything's own.

Shapes for the 1024 px input SAM uses (``B`` images)::

    image (B,3,1024,1024) -> patch_embed (B,64,256,256)   two stride-2 3x3 convs
      stage 0  MBConv x2 at 256x256, merge  -> (B,128x128,128) tokens
      stage 1  attention x2, window 7       -> merge -> (B,64x64,160)
      stage 2  attention x6, window 14      -> merge (stride 1) -> (B,64x64,320)
      stage 3  attention x2, window 7
    neck: 1x1 conv 320->256, LayerNorm2d, 3x3 conv, LayerNorm2d -> (B,256,64,64)

Differences from upstream, on purpose:

* upstream caches each attention's bias table (``ab``) when the module is put in eval mode, and
  its builder calls ``.eval()`` *before* loading the checkpoint, so the cache keeps the initial
  (zero) biases until someone calls ``.eval()`` again. Here there is no cache: the table is
  gathered from ``attention_biases`` on every forward (a few hundred kB, nothing next to the
  convolutions), so the biases in use are always the loaded ones, in any order of calls.
* the checkpoint is read with ``map_location="cpu", weights_only=True``;
* no timm, no layer-wise learning-rate tags, no gradient checkpointing: inference only.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from al_loop.errors import WeightsError

VIT_T_IMG_SIZE = 1024
VIT_T_GRID = 64  # the embedding is VIT_T_CHANNELS x VIT_T_GRID x VIT_T_GRID, as SAM's ViTs
VIT_T_CHANNELS = 256

# TinyViT-5M, as MobileSAM configures it.
_EMBED_DIMS = (64, 128, 160, 320)
_DEPTHS = (2, 2, 6, 2)
_NUM_HEADS = (2, 4, 5, 10)  # stages 1-3; stage 0 is convolutional (its entry is unused)
_WINDOWS = (7, 7, 14, 7)
_MLP_RATIO = 4.0
_MBCONV_EXPAND = 4.0
_LOCAL_CONV = 3
_CLASSES = 1000  # ImageNet head of the original TinyViT, kept for the checkpoint's keys only


class ConvBN(nn.Sequential):
    """Bias-free conv then BatchNorm; children ``c`` and ``bn`` as in the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, bn_weight: float = 1.0):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        # bn_weight=0 makes a residual branch start as the identity (used on MBConv's last conv)
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)


class PatchEmbed(nn.Module):
    """(B,3,H,W) -> (B,dim,H/4,W/4): conv(3x3,/2) - GELU - conv(3x3,/2), each with BatchNorm."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        # an nn.Sequential so the keys read seq.0.*, seq.2.* (index 1 is the parameter-free GELU)
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual on images: 1x1 expand, 3x3 depthwise, 1x1 project; GELU after the sum."""

    def __init__(self, dim: int, expand: float):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, bn_weight=0.0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv2(self.act(self.conv1(x))))
        return self.act(x + self.conv3(y))


class PatchMerging(nn.Module):
    """Change width and (usually) halve the resolution; returns tokens (B, H'*W', out_dim).

    Takes an image (B,C,H,W) after the conv stage or tokens (B,H*W,C) after an attention stage.
    MobileSAM's last merge keeps stride 1, so the final map stays 64x64 at 1024 px input."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks on the image, then a merge into tokens."""

    def __init__(self, dim: int, depth: int, expand: float, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm feed-forward: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _offset_index(window: int) -> torch.Tensor:
    """(N,N) index into a bias table, N = window**2: the entry for tokens at (y1,x1), (y2,x2) is
    |y1-y2| * window + |x1-x2|. LeViT-style: one learnt bias per head and absolute offset.

    This is the order in which upstream numbers offsets (first seen while scanning pairs in
    row-major order: the first row, from (0,0), already meets every offset in that order)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with pre-norm and a learnt offset bias.

    (B', N, dim) -> (B', N, dim), N = window**2. The qkv projection is laid out per head as
    [q | k | v] (head-major), so it is split after the heads are separated."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # TinyViT's attn_ratio is 1: values as wide as keys
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        # derived from the window alone, so kept out of the state dict (as upstream)
        self.register_buffer("attention_bias_idxs", _offset_index(window), persistent=False)

    def bias(self) -> torch.Tensor:
        """(heads, N, N) additive attention bias, gathered from the current parameters.

        Not cached in eval mode (upstream does, and its cache goes stale when weights are
        loaded after ``.eval()``)."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias().to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


def _to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B,H,W,C) -> (B*nH*nW, window**2, C), zero-padding bottom/right to whole windows.

    The zero tokens are attended to like real ones (no mask), as in the trained model."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // window, (w + pad_w) // window
    x = x.view(b, nh, window, nw, window, c).transpose(2, 3)
    return x.reshape(b * nh * nw, window * window, c), (nh, nw)


def _from_windows(x: torch.Tensor, grid: tuple[int, int], window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`, cropping the padding: -> (B,H,W,C)."""
    nh, nw = grid
    c = x.shape[-1]
    x = x.view(-1, nh, nw, window, window, c).transpose(2, 3).reshape(-1, nh * window, nw * window, c)
    return x[:, :h, :w]


class TinyViTBlock(nn.Module):
    """Tokens (B,H*W,dim) -> same shape: windowed attention (residual), a 3x3 depthwise conv
    with BatchNorm on the token map (mixes across window borders; no residual), MLP (residual)."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, mlp_ratio: float, local_conv: int):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        windows, grid = _to_windows(x.view(b, h, w, c), self.window)
        x = x + _from_windows(self.attn(windows), grid, self.window, h, w).reshape(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on tokens, then (except the last stage) a merge."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 mlp_ratio: float, local_conv: int, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio, local_conv) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """MobileSAM's image encoder: (B,3,img_size,img_size) normalised pixels -> (B,256,img_size/16,img_size/16).

    ``img_size`` is 1024 for the released weights (64x64 embedding, the grid SAM's prompt
    encoder expects); other multiples of 64 build, for shape checks only."""

    def __init__(self, img_size: int = VIT_T_IMG_SIZE, in_chans: int = 3):
        super().__init__()
        if img_size % 64:
            raise ValueError(f"TinyViT img_size must be a multiple of 64, got {img_size}")
        self.img_size = img_size  # segment_anything's Sam and SamPredictor read this
        self.patch_embed = PatchEmbed(in_chans, _EMBED_DIMS[0])
        side = img_size // 4
        self.layers = nn.ModuleList()
        for i, dim in enumerate(_EMBED_DIMS):
            last = i == len(_EMBED_DIMS) - 1
            downsample = None
            if not last:
                # the merge into the last stage keeps the resolution (MobileSAM's change to TinyViT)
                stride = 1 if i + 1 == len(_EMBED_DIMS) - 1 else 2
                downsample = PatchMerging((side, side), dim, _EMBED_DIMS[i + 1], stride)
            if i == 0:
                layer: nn.Module = ConvLayer(dim, _DEPTHS[i], _MBCONV_EXPAND, downsample)
            else:
                layer = BasicLayer(dim, (side, side), _DEPTHS[i], _NUM_HEADS[i], _WINDOWS[i], _MLP_RATIO,
                                   _LOCAL_CONV, downsample)
            self.layers.append(layer)
            if downsample is not None:
                side = (side - 1) // downsample.conv2.c.stride[0] + 1
        self.grid = side
        # Unused: the ImageNet classifier of the TinyViT MobileSAM started from. The released
        # checkpoint still holds these weights, so they are kept for a strict load.
        self.norm_head = nn.LayerNorm(_EMBED_DIMS[-1])
        self.head = nn.Linear(_EMBED_DIMS[-1], _CLASSES)
        self.apply(_init_weights)  # before the neck: the neck keeps PyTorch's default init, as upstream
        self.neck = nn.Sequential(
            nn.Conv2d(_EMBED_DIMS[-1], VIT_T_CHANNELS, 1, bias=False),
            LayerNorm2d(VIT_T_CHANNELS),
            nn.Conv2d(VIT_T_CHANNELS, VIT_T_CHANNELS, 3, padding=1, bias=False),
            LayerNorm2d(VIT_T_CHANNELS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) -> (B,256,S/16,S/16); S = ``img_size``."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"TinyViT built for {self.img_size} px input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        return self.neck(x)


def _init_weights(m: nn.Module) -> None:
    # TinyViT's initialisation; only matters for checkpoints built without loading weights
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_sam_vit_t(checkpoint: str | Path | None = None) -> Sam:
    """MobileSAM: our TinyViT encoder with segment_anything's PromptEncoder and MaskDecoder, in eval mode.

    The encoder maps a (B,3,1024,1024) normalised image to a (B,256,64,64) embedding, what
    segment_anything's ``SamPredictor`` expects. ``checkpoint``: an official-format state dict
    (``mobile_sam.pt``), loaded strictly on the CPU (``weights_only``); a missing, unexpected or
    misshapen key raises :class:`~al_loop.errors.WeightsError` naming it. None: the architecture
    with its initial weights (for saving checkpoints in tests)."""
    grid = VIT_T_IMG_SIZE // 16
    sam = Sam(
        image_encoder=TinyViT(VIT_T_IMG_SIZE),
        prompt_encoder=PromptEncoder(
            embed_dim=VIT_T_CHANNELS,
            image_embedding_size=(grid, grid),
            input_image_size=(VIT_T_IMG_SIZE, VIT_T_IMG_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=VIT_T_CHANNELS, mlp_dim=2048, num_heads=8),
            transformer_dim=VIT_T_CHANNELS,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated download, an HTML error page, a pickle of code
            raise WeightsError(f"cannot read MobileSAM checkpoint {checkpoint}: {exc}") from exc
        try:
            sam.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{checkpoint} is not a MobileSAM vit_t checkpoint: {exc}") from exc
    # Loading first and switching to eval last is harmless here (no cached biases), and is the
    # order that upstream's caching needs.
    return sam.eval()
