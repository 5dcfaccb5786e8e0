"""One radiometry (and one tile scale) from training to map, on real HiRISE tiles.

A decoder trained on nine real tiles maps a product mosaicked from those same nine tiles (a
10-bit Mars equirectangular GeoTIFF, cut by ``tile``'s own stretch): the map must cover the
expert boxes at least as well as the decoder does on the tiles themselves, and its pit area
must stay within 1.5x of theirs. Before the training radiometry was recorded, the product
stretch sent a decoder from 5.7 % pit pixels on its tiles to 30.3 % on the map.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from al_loop.data import sample_products as sp
from al_loop.data.radiometry import Linear, ValueStatistics, matching, tile_statistics

from .conftest import ROOT, cli_here

HIRISE = ROOT.parent / "shared" / "data" / "hirise-pits"


def test_matching_gives_a_product_the_training_tiles_mean_and_sd_and_keeps_null():
    rng = np.random.default_rng(0)
    training = [rng.normal(190, 10, (64, 64)).clip(1, 255).astype(np.uint8) for _ in range(3)]
    product = rng.normal(120, 40, (64, 64)).clip(1, 255).astype(np.uint8)
    product[:8] = 0  # null
    linear = matching(tile_statistics([product]), tile_statistics(training))
    remapped = linear.apply(product)
    assert (remapped[:8] == 0).all()
    after, wanted = tile_statistics([remapped]), tile_statistics(training)
    assert after.mean == pytest.approx(wanted.mean, abs=1.0) and after.sd == pytest.approx(wanted.sd, abs=1.0)
    assert matching(wanted, wanted) is None  # nothing to change: the same embeddings, no new cache entries
    assert Linear(1.5, -3.0).id != Linear(1.5, -2.0).id
    assert matching(ValueStatistics(100.0, 0.1, 1), wanted) is None  # a flat product is left as it is


def nine_tiles():
    from al_loop.data.groups import group_tiles
    from al_loop.data.yolo import load_split

    tiles = [t for t in load_split(HIRISE, "valid")[0] if len(t.boxes)]
    groups = np.asarray(group_tiles([t.image for t in tiles], progress=False))
    firsts = [int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)]
    return [tiles[i] for i in np.random.default_rng(0).choice(firsts, 9, replace=False)]  # bench/radiometry.py's set 0


def coverage(mask: np.ndarray, boxes: list) -> int:
    """Expert boxes at least a quarter of whose area is pit."""
    return sum(mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].mean() >= 0.25 for x0, y0, x1, y1 in boxes)


@pytest.mark.skipif(not (HIRISE / "valid" / "images").is_dir(), reason=f"needs the real HiRISE tiles at {HIRISE}")
def test_a_mosaic_of_the_training_tiles_maps_like_the_tiles(shared_cache, tmp_path):
    import pyogrio.raw
    import shapely
    from affine import Affine
    from PIL import Image
    from rasterio.features import rasterize

    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.embeddings.embed import embed_files
    from al_loop.models.decoder import load_decoder, predict_tile
    from al_loop.models.encoders import LazyEncoder
    from al_loop.models.pits import THRESHOLD

    tiles = nine_tiles()
    dataset = tmp_path / "nine"
    for sub in ("images", "labels"):
        (dataset / "train" / sub).mkdir(parents=True)
    for t in tiles:
        shutil.copy(t.image, dataset / "train" / "images")
        shutil.copy(t.image.parent.parent / "labels" / f"{t.image.stem}.txt", dataset / "train" / "labels")
    shutil.copy(HIRISE / "data.yaml", dataset)
    # The session's shared cache: the nine valid-split tiles' filter-bank entries are there already
    # when test_pit_types.py ran first (the product's own tiles are new to it either way).
    env = {**os.environ, "AL_LOOP_CACHE_DIR": str(shared_cache)}

    def cli(*args, here=False):
        if here:  # the second map, only its size limits differ: in this process (conftest's cli_here)
            result = cli_here(*args, "--quiet", env=env, cwd=tmp_path)
        else:
            result = subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, args), "--quiet"], cwd=tmp_path,
                                    capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli("train", "--dataset", dataset, "--encoder", "filterbank", "--held-out", "0", "--out", tmp_path / "d.pt")
    raw = [np.asarray(Image.open(t.image).convert("L")) for t in tiles]
    side = raw[0].shape[0]
    product = sp.mosaic(raw, 3, null_corner=False)  # DN = 4 * grey + 1: a 10-bit product, stretched anew by tile
    corner = sp.corner_for(-10.0, product.shape[1], product.shape[0], 0.25)
    tif = sp.write_geotiff(product, tmp_path / "NINE.tif", sp.equirectangular_wkt(-10.0, 130.0), corner, 0.25)
    # Radiometry first: every pit the decoder paints, no size limits, against the same on the tiles.
    cli("map", tif, "--decoder", tmp_path / "d.pt", "--out", tmp_path / "pits.gpkg", "--no-quicklook",
        "--min-area-m2", "0", "--max-area-m2", "inf")

    boxes = [(b[0] + (i % 3) * side, b[1] + (i // 3) * side, b[2] + (i % 3) * side, b[3] + (i // 3) * side)
             for i, t in enumerate(tiles) for b in t.boxes]
    decoder, _ = load_decoder(tmp_path / "d.pt")
    encoder, cache = LazyEncoder("filterbank"), EmbeddingCache(shared_cache)
    refs = embed_files([t.image for t in tiles], encoder, cache, progress=False).refs
    on_tiles = np.zeros(product.shape, bool)
    for i, ref in enumerate(refs):
        r, c = divmod(i, 3)
        on_tiles[r * side:(r + 1) * side, c * side:(c + 1) * side] = \
            predict_tile(decoder, cache.load(ref.sha256, encoder.id), ref.size) >= THRESHOLD
    outlines = shapely.from_wkb(pyogrio.raw.read(tmp_path / "pits.gpkg", layer="pits_NINE")[2])
    mapped = rasterize([(g, 1) for g in outlines], out_shape=product.shape,
                       transform=Affine(0.25, 0, corner[0], 0, -0.25, corner[1])).astype(bool) if len(outlines) else \
        np.zeros(product.shape, bool)

    ratio = mapped.mean() / on_tiles.mean()
    assert 1 / 1.5 <= ratio <= 1.5, f"pit area on the map is {ratio:.2f}x the decoder's on its own tiles"
    assert coverage(mapped, boxes) >= coverage(on_tiles, boxes), (coverage(mapped, boxes), coverage(on_tiles, boxes))

    # Then the default size limits (from the training pits): nothing larger than the largest allowed.
    said = cli("map", tif, "--decoder", tmp_path / "d.pt", "--out", tmp_path / "sized.gpkg", "--no-quicklook", here=True)
    high = float(said.split(" within ")[1].split(" m2")[0].split("-")[1])
    meta, _, _, fields = pyogrio.raw.read(tmp_path / "sized.gpkg", layer="pits_NINE")
    assert max(dict(zip(meta["fields"], fields, strict=False))["area_m2"], default=0) <= high
