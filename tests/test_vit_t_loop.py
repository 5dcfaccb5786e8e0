"""next-batch on MobileSAM (``sam-vit_t``) and SAM 2.1 (``sam2.1-hiera_t``) embeddings against a
real Label Studio: random weights saved in the official formats (tests/test_vit_t.py and
tests/test_sam2_encoder.py have the rest of each)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from al_loop.models.sam import random_sam

from .conftest import write_tiles


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit_t-loop") / "mobile_sam_random.pt"
    torch.save(random_sam("vit_t", seed=3).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    from al_loop.models.sam2 import build_sam2

    path = tmp_path_factory.mktemp("sam2-loop") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": build_sam2("hiera_t", None, seed=3).state_dict()}, path)
    return path


def test_next_batch_rounds_on_vit_t_embeddings(label_studio, checkpoint, tmp_path):
    """init on MobileSAM, round 0, the expert answers, round 1 trains on vit_t embeddings (boxes
    masked by vit_t too) and pushes its predictions. init and round 0 run in this process (conftest's
    cli_here: they set the round up); round 1, the one on vit_t, in a child as a user runs it."""
    rounds_on(label_studio, tmp_path, "sam-vit_t", "vit_t", checkpoint)


def test_next_batch_rounds_on_sam2_embeddings(label_studio, sam2_checkpoint, tmp_path):
    """The same on SAM 2.1: round 1 trains on hiera_t embeddings, its bare boxes masked by SAM 2.1's
    own prompt heads on the three cached maps."""
    rounds_on(label_studio, tmp_path, "sam2.1-hiera_t", "sam2.1-hiera_t", sam2_checkpoint)


def rounds_on(label_studio, tmp_path, encoder: str, model: str, checkpoint) -> None:
    import json

    from al_loop.loop.workspace import Workspace
    from al_loop.models.decoder import load_decoder

    from .test_loop_rounds import al_loop, al_loop_here, answer_round, expert_for

    folder = label_studio.document_root / f"{model}-tiles"
    paths = write_tiles(folder, 7, size=256, seed=71)
    boxes = {p.name: np.load(p.with_suffix(".boxes.npy")) for p in paths}
    for p in paths:
        p.with_suffix(".boxes.npy").unlink()
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(tmp_path / "cache"),
           "AL_LOOP_RUNTIME": "torch"}
    ws = tmp_path / "ws"
    al_loop_here("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 2, "--workspace", ws,
            "--encoder", encoder, "--model", model, "--checkpoint", checkpoint, "--title", f"al-loop {model}", env=env)
    workspace = Workspace(ws)
    expert = expert_for(label_studio, workspace, boxes)
    args = ("next-batch", "--workspace", ws, "--batch-size", 2, "--epochs", 5, "--quiet", "--json")
    assert json.loads(al_loop_here(*args, env=env).stdout)["round"] == 0
    answer_round(expert, workspace, 0)
    out = json.loads(al_loop(*args, env=env).stdout)
    assert out["status"] == "pushed" and out["round"] == 1 and out["predictions"] == 2
    _, meta = load_decoder(ws / "decoders" / "round-1.pt")
    assert meta["encoder"] == encoder and meta["encoder_id"].startswith(f"{encoder}-")
    assert json.loads(workspace.read("SELECT settings FROM rounds WHERE round = 1")[0]["settings"])["model"] == model
