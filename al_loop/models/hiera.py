"""Hiera and its FPN neck: the image encoder of SAM 2.1, for one image at a time.

Hiera (Ryali et al. 2023, arXiv:2306.00989) is a plain ViT made hierarchical by pooling the
attention *queries* 2x2 at each of its three stage changes, so the token map halves in size and
the channels double at each stage, with no convolutions after the patch embedding. SAM 2 (Ravi
et al. 2024) uses it with windowed attention in most blocks and global attention in a few, and an
FPN neck that turns the stages into 256-channel maps at strides 4, 8 and 16. This is the
project's own implementation of that published architecture; only module and parameter names
follow Meta's, because they are the keys of the official ``sam2.1_hiera_*.pt`` checkpoints,
which must load with ``strict=True``.

Shapes for SAM 2's 1024 px input, hiera_t (``e`` = 96 channels; ``B`` images)::

    image (B,3,1024,1024) -> patch_embed, 7x7 conv stride 4  -> (B,256,256,e)   channels last
      stage 0   1 block,  windows of 8                        -> (B,256,256,e)
      stage 1   2 blocks, the first pools q 2x2, windows of 4 -> (B,128,128,2e)
      stage 2   7 blocks, windows of 14 (global in 3 of them) -> (B,64,64,4e)
      stage 3   2 blocks, windows of 7                        -> (B,32,32,8e)
    neck: a 1x1 conv per stage to 256 channels; the stride-32 map is added, upsampled, to the
    stride-16 one and then dropped -> [(B,256,256,256), (B,256,128,128), (B,256,64,64)]

What is left out, on purpose: the neck's sine position encoding (it only feeds SAM 2's memory
attention, the video path; the single-image prompt path never reads it), stochastic depth and
layer-wise learning-rate tags (inference only), and loading trunk weights on their own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NECK_CHANNELS = 256  # d_model of SAM 2's neck and of its SAM heads
_LN_EPS = 1e-6
_MLP_RATIO = 4


@dataclass(frozen=True)
class HieraConfig:
    """One SAM 2.1 trunk size; the values are those of Meta's ``sam2.1_hiera_*.yaml``."""

    embed_dim: int  # channels of stage 0; doubled at each stage change
    num_heads: int  # heads of stage 0; doubled at each stage change
    stages: tuple[int, ...]  # blocks per stage
    global_blocks: tuple[int, ...]  # blocks (counted over all stages) that attend over the whole map
    pos_embed_size: tuple[int, int]  # the background position embedding, resized to the token map
    windows: tuple[int, ...] = (8, 4, 14, 7)  # attention window per stage

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels at the end of each stage, from the finest map to the coarsest."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.stages)))


HIERA_CONFIGS: dict[str, HieraConfig] = {
    "hiera_t": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7)),
    "hiera_s": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7)),
    "hiera_b+": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14)),
    "hiera_l": HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), windows=(8, 4, 16, 8)),
}


def split_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B,H,W,C) -> (B*n,size,size,C) windows, zero-padding H and W up to multiples of ``size``;
    also returns the padded (H,W), which ``join_windows`` needs."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def join_windows(windows: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """The inverse of ``split_windows``: (B*n,size,size,C) -> (B,H,W,C), padding cut off."""
    hp, wp = padded
    h, w = hw
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.reshape(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """Max-pool a channels-last map (B,H,W,C) -> (B,H/2,W/2,C): how Hiera downsamples."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """(B,3,H,W) -> (B,H/4,W/4,dim), channels last: one 7x7 convolution with stride 4."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class GeluMlp(nn.Module):
    """Linear - GELU - Linear. Its children are a list named ``layers``, as in the checkpoint
    (segment_anything's MLP has the same keys but is fixed to ReLU, so it cannot serve here)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.act(self.layers[0](x)))


class PooledAttention(nn.Module):
    """Multi-head self-attention over a channels-last map whose queries may be pooled 2x2.

    With pooling, each output position attends from a pooled query to all keys of the input, so
    the map shrinks (the stage change) while every input token still contributes.
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_q: bool):
        super().__init__()
        self.num_heads = num_heads
        self.pool_q = pool_q
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H,W,dim) -> (B,H',W',dim_out), H'=H/2 when queries are pooled."""
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)  # each (B,HW,heads,d)
        if self.pool_q:
            q = pool_2x2(q.reshape(b, h, w, -1))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block on a channels-last map, attending within ``window``-sized
    windows (0: over the whole map). The first block of a stage pools its queries and widens the
    channels; its shortcut is then projected and pooled the same way."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window: int, pool_q: bool):
        super().__init__()
        self.window = window
        self.pool_q = pool_q
        self.widens = dim != dim_out
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = PooledAttention(dim, dim_out, num_heads, pool_q)
        self.norm2 = nn.LayerNorm(dim_out, eps=_LN_EPS)
        self.mlp = GeluMlp(dim_out, dim_out * _MLP_RATIO)
        if self.widens:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,H,W,dim) -> (B,H',W',dim_out)."""
        normed = self.norm1(x)
        shortcut = x
        if self.widens:
            # the widened shortcut is taken from the *normalised* input, as SAM 2 was trained
            shortcut = self.proj(normed)
            if self.pool_q:
                shortcut = pool_2x2(shortcut)
        return self._add_mlp(shortcut + self._attend(normed, shortcut.shape[1:3]))

    def _attend(self, x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Attention within windows (or globally) of the normalised input; out_hw is the output map's size."""
        if self.window == 0:
            return self.attn(x)
        windows, _ = split_windows(x, self.window)
        attended = self.attn(windows)
        # pooled queries shrink each window, so the windows are joined back at the smaller size
        size = self.window // 2 if self.pool_q else self.window
        padded = (out_hw[0] + -out_hw[0] % size, out_hw[1] + -out_hw[1] % size)
        return join_windows(attended, size, padded, out_hw)

    def _add_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: patch embedding, a position embedding, and the blocks of all stages."""

    def __init__(self, config: HieraConfig):
        super().__init__()
        dim, heads = config.embed_dim, config.num_heads
        self.patch_embed = PatchEmbed(dim)
        # a coarse embedding resized to the token map, plus one tiled per stage-0 window
        # ("window position embeddings", Bolya et al. 2023, arXiv:2311.05613)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *config.pos_embed_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, config.windows[0], config.windows[0]))
        stage_of = [s for s, n in enumerate(config.stages) for _ in range(n)]
        self.stage_ends = [i for i in range(len(stage_of)) if i + 1 == len(stage_of) or stage_of[i + 1] != stage_of[i]]
        self.blocks = nn.ModuleList()
        for i, stage in enumerate(stage_of):
            opens_stage = i > 0 and stage != stage_of[i - 1]
            # the block that opens a stage still sees the previous stage's map, so it uses that
            # stage's window size; its pooled output then has the new stage's resolution
            window = 0 if i in config.global_blocks else config.windows[stage_of[i - 1] if opens_stage else stage]
            dim_out, heads = (dim * 2, heads * 2) if opens_stage else (dim, heads)
            self.blocks.append(HieraBlock(dim, dim_out, heads, window, pool_q=opens_stage))
            dim = dim_out

    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1,H,W,C): the background embedding resized bicubically to H x W, plus the window
        embedding repeated over the map (H and W are multiples of the stage-0 window)."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        window = self.pos_embed_window
        pos = pos + window.tile(1, 1, hw[0] // window.shape[2], hw[1] // window.shape[3])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) -> the four stage outputs (B,C_i,H/4/2^i,W/4/2^i), channels first, finest first."""
        x = self.patch_embed(x)
        x = x + self.position_embedding(tuple(x.shape[1:3]))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """Stage outputs -> 256-channel maps at strides 4, 8 and 16.

    A 1x1 convolution per stage (``convs[0]`` for the coarsest); only the stride-16 map gets the
    top-down sum (stride 32, upsampled 2x by nearest neighbour), as in SAM 2's configs, and the
    stride-32 map itself is not returned (SAM 2's ``scalp=1``).
    """

    TOP_DOWN_LEVELS = (2, 3)  # levels (finest = 0) that receive the coarser level's map

    def __init__(self, stage_channels: tuple[int, ...], dim: int = NECK_CHANNELS):
        super().__init__()
        self.convs = nn.ModuleList()
        for channels in reversed(stage_channels):
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(channels, dim, kernel_size=1))
            self.convs.append(lateral)

    def forward(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Four maps, finest first -> three 256-channel maps, finest first."""
        last = len(stages) - 1
        outputs: list[torch.Tensor] = []
        for level in range(last, -1, -1):  # coarsest first, so each level can take the one above
            lateral = self.convs[last - level](stages[level])
            if level in self.TOP_DOWN_LEVELS and outputs:
                lateral = lateral + F.interpolate(outputs[-1], scale_factor=2.0, mode="nearest")
            outputs.append(lateral)
        return outputs[::-1][:-1]


class ImageEncoder(nn.Module):
    """Hiera trunk then FPN neck; the submodule names are the checkpoint's (``image_encoder.*``)."""

    def __init__(self, config: HieraConfig):
        super().__init__()
        self.trunk = Hiera(config)
        self.neck = FpnNeck(config.stage_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) -> [(B,256,H/4,W/4), (B,256,H/8,W/8), (B,256,H/16,W/16)]."""
        return self.neck(self.trunk(x))
