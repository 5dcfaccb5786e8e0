"""MobileSAM ``vit_t``: our TinyViT (al_loop.models.tinyvit) inside segment_anything's Sam.

The reference is upstream MobileSAM's own code, through the PyPI packaging mirror of it
(``mobilesam-mirror``, import name ``mobile_sam``, needs ``timm``): test-only, the product
never imports it. Without it, the comparison tests skip and the rest still run.

The released ``mobile_sam.pt`` cannot be downloaded here, so the checkpoints are seeded random
weights saved in the official format; every float tensor is perturbed, BatchNorm running
statistics and attention biases included, so none of them can be ignored unnoticed. One
1024 px encode takes about 7 s on a 2-core CPU: the embeddings are made once per module.
"""
from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from al_loop.errors import WeightsError
from al_loop.models import tinyvit
from al_loop.models.tinyvit import (
    VIT_T_CHANNELS,
    VIT_T_GRID,
    Attention,
    TinyViT,
    build_sam_vit_t,
)

BOX = np.array([300, 260, 640, 560], dtype=np.float32)  # x0, y0, x1, y1 in image pixels
# A renamed key: its old name is missing, its new name unexpected; a strict load names both.
RENAMED = "image_encoder.layers.2.blocks.3.attn.attention_biases"


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every float tensor moved off its initial value (seeded); running variances stay positive."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.dtype.is_floating_point:
            noise = torch.randn(value.shape, generator=g)
            if key.endswith("running_var"):
                value = 0.5 + torch.rand(value.shape, generator=g)
            elif key.endswith("attention_biases"):
                value = value + noise  # bias scale of a trained TinyViT: O(1)
            else:
                value = value + 0.05 * noise
        out[key] = value.clone()
    return out


def texture(height: int = 880, width: int = 1024, seed: int = 0) -> np.ndarray:
    """A (H,W,3) uint8 image: smooth random texture plus a dark round pit, not 1024 high, so
    SamPredictor resizes nothing but pads the bottom."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 32 + 1, width // 32 + 1, 3))
    image = np.kron(coarse, np.ones((32, 32, 1)))[:height, :width] * 120 + rng.random((height, width, 3)) * 60
    yy, xx = np.mgrid[:height, :width]
    image[(yy - 410) ** 2 + (xx - 470) ** 2 < 120**2] *= 0.3
    return image.clip(0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def _import_mobile_sam():
    mobile_sam = pytest.importorskip(
        "mobile_sam", reason="upstream MobileSAM reference: pip install mobilesam-mirror==1.0.0 timm (tests only)"
    )
    return mobile_sam


@pytest.fixture(scope="module")
def mobile_sam():
    with warnings.catch_warnings():  # timm's deprecated import paths and registry overwrites
        warnings.simplefilter("ignore")
        return _import_mobile_sam()


@pytest.fixture(scope="module")
def official_checkpoint(mobile_sam, tmp_path_factory) -> Path:
    """Upstream's own vit_t state dict, seeded random weights, saved as mobile_sam.pt is."""
    torch.manual_seed(0)
    state = perturbed(mobile_sam.sam_model_registry["vit_t"]().state_dict(), seed=1)
    path = tmp_path_factory.mktemp("mobilesam") / "mobile_sam.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def own_state() -> dict[str, torch.Tensor]:
    """The same format from our builder (no upstream needed)."""
    torch.manual_seed(0)
    return perturbed(build_sam_vit_t().state_dict(), seed=2)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return texture()


@pytest.fixture(scope="module")
def ours(official_checkpoint, image) -> SamPredictor:
    predictor = SamPredictor(build_sam_vit_t(official_checkpoint))
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module")
def upstream(mobile_sam, official_checkpoint, image):
    model = mobile_sam.sam_model_registry["vit_t"](checkpoint=str(official_checkpoint))
    model.eval()  # again, after loading: upstream's builder cached the attention biases before it
    predictor = mobile_sam.SamPredictor(model)
    predictor.set_image(image)
    return predictor


def test_official_format_checkpoint_loads_strictly_and_embeds_as_upstream(official_checkpoint, ours, upstream, mobile_sam):
    state = torch.load(official_checkpoint, map_location="cpu", weights_only=True)
    assert sum(k.startswith("image_encoder.") for k in state) == 302
    assert {"image_encoder.norm_head.weight", "image_encoder.head.bias", "image_encoder.neck.0.weight"} <= state.keys()
    # the same file loads strictly into both (build_sam_vit_t loaded it strictly already)
    assert not mobile_sam.sam_model_registry["vit_t"]().load_state_dict(state, strict=True).missing_keys
    assert isinstance(ours.model.image_encoder, TinyViT)
    assert ours.features.shape == upstream.features.shape == (1, VIT_T_CHANNELS, VIT_T_GRID, VIT_T_GRID)
    similarity = cosine(ours.features, upstream.features)
    print(f"\nembedding cosine ours vs upstream: {similarity:.9f}, "
          f"max |diff| {(ours.features - upstream.features).abs().max().item():.2e}")
    assert similarity >= 0.9999


def test_box_mask_matches_upstream(ours, upstream):
    mine, my_scores, my_logits = ours.predict(box=BOX, multimask_output=False)
    theirs, their_scores, their_logits = upstream.predict(box=BOX, multimask_output=False)
    assert mine.shape == theirs.shape == (1, *ours.original_size)
    # Random weights paint most of the image, but with many logits near the threshold (0), so
    # the IoU still tells; the logits themselves are compared too.
    assert 0.05 < theirs.mean() < 0.97
    assert np.abs(my_logits - their_logits).max() < 1e-3 * np.abs(their_logits).max()
    overlap = iou(mine[0], theirs[0])
    print(f"\nbox mask IoU ours vs upstream: {overlap:.6f} ({int(theirs.sum())} px)")
    assert overlap >= 0.99
    assert my_scores == pytest.approx(their_scores, abs=1e-3)


@pytest.mark.parametrize("change", ["missing", "renamed"])
def test_a_checkpoint_with_a_wrong_key_is_refused_naming_it(own_state, tmp_path, change):
    state = dict(own_state)
    value = state.pop(RENAMED)
    if change == "renamed":
        state[RENAMED.replace("attention_biases", "attention_bias")] = value
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"Missing key\(s\)") as info:
        build_sam_vit_t(path)
    assert RENAMED in str(info.value) and str(path) in str(info.value)
    if change == "renamed":
        assert "Unexpected key(s)" in str(info.value) and RENAMED.replace("attention_biases", "attention_bias") in str(info.value)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(WeightsError, match="cannot read MobileSAM checkpoint"):
        build_sam_vit_t(path)


def _reference_attention(attn: Attention, x: torch.Tensor, biases: torch.Tensor, window: int) -> torch.Tensor:
    """Windowed attention written out plainly, with the bias table indexed as TinyViT numbers
    offsets: in the order first met while scanning all token pairs row-major."""
    points = [(i, j) for i in range(window) for j in range(window)]
    numbers: dict[tuple[int, int], int] = {}
    idx = torch.tensor([[numbers.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(numbers)) for q in points]
                        for p in points])
    b, n, dim = x.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(attn.norm(x)).view(b, n, heads, -1).split(dim // heads, dim=3)
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
    weights = (q @ k.transpose(-2, -1) * (dim // heads) ** -0.5 + biases[:, idx]).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, dim))


@torch.inference_mode()
def test_attention_uses_the_loaded_biases_even_when_eval_came_first(own_state, tmp_path):
    """Upstream's bug: eval() caches the bias table, its builder calls eval() before loading,
    so the loaded biases were never used. Both orders must use the loaded ones here."""
    path = tmp_path / "mobile_sam.pt"
    torch.save(own_state, path)
    loaded_then_eval = build_sam_vit_t(path)
    eval_then_loaded = build_sam_vit_t(None)  # already in eval mode
    eval_then_loaded.load_state_dict(own_state, strict=True)
    key = "image_encoder.layers.2.blocks.1.attn"
    window = 14
    biases = own_state[f"{key}.attention_biases"]
    assert biases.abs().max() > 0.5
    x = torch.randn(3, window * window, 160, generator=torch.Generator().manual_seed(3))
    expected = _reference_attention(loaded_then_eval.get_submodule(key), x, biases, window)
    with_init_biases = _reference_attention(loaded_then_eval.get_submodule(key), x, torch.zeros_like(biases), window)
    for model in (loaded_then_eval, eval_then_loaded):
        assert not model.training
        got = model.get_submodule(key)(x)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert (got - with_init_biases).abs().max() > 1e-2


def test_upstream_builder_alone_keeps_the_init_biases_and_ours_does_not(mobile_sam, official_checkpoint, ours, image):
    """The same file through upstream's builder, without the extra eval(): a different embedding
    (what SamPredictor users of upstream get); ours matched upstream-after-eval() above."""
    stale = mobile_sam.SamPredictor(mobile_sam.sam_model_registry["vit_t"](checkpoint=str(official_checkpoint)))
    stale.set_image(image)
    similarity = cosine(stale.features, ours.features)
    print(f"\nembedding cosine ours vs upstream without re-eval: {similarity:.6f}")
    assert similarity < 0.999


@torch.inference_mode()
def test_encoder_shape_at_a_smaller_size_and_the_input_size_is_checked():
    encoder = TinyViT(img_size=256).eval()
    assert encoder(torch.zeros(1, 3, 256, 256)).shape == (1, VIT_T_CHANNELS, 16, 16)
    with pytest.raises(ValueError, match="built for 256 px"):
        encoder(torch.zeros(1, 3, 512, 512))
    assert build_sam_vit_t().image_encoder.grid == VIT_T_GRID


def test_the_product_imports_neither_timm_nor_upstream():
    tree = ast.parse(Path(tinyvit.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in imported} <= {"__future__", "pathlib", "torch", "segment_anything", "al_loop"}


@torch.inference_mode()
def test_the_released_checkpoint_if_present():
    from al_loop.models.weights import CHECKPOINTS, weights_dir

    path = weights_dir() / CHECKPOINTS["vit_t"].filename
    if not path.is_file():
        pytest.skip(f"the released MobileSAM weights are not at {path} (al-loop weights download vit_t)")
    predictor = SamPredictor(build_sam_vit_t(path))
    predictor.set_image(texture())
    assert predictor.features.shape == (1, VIT_T_CHANNELS, VIT_T_GRID, VIT_T_GRID)
    assert torch.isfinite(predictor.features).all()
    masks, scores, _ = predictor.predict(box=BOX, multimask_output=False)
    assert masks.shape == (1, 880, 1024) and 0 <= scores[0] <= 1.5
