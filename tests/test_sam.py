import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch

from al_loop.data.images import DecodedTile
from al_loop.models import weights
from al_loop.models.encoders import LazyEncoder, SamEncoder, encoder_id
from al_loop.models.sam import PromptSegmenter, build_tiny_sam, load_sam


def _tile(h=180, w=240, seed=0):
    rng = np.random.default_rng(seed)
    return DecodedTile("mem", rng.integers(0, 255, (h, w), dtype=np.uint8), "0" * 64)


def test_tiny_is_sam_and_deterministic():
    a, b = build_tiny_sam(), build_tiny_sam()
    from segment_anything.modeling import Sam

    assert isinstance(a, Sam)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=False):
        assert torch.equal(pa, pb)
    assert load_sam("tiny")[1] == "sam-tiny-seed0"


def test_box_and_point_prompts_give_tile_sized_masks(tiny_sam):
    enc = SamEncoder(tiny_sam, "sam-tiny-seed0")
    tile = _tile()
    emb = enc.encode(tile)
    assert emb.shape == (enc.channels, enc.grid, enc.grid) == (32, 16, 16)
    seg = PromptSegmenter(tiny_sam)
    box = seg.segment(emb, tile.size, box=(20, 30, 120, 110))
    assert box.mask.shape == (180, 240) and box.mask.dtype == bool and np.isfinite(box.score)
    pts = seg.segment(emb, tile.size, points=np.array([[60, 70], [150, 40]]), point_labels=np.array([1, 0]))
    assert pts.mask.shape == (180, 240)
    both = seg.segment(emb, tile.size, box=(20, 30, 120, 110), points=np.array([[60, 70]]), point_labels=np.array([1]))
    assert both.mask.shape == (180, 240)
    with pytest.raises(ValueError):
        seg.segment(emb, tile.size)


def test_cached_embedding_gives_same_mask_as_set_image(tiny_sam):
    """The predictor fed a (float16-cached) embedding answers like SAM's own set_image path."""
    from segment_anything import SamPredictor

    tile = _tile(200, 160, seed=2)
    rgb = np.repeat(tile.pixels[..., None], 3, axis=2)
    pred = SamPredictor(tiny_sam)
    pred.set_image(rgb)
    ref, _, _ = pred.predict(box=np.array([10, 20, 90, 150]), multimask_output=False)
    emb = SamEncoder(tiny_sam, "x").encode(tile).astype(np.float16)
    ours = PromptSegmenter(tiny_sam).segment(emb, tile.size, box=(10, 20, 90, 150), clip=False).mask
    agree = (ours == ref[0]).mean()
    assert agree > 0.99


def test_precisions_have_their_own_cache_ids(tiny_sam):
    assert SamEncoder(tiny_sam, "sam-tiny-seed0", "bf16").id == "sam-tiny-seed0-bf16"
    int8 = SamEncoder(tiny_sam, "sam-tiny-seed0", "int8")
    emb = int8.encode(_tile())
    assert int8.id.endswith("-int8") and emb.shape == (32, 16, 16)
    # the quantised copy leaves the float model untouched
    assert isinstance(tiny_sam.image_encoder.blocks[0].mlp.lin1, torch.nn.Linear)


def test_missing_weights_name_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AL_LOOP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(weights.WeightsError, match="al-loop weights download vit_b"):
        LazyEncoder("sam-vit_b")
    with pytest.raises(weights.WeightsError, match="does not exist"):
        encoder_id("sam-vit_b", checkpoint=tmp_path / "nope.pth")


def test_checkpoint_path_works_offline(tmp_path):
    """--checkpoint loads a local file into the official architecture (vit_b, random weights saved here)."""
    from al_loop.models.sam import random_sam

    path = tmp_path / "my_sam.pth"
    torch.save(random_sam("vit_b").state_dict(), path)
    sam, model_id = load_sam("vit_b", path)
    assert model_id.startswith("sam-vit_b-") and sam.image_encoder.img_size == 1024


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_md5(tmp_path, file_server):
    root, url = file_server
    payload = b"pretend checkpoint" * 1000
    (root / "sam_fake.pth").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    good = weights.Checkpoint("vit_b", "sam_fake.pth", md5[:6], 1)
    path = weights.download("vit_b", tmp_path / "w", base_url=url, checkpoint=good)
    assert path.read_bytes() == payload
    bad = weights.Checkpoint("vit_b", "sam_fake.pth", "000000" if not md5.startswith("000000") else "ffffff", 1)
    (path).unlink()
    with pytest.raises(weights.WeightsError, match="discarded"):
        weights.download("vit_b", tmp_path / "w", base_url=url, checkpoint=bad)
    assert not list((tmp_path / "w").iterdir())  # nothing half-written poses as a checkpoint


def test_download_unreachable_says_what_to_do(tmp_path):
    with pytest.raises(weights.WeightsError, match="AL_LOOP_CHECKPOINT"):
        weights.download("vit_b", tmp_path, base_url="http://127.0.0.1:9/", timeout=2)
