"""SAM 2.1's single-image path (al_loop.models.sam2, al_loop.models.hiera) against Meta's code.

The reference is facebookresearch/sam2 as packaged by Roboflow (``rf-sam-2``, import name
``sam2``, in the test extra; the product never imports it). The official checkpoints cannot be
downloaded here, so each reference model gets seeded random weights, every float tensor moved
off its initial value (so that a LayerNorm, bias or embedding left at its default could not go
unnoticed), and is saved as ``{"model": state_dict}``, the official format, which our
``build_sam2`` must load strictly. Then, on a real HiRISE tile cropped to a non-square shape
(a generated one without ../shared/data/hirise-pits):

* hiera_t: ``features()`` against ``SAM2ImagePredictor.set_image``'s cached maps, and
  ``predict`` against ``SAM2ImagePredictor.predict`` for boxes, points, and both, single- and
  multimask (masks, scores and the low-resolution logits);
* hiera_s, hiera_b+ (and hiera_l, slow): the strict load and ``encode`` against the reference
  backbone on a 128 px input (a 1024 px encode of those takes 10-40 s on a 2-core CPU; at 128
  px the windows of stages 2 and 3 overhang the map and are padded, the case that hiera_t,
  hiera_s and hiera_b+ meet at 1024 px).

Without the reference, those tests skip; the rest (seeded random weights, shapes, the stability
fallback, checkpoints that do not fit and prompt errors) run anyway.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from al_loop.errors import UsageError
from al_loop.models.sam2 import (
    MEMORY_KEYS,
    SAM2_VARIANTS,
    MaskDecoder,
    Sam2Features,
    Sam2Image,
    build_sam2,
    stability,
)

from .conftest import HIRISE

REFERENCE_REASON = "the SAM 2 reference (rf-sam-2, import name sam2) is not installed: pip install -e '.[test]'"
CONFIGS = {
    "hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
TILE_HW = (720, 900)  # non-square, so that SAM 2's plain resize (not SAM 1's pad) is what is tested
FIXED_BOXES = [(40, 60, 420, 400), (600, 500, 880, 700)]  # x0, y0, x1, y1, besides up to two labelled pits
POINTS = np.array([[450.0, 300.0], [120.0, 600.0]])
POINT_LABELS = np.array([1, 0])


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Seeded noise (std 0.02) on every float tensor. One noise vector, as long as the largest
    tensor, is drawn and each tensor takes its leading part: drawing afresh per tensor costs
    seconds for hiera_b+ and hiera_l, and what matters is that no tensor keeps its initial value."""
    g = torch.Generator().manual_seed(seed)
    noise = 0.02 * torch.randn(max(v.numel() for v in state.values()), generator=g)
    return {k: v + noise[: v.numel()].view(v.shape) if v.is_floating_point() else v for k, v in state.items()}


def reference_checkpoint(variant: str, directory: Path, seed: int = 1):
    """The reference model with seeded perturbed weights, and those weights saved officially."""
    pytest.importorskip("sam2", reason=REFERENCE_REASON)
    from sam2.build_sam import build_sam2 as build_reference

    with torch.random.fork_rng(devices=[]):  # seeded, and the session's generator left as it was
        torch.manual_seed(seed)
        reference = build_reference(CONFIGS[variant], ckpt_path=None, device="cpu")
    state = perturbed(reference.state_dict(), seed)
    reference.load_state_dict(state)
    path = directory / f"sam2.1_{variant}.pt"
    torch.save({"model": state}, path)
    return reference.eval(), path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def tile() -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A grey HiRISE tile as RGB, cropped to TILE_HW, with up to two of its labelled pit boxes plus FIXED_BOXES."""
    h, w = TILE_HW
    images = sorted((HIRISE / "train" / "images").glob("*.jpg")) if HIRISE.is_dir() else []
    if images:
        from PIL import Image

        full = np.asarray(Image.open(images[0]).convert("RGB"))
        label = HIRISE / "train" / "labels" / f"{images[0].stem}.txt"
        rows = np.loadtxt(label, ndmin=2) if label.is_file() else np.zeros((0, 5))
        fh, fw = full.shape[:2]
        half_w, half_h = rows[:, 3] / 2, rows[:, 4] / 2  # YOLO rows: class, centre x, centre y, w, h
        corners = np.stack([rows[:, 1] - half_w, rows[:, 2] - half_h, rows[:, 1] + half_w, rows[:, 2] + half_h], 1)
        boxes = [tuple(b) for b in corners * [fw, fh, fw, fh]]
    else:
        from al_loop.data.synthetic import generate_tile

        generated = generate_tile(7, max(h, w))
        full = np.repeat(generated.image[..., None], 3, axis=2)
        boxes = [tuple(b) for b in generated.boxes]
    rgb = full[:h, :w].copy()  # writable, as torch wants it
    inside = [b for b in boxes if b[2] <= w and b[3] <= h]
    return rgb, inside[:2] + FIXED_BOXES


# ---------------------------------------------------------------- against the reference: hiera_t


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tile):
    """(our hiera_t loaded from the reference's checkpoint, its features, a reference predictor
    with the tile set, the reference model, the checkpoint path)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    reference, path = reference_checkpoint("hiera_t", tmp_path_factory.mktemp("sam2-t"))
    ours = build_sam2("hiera_t", path)
    predictor = SAM2ImagePredictor(reference, disable_torch_jit=True)
    predictor.set_image(tile[0])
    return ours, ours.features(tile[0]), predictor, reference, path


def test_official_checkpoint_loads_leaving_out_exactly_the_memory_keys(tiny_pair):
    ours, _, _, reference, _ = tiny_pair
    theirs, mine = reference.state_dict(), ours.state_dict()
    for key, value in mine.items():
        assert torch.equal(value, theirs[key]), key
    left_out = set(theirs) - set(mine)
    assert all(k.startswith(MEMORY_KEYS) for k in left_out)
    # and every memory family named in MEMORY_KEYS is really in the checkpoint (none made up)
    assert {p for p in MEMORY_KEYS if any(k.startswith(p) for k in left_out)} == set(MEMORY_KEYS)


def test_preprocess_is_the_predictors_transform(tile):
    pytest.importorskip("sam2", reason=REFERENCE_REASON)
    from sam2.utils.transforms import SAM2Transforms

    ours = Sam2Image("hiera_t").preprocess(tile[0])
    assert ours.shape == (1, 3, 1024, 1024) and ours.dtype == torch.float32
    for jit in (False, True):  # the predictor scripts its transform unless told not to
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transform = SAM2Transforms(resolution=1024, mask_threshold=0.0, disable_torch_jit=not jit)
        assert torch.equal(ours[0], transform(tile[0]))


def test_features_are_the_predictors_cached_maps(tiny_pair):
    _, features, predictor, _, _ = tiny_pair
    theirs = predictor._features
    pairs = {
        "embedding": (features.embedding, theirs["image_embed"][0]),
        "high_res_0": (features.high_res_0, theirs["high_res_feats"][0][0]),
        "high_res_1": (features.high_res_1, theirs["high_res_feats"][1][0]),
    }
    for name, (mine, reference) in pairs.items():
        reference = reference.numpy()
        assert mine.dtype == np.float32 and mine.shape == reference.shape, name
        assert cosine(mine, reference) >= 0.9999, name
        assert np.abs(mine - reference).max() <= 1e-4 * np.abs(reference).max(), name


def test_box_prompts_give_the_predictors_masks(tiny_pair, tile):
    ours, features, predictor, _, _ = tiny_pair
    rgb, boxes = tile
    hw = rgb.shape[:2]
    assert len(boxes) >= 2
    nonempty, stable = 0, set()
    for box in boxes:
        box = np.array(box, dtype=np.float32)
        masks, scores = ours.predict(features, hw, box=box)
        ref_masks, ref_scores, ref_low = predictor.predict(box=box, multimask_output=False)
        ref_masks = ref_masks > 0
        assert masks.shape == ref_masks.shape == (1, *hw) and masks.dtype == bool
        assert iou(masks[0], ref_masks[0]) >= 0.99, box
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        nonempty += bool(masks.any())
        # the low-resolution logits (what predict resizes), and which branch chose them
        with torch.inference_mode():
            decoder = ours.sam_mask_decoder
            all_logits, all_iou = decoder.all_masks(*ours._decoder_inputs(features, hw, box, None, None))
            low, _ = decoder.single_or_best(all_logits, all_iou)
        np.testing.assert_allclose(low[0].clamp(-32, 32).numpy(), ref_low, atol=1e-3)
        stable.add(bool(stability(all_logits[:, :1]) >= 0.98))
    assert nonempty >= 2, "random weights gave empty masks: pick other boxes"
    # random weights leave the single-mask logits near 0, so these went through the fallback to
    # the best multimask output; the next test takes the other branch
    assert False in stable


def test_a_stable_single_mask_is_the_predictors_too(tiny_pair, tile):
    ours, features, predictor, reference, _ = tiny_pair
    hw = tile[0].shape[:2]
    box = np.array(FIXED_BOXES[0], dtype=np.float32)
    # logits of the single-mask token scaled far from 0 in both models: stable by construction
    scale = 1000.0
    layers = [m.sam_mask_decoder.output_hypernetworks_mlps[0].layers[2] for m in (ours, reference)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
    try:
        with torch.inference_mode():
            all_logits, _ = ours.sam_mask_decoder.all_masks(*ours._decoder_inputs(features, hw, box, None, None))
        assert stability(all_logits[:, :1]).item() >= 0.98
        masks, scores = ours.predict(features, hw, box=box)
        ref_masks, ref_scores, _ = predictor.predict(box=box, multimask_output=False)
    finally:
        with torch.no_grad():
            for layer in layers:
                layer.weight.div_(scale)
                layer.bias.div_(scale)
    assert iou(masks[0], ref_masks[0] > 0) >= 0.99
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_points_multimask_give_the_predictors_three_masks(tiny_pair, tile):
    ours, features, predictor, _, _ = tiny_pair
    hw = tile[0].shape[:2]
    masks, scores = ours.predict(features, hw, points=POINTS, point_labels=POINT_LABELS, multimask=True)
    ref_masks, ref_scores, _ = predictor.predict(point_coords=POINTS, point_labels=POINT_LABELS, multimask_output=True)
    assert masks.shape == (3, *hw) and scores.shape == (3,)
    for i in range(3):
        assert iou(masks[i], ref_masks[i] > 0) >= 0.99, i
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert masks.any(axis=(1, 2)).sum() >= 1


def test_box_and_points_give_the_predictors_mask(tiny_pair, tile):
    ours, features, predictor, _, _ = tiny_pair
    hw = tile[0].shape[:2]
    box = np.array(FIXED_BOXES[0], dtype=np.float32)
    masks, scores = ours.predict(features, hw, box=box, points=POINTS[:1], point_labels=POINT_LABELS[:1])
    ref_masks, ref_scores, _ = predictor.predict(
        box=box, point_coords=POINTS[:1], point_labels=POINT_LABELS[:1], multimask_output=False
    )
    assert iou(masks[0], ref_masks[0] > 0) >= 0.99
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


# ------------------------------------------------- against the reference: the other three sizes


@pytest.mark.parametrize(
    "variant", ["hiera_s", "hiera_b+", pytest.param("hiera_l", marks=pytest.mark.slow)]
)
def test_other_sizes_load_strictly_and_encode_like_the_reference(variant, tmp_path):
    reference, path = reference_checkpoint(variant, tmp_path)
    ours = build_sam2(variant, path)
    path.unlink()  # up to 900 MB
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        embedding, high_res_0, high_res_1 = ours.encode(x)
        # what SAM2ImagePredictor.set_image does after its transform
        backbone = reference.forward_image(x)
        _, flat, _, _ = reference._prepare_backbone_features(backbone)
        ref_embedding = (flat[-1] + reference.no_mem_embed).permute(1, 2, 0).reshape(1, -1, 8, 8)
    fpn = backbone["backbone_fpn"]  # its levels 0 and 1 have been through conv_s0 / conv_s1
    for mine, theirs in ((embedding, ref_embedding), (high_res_0, fpn[0]), (high_res_1, fpn[1])):
        assert mine.shape == theirs.shape
        assert cosine(mine.numpy(), theirs.numpy()) >= 0.9999
        assert (mine - theirs).abs().max() <= 1e-4 * theirs.abs().max()


# ------------------------------------------------------------------- without the reference


@pytest.fixture(scope="module")
def random_tiny() -> Sam2Image:
    return build_sam2("hiera_t", seed=0)


@pytest.fixture(scope="module")
def tiny_state(random_tiny) -> dict[str, torch.Tensor]:
    return random_tiny.state_dict()


def shapes_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same keys and shapes, each tensor one zero broadcast (stride 0): a checkpoint of a few
    kB that the key and shape checks see as the real one."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}


def test_random_weights_are_seeded_and_leave_the_global_generator_alone(random_tiny):
    before = torch.random.get_rng_state()
    again, other = build_sam2("hiera_t", seed=0), build_sam2("hiera_t", seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    mine = random_tiny.state_dict()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in mine.items())
    assert not torch.equal(mine["no_mem_embed"], other.state_dict()["no_mem_embed"])
    assert not random_tiny.training


def test_features_and_predictions_have_the_promised_shapes(random_tiny):
    rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    features = random_tiny.features(rgb)
    assert isinstance(features, Sam2Features)
    assert features.embedding.shape == (256, 64, 64)
    assert features.high_res_0.shape == (32, 256, 256)
    assert features.high_res_1.shape == (64, 128, 128)
    assert all(m.dtype == np.float32 for m in (features.embedding, features.high_res_0, features.high_res_1))
    masks, scores = random_tiny.predict(features, (300, 200), box=(20, 30, 150, 250))
    assert masks.shape == (1, 300, 200) and masks.dtype == bool and scores.shape == (1,)
    masks, scores = random_tiny.predict(features, (300, 200), points=[[50, 60]], point_labels=[1], multimask=True)
    assert masks.shape == (3, 300, 200) and scores.shape == (3,)
    assert ((scores >= 0) & (scores <= 1)).all()  # SAM 2's IoU head ends in a sigmoid


def test_a_single_mask_falls_back_to_the_best_multimask_when_unstable():
    decoder = MaskDecoder()
    steady = torch.full((1, 1, 8, 8), -5.0)
    steady[..., :4, :] = 5.0  # far from 0: the +-0.05 thresholds give the same area
    shaky = torch.full((1, 1, 8, 8), -5.0)
    shaky[..., :4, :] = 0.01  # between -0.05 and +0.05: stability 0
    multi = torch.stack([torch.full((8, 8), float(i)) for i in (1, 2, 3)])[None]
    iou = torch.tensor([[0.9, 0.2, 0.7, 0.4]])
    logits, score = decoder.single_or_best(torch.cat([steady, multi], dim=1), iou)
    assert torch.equal(logits, steady) and score.item() == pytest.approx(0.9)
    logits, score = decoder.single_or_best(torch.cat([shaky, multi], dim=1), iou)
    assert torch.equal(logits, multi[:, 1:2]) and score.item() == pytest.approx(0.7)
    assert stability(torch.full((1, 1, 4, 4), -1.0)).item() == 1.0  # empty both ways


def test_unknown_variant_is_a_usage_error():
    with pytest.raises(UsageError, match="hiera_t"):
        build_sam2("hiera_xl")
    assert SAM2_VARIANTS == ("hiera_t", "hiera_s", "hiera_b+", "hiera_l")


def test_own_weights_and_a_checkpoint_with_memory_keys_load(tmp_path, tiny_state):
    memory = {"memory_attention.layers.0.linear1.weight": torch.zeros(2, 2), "no_obj_ptr": torch.zeros(1, 256)}
    path = tmp_path / "sam2.pt"
    torch.save({"model": {**tiny_state, **memory}}, path)
    loaded = build_sam2("hiera_t", path, seed=5)
    assert all(torch.equal(v, tiny_state[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: b"not a checkpoint", "not a readable"),
        (lambda s: {"state_dict": s}, "official SAM 2.1 checkpoint format"),
        (lambda s: {k: v for k, v in s.items() if k != "no_mem_embed"}, "missing keys: no_mem_embed"),
        (lambda s: {**s, "no_mem_embed": torch.zeros(1, 1, 128)}, r"wrong shapes: no_mem_embed \(1, 1, 128\)"),
        (
            lambda s: {**s, "image_encoder.trunk.blocks.12.norm1.weight": torch.ones(768)},
            "unexpected keys: image_encoder.trunk.blocks.12",
        ),
    ],
    ids=["garbage", "no-model-entry", "missing", "wrong-shape", "unexpected"],
)
def test_a_checkpoint_that_does_not_fit_is_a_usage_error_naming_the_file(tmp_path, tiny_state, damage, message):
    path = tmp_path / "broken.pt"
    content = damage(shapes_only(tiny_state))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content if "state_dict" in content else {"model": content}, path)
    with pytest.raises(UsageError, match=message) as raised:
        build_sam2("hiera_t", path)
    assert str(path) in str(raised.value)
    with pytest.raises(UsageError, match="no such"):
        build_sam2("hiera_t", tmp_path / "absent.pt")


def test_prompts_that_cannot_be_used_are_usage_errors(random_tiny):
    features = Sam2Features(
        np.zeros((256, 64, 64), np.float32), np.zeros((32, 256, 256), np.float32), np.zeros((64, 128, 128), np.float32)
    )
    with pytest.raises(UsageError, match="needs a box"):
        random_tiny.predict(features, (100, 100))
    with pytest.raises(UsageError, match="point_labels"):
        random_tiny.predict(features, (100, 100), points=[[1, 2]])
    with pytest.raises(UsageError, match="2 points but 1"):
        random_tiny.predict(features, (100, 100), points=[[1, 2], [3, 4]], point_labels=[1])
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        random_tiny.preprocess(np.zeros((10, 10), np.uint8))
