"""`al-loop map --workspace` against a real Label Studio: on tiles the expert submitted, the map
holds the expert's outlines (not the decoder's), marked `expert` with their task id."""
from __future__ import annotations

import numpy as np
import pytest

from al_loop.cli import main
from al_loop.data import sample_products as sp
from al_loop.data.synthetic import generate_tile
from al_loop.data.tiling import load_manifest
from al_loop.loop.workspace import Workspace
from al_loop.models.card import DecoderCard
from al_loop.models.encoders import encoder_id
from al_loop.studio.client import connect, create_annotation
from al_loop.studio.label_config import default_label_config, parse_label_config
from al_loop.studio.regions import mask_to_brush
from al_loop.training.store import DecoderStore
from al_loop.training.train import TrainingSet, train_decoder

SCALE = 0.25


@pytest.fixture
def answered(label_studio, tmp_path, monkeypatch):
    """A product tiled into Label Studio, round 0 pushed, two tiles answered with a known square,
    and a workspace decoder that finds no pit anywhere (so every pit on the map is the expert's)."""
    monkeypatch.setenv("AL_LOOP_CACHE_DIR", str(tmp_path / "cache"))
    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(16)], columns=4, null_corner=False)  # 25 tiles: a validation patch and a pool apart
    tif = sp.write_geotiff(pixels, tmp_path / "P2.tif", sp.equirectangular_wkt(0.0, 10.0), (0.0, 0.0), SCALE)
    tiles = label_studio.document_root / "map-tiles"
    assert main(["tile", str(tif), "--out", str(tiles), "--tile-size", "256", "--overlap", "64", "--quiet"]) == 0
    ws = tmp_path / "ws"
    common = ["--workspace", str(ws)]
    assert main(["init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--images", str(tiles),
                 "--val-size", "2", *common]) == 0
    assert main(["next-batch", "--token", label_studio.token, "--quiet", *common]) == 0  # hashes every tile
    workspace = Workspace(ws)
    client = connect(label_studio.url, label_studio.token)
    control = parse_label_config(default_label_config()).mask_control
    rows = sorted(workspace.tasks(), key=lambda r: r["task_id"])[:2]
    for row in rows:
        square = np.zeros((row["height"], row["width"]), bool)
        square[100:140, 100:140] = True
        create_annotation(client, label_studio.url, row["task_id"], [mask_to_brush(square, control, control.labels[0])])
    data = TrainingSet()
    data.add(np.zeros((42, 64, 64), np.float32) + np.random.default_rng(0).normal(size=(42, 64, 64)).astype(np.float32),
             np.zeros((256, 256), bool))
    card = DecoderCard(encoder_id("filterbank"), "filterbank", version="round-1", metrics={"miou": 0.0})
    DecoderStore(ws).save(train_decoder(data, epochs=5, progress=False), card)  # scored: map --workspace maps only with one
    return tif, tiles, ws, rows


def test_map_uses_the_experts_masks_on_answered_tiles(answered, label_studio, tmp_path):
    import pyogrio.raw

    tif, tiles, ws, rows = answered
    out = tmp_path / "pits.gpkg"
    assert main(["map", str(tif), "--workspace", str(ws), "--tiles", str(tiles), "--out", str(out),
                 "--token", label_studio.token, "--quiet", "--no-quicklook"]) == 0
    meta, _, _, fields = pyogrio.raw.read(out, layer="pits_P2")
    values = dict(zip(meta["fields"], fields, strict=False))
    expert = [i for i, s in enumerate(values["review_status"]) if s == "expert"]
    assert len(expert) >= 1
    assert {int(values["ls_task_id"][i]) for i in expert} <= {r["task_id"] for r in rows}
    for i in expert:
        assert values["n_pixels"][i] == 1600  # the expert's 40 x 40 square, as drawn
        assert values["area_m2"][i] == pytest.approx(1600 * SCALE**2, rel=0.01)
    tile_of = {t.sha256: t for t in load_manifest(tiles)["P2"].tiles}
    answered_tiles = {(tile_of[r["sha256"]].col, tile_of[r["sha256"]].row) for r in rows}
    assert len(answered_tiles) == 2
