"""next-batch on MobileSAM (``sam-vit_t``) embeddings against a real Label Studio: random weights
saved in the official format (tests/test_vit_t.py has the rest of vit_t)."""
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


def test_next_batch_rounds_on_vit_t_embeddings(label_studio, checkpoint, tmp_path):
    """init on MobileSAM, round 0, the expert answers, round 1 trains on vit_t embeddings (boxes
    masked by vit_t too) and pushes its predictions. init and round 0 run in this process (conftest's
    cli_here: they set the round up); round 1, the one on vit_t, in a child as a user runs it."""
    import json

    from al_loop.loop.workspace import Workspace
    from al_loop.models.decoder import load_decoder

    from .test_loop_rounds import al_loop, al_loop_here, answer_round, expert_for

    folder = label_studio.document_root / "vit_t-tiles"
    paths = write_tiles(folder, 7, size=256, seed=71)
    boxes = {p.name: np.load(p.with_suffix(".boxes.npy")) for p in paths}
    for p in paths:
        p.with_suffix(".boxes.npy").unlink()
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token, "AL_LOOP_CACHE_DIR": str(tmp_path / "cache"),
           "AL_LOOP_RUNTIME": "torch"}
    ws = tmp_path / "ws"
    al_loop_here("init", "--label-studio-url", label_studio.url, "--images", folder, "--val-size", 2, "--workspace", ws,
            "--encoder", "sam-vit_t", "--model", "vit_t", "--checkpoint", checkpoint, "--title", "al-loop vit_t", env=env)
    workspace = Workspace(ws)
    expert = expert_for(label_studio, workspace, boxes)
    args = ("next-batch", "--workspace", ws, "--batch-size", 2, "--epochs", 5, "--quiet", "--json")
    assert json.loads(al_loop_here(*args, env=env).stdout)["round"] == 0
    answer_round(expert, workspace, 0)
    out = json.loads(al_loop(*args, env=env).stdout)
    assert out["status"] == "pushed" and out["round"] == 1 and out["predictions"] == 2
    _, meta = load_decoder(ws / "decoders" / "round-1.pt")
    assert meta["encoder"] == "sam-vit_t" and meta["encoder_id"].startswith("sam-vit_t-")
    assert json.loads(workspace.read("SELECT settings FROM rounds WHERE round = 1")[0]["settings"])["model"] == "vit_t"
