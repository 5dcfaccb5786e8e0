"""From tiles' probabilities to a pit map: blending across overlaps, one polygon per pit across
seams, measures in metres and degrees, and the GIS files QGIS reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import groupby

import numpy as np
import pytest
from pyproj import CRS, Transformer

from al_loop.data import sample_products as sp
from al_loop.data.tiling import tile_windows
from al_loop.mapping.assemble import PitAssembler
from al_loop.mapping.blend import RowBlender
from al_loop.science.measure import measure, product_area_crs

from .conftest import ROOT, cli_here

SCALE, LAT, LON = 0.25, -10.0, 130.0
WIDTH, HEIGHT, SIZE, OVERLAP = 3000, 2200, 1024, 256


def truth_map() -> np.ndarray:
    """A large pit (wider than a tile, across several seams) and a 40 x 40 px square pit."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    truth = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    truth[((xx - 1500) / 700.0) ** 2 + ((yy - 1100) / 300.0) ** 2 < 1] = 0.9
    truth[200:240, 300:340] = 0.8
    return truth


def assemble(truth: np.ndarray, edge_noise: bool) -> list:
    """Run the tiles of ``truth`` (each tile's decoder output = its crop, optionally wrong along
    its outer 16 px, as a decoder with little context there is) through blending and assembly."""
    wkt = sp.equirectangular_wkt(LAT, LON)
    x0, y0 = sp.corner_for(LAT, WIDTH, HEIGHT, SCALE)
    transform = (SCALE, 0.0, x0, 0.0, -SCALE, y0)
    blender = RowBlender(WIDTH, SIZE, ramp=OVERLAP)
    assembler = PitAssembler(transform, WIDTH, HEIGHT)
    windows = tile_windows(WIDTH, HEIGHT, SIZE, OVERLAP)
    for row, tiles in groupby(windows, key=lambda w: w.row):
        for strip in blender.advance(row):
            assembler.add(strip)
        for w in tiles:
            p = truth[w.row : w.row + w.height, w.col : w.col + w.width].copy()
            if edge_noise:
                ring = np.ones_like(p, dtype=bool)
                ring[16:-16, 16:-16] = False
                p[ring] = 0.95
            blender.add(w.col, w.row, p)
    for strip in blender.finish(HEIGHT):
        assembler.add(strip)
    return assembler.finish(min_pixels=50), wkt, transform


def test_a_pit_across_seams_and_larger_than_a_tile_is_one_polygon():
    pits, wkt, _ = assemble(truth_map(), edge_noise=False)
    assert len(pits) == 2
    square, large = sorted(pits, key=lambda p: p.n_pixels)
    assert large.polygon.geom_type == "Polygon"  # joined across 2 tile rows and 4 tile columns
    assert large.bbox[2] - large.bbox[0] > SIZE
    assert square.n_pixels == 1600 and square.confidence == pytest.approx(0.8)


def test_edge_errors_blend_away_inside_and_stay_only_on_the_product_border():
    pits, _, _ = assemble(truth_map(), edge_noise=True)
    inner = [p for p in pits if not p.touches_edge]
    assert len(inner) == 2, "interior seams hold no false pit"
    assert min(p.n_pixels for p in inner) == 1600
    assert len(pits) > 2, "the product's border, where no neighbour overlaps, keeps the decoder's edge errors"


def test_square_area_and_centroid_lonlat():
    pits, wkt, transform = assemble(truth_map(), edge_noise=False)
    square = min(pits, key=lambda p: p.n_pixels)
    row = measure(square, wkt)
    assert row["area_m2"] == pytest.approx(1600 * SCALE**2, rel=0.01)
    # the one projection per product (centred on the product, not the pit) gives the same area
    on_product = measure(square, wkt, product_area_crs(wkt, transform, WIDTH, HEIGHT))
    assert on_product["area_m2"] == pytest.approx(row["area_m2"], rel=1e-6)
    assert row["diameter_m"] == pytest.approx(2 * np.sqrt(1600 * SCALE**2 / np.pi), rel=0.01)
    # the centre of the square, pixel (320, 220), through pyproj directly
    x, y = transform[2] + 320 * SCALE, transform[5] - 220 * SCALE
    lon, lat = Transformer.from_crs(CRS.from_wkt(wkt), CRS("IAU_2015:49900"), always_xy=True).transform(x, y)
    assert row["centroid_lat"] == pytest.approx(lat, abs=1e-7)
    assert row["centroid_lon_e"] == pytest.approx(lon % 360, abs=1e-7)
    assert (row["centroid_x"], row["centroid_y"]) == pytest.approx((x, y))


def run(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, synthetic_dataset):
    """train -> map through the command line, on products made of generated tiles: the map in a child
    process, as a user runs it; the decoder it needs trained by the same command in this process
    (cli_here: train's own child runs are test_map_outputs.py's and test_map_radiometry.py's)."""
    from al_loop.data.synthetic import generate_tile

    root = tmp_path_factory.mktemp("map")
    pixels = sp.mosaic([generate_tile(i, 512).image for i in range(6)], columns=3)  # 1536 x 1024
    label = sp.write_hirise_rdr(pixels, root / "rdr", "ESP_MAP_0001_RED", LAT, LON, SCALE)
    no_crs = sp.write_geotiff(pixels[:, :700], root / "nocrs.tif", None, (0.0, 0.0), 1.0)
    broken = root / "broken.LBL"
    broken.write_text("PDS_VERSION_ID = PDS3\nOBJECT = IMAGE\n  LINES = 10\nEND_OBJECT = IMAGE\nEND\n")
    env = {"AL_LOOP_CACHE_DIR": str(root / "cache")}
    trained = cli_here("train", "--dataset", synthetic_dataset, "--out", root / "dec.pt", "--epochs", "20", "--quiet",
                       cwd=root, env={**os.environ, **env})
    assert trained.returncode == 0, trained.stderr
    result = run("map", label, broken, no_crs, "--decoder", root / "dec.pt", "--out", root / "pits.gpkg",
                 "--geojson", root / "pits.geojson", "--probabilities", root / "prob", "--tile-size", "512", "--overlap", "128",
                 "--quiet", cwd=root, env=env)
    return root, result, label


def test_map_writes_the_layers_in_their_crs(mapped):
    import pyogrio
    import rasterio

    root, result, label = mapped
    assert result.returncode == 1, result.stderr  # one product failed ...
    assert "broken.LBL" in result.stderr
    assert "ESP_MAP_0001_RED:" in result.stdout and "nocrs:" in result.stdout  # ... the others completed
    assert "no CRS" in result.stderr
    layers = {name for name, _ in pyogrio.list_layers(root / "pits.gpkg")}
    assert {"pits_ESP_MAP_0001_RED", "pits_nocrs", "pits_lonlat", "tiles_ESP_MAP_0001_RED"} <= layers
    with rasterio.open(label) as src:
        product_crs = src.crs
    native = pyogrio.read_info(root / "pits.gpkg", layer="pits_ESP_MAP_0001_RED")
    assert CRS.from_user_input(native["crs"]) == CRS.from_wkt(product_crs.to_wkt())
    lonlat = pyogrio.read_info(root / "pits.gpkg", layer="pits_lonlat")
    assert CRS.from_user_input(lonlat["crs"]).equals(CRS("IAU_2015:49900"))
    for field in ("pit_id", "area_m2", "centroid_lat", "centroid_lon_e", "touches_edge", "n_tiles", "review_status", "ls_task_id"):
        assert field in native["fields"]
    geojson = json.loads((root / "pits.geojson").read_text())
    assert geojson["crs"]["properties"]["name"] == "IAU_2015:49900"
    assert len(geojson["features"]) == native["features"]  # the no-CRS product stays out of lon/lat outputs
    with rasterio.open(root / "prob" / "ESP_MAP_0001_RED_probability.tif") as prob, rasterio.open(label) as src:
        assert prob.transform == src.transform and prob.shape == src.shape and prob.dtypes[0] == "uint8"
    assert (root / "pits_ESP_MAP_0001_RED_quicklook.png").is_file()


def test_map_pits_lie_on_the_product(mapped):
    import pyogrio.raw
    import shapely

    root, _, label = mapped
    meta, _, geometry, fields = pyogrio.raw.read(root / "pits.gpkg", layer="pits_ESP_MAP_0001_RED")
    values = dict(zip(meta["fields"], fields, strict=False))
    assert len(geometry) > 0
    x0, y0 = sp.corner_for(LAT, 1536, 1024, SCALE)
    bounds = shapely.box(x0, y0 - 1024 * SCALE, x0 + 1536 * SCALE, y0)
    assert all(bounds.buffer(1e-6).contains(g) for g in shapely.from_wkb(geometry))
    assert np.allclose(values["area_m2"], values["n_pixels"] * SCALE**2, rtol=0.01)
    assert set(values["review_status"]) == {"predicted"}


def test_cli_lists_the_geo_commands():
    out = subprocess.run([sys.executable, "-m", "al_loop.cli", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "tile" in out and "map" in out and "train" in out


def test_review_status_comes_from_the_task_under_the_pit():
    from al_loop.data.tiling import ProductEntry, TileRecord
    from al_loop.mapping.assemble import PitPixels
    from al_loop.mapping.model import MapModel

    tiles = [TileRecord(f"t{i}.png", "P", col, 0, 100, 100, (1, 0, col, 0, -1, 0), f"sha{i}", 0.0)
             for i, col in enumerate((0, 80))]
    entry = ProductEntry("P", "p.tif", 180, 100, None, (1, 0, 0, 0, -1, 0), None, (0, 1), 100, 20, tiles)
    model = MapModel(None, None, "round-3", tasks={"sha0": (11, "labelled"), "sha1": (12, "unlabelled")},
                     expert_masks={"sha0": np.zeros((100, 100), bool)})
    pit = lambda c0, c1: PitPixels(None, 10, 5.0, 0.9, (c0, 10, c1, 20), False)  # noqa: E731
    assert model.review(pit(10, 20), entry) == (11, "expert")
    assert model.review(pit(85, 95), entry) == (11, "expert")  # in the overlap: the expert's tile counts
    assert model.review(pit(150, 170), entry) == (12, "predicted")
    assert MapModel(None, None, "x").review(pit(10, 20), entry) == (None, "predicted")


def test_a_product_not_on_mars_is_named_and_the_others_complete_with_the_users_file_modes(mapped, tmp_path):
    """An Earth-CRS product beside a good one: exit 1, the bad one named in one line (no
    traceback), the good one mapped; a run whose only product is missing leaves no GeoPackage;
    outputs are written with the user's umask (colleagues on a shared server can read them). The
    two refusals after the first map run in this process (cli_here): they exit before any output."""
    from al_loop.data.synthetic import generate_tile

    root = mapped[0]
    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(4)], columns=2)
    good = sp.write_geotiff(pixels, tmp_path / "good.tif", sp.equirectangular_wkt(0.0, 10.0), (0.0, 0.0), SCALE)
    earth = sp.write_geotiff(pixels, tmp_path / "earth.tif", CRS.from_epsg(32633).to_wkt(), (500000.0, 0.0), SCALE)
    env = {"AL_LOOP_CACHE_DIR": str(root / "cache")}

    def under_umask(*args):
        return subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, args)], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, **env}, preexec_fn=lambda: os.umask(0o022))

    result = under_umask("map", earth, good, "--decoder", root / "dec.pt", "--out", tmp_path / "pits.gpkg",
                         "--geojson", tmp_path / "pits.geojson", "--tile-size", "256", "--overlap", "64", "--quiet")
    assert result.returncode == 1
    assert "earth.tif: its CRS 'WGS 84 / UTM zone 33N' is on a body of radius 6378 km, not Mars" in result.stderr
    assert "Traceback" not in result.stderr and "good:" in result.stdout
    for path in (tmp_path / "pits.gpkg", tmp_path / "pits.geojson", tmp_path / "pits-tiles" / "manifest.json"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    here = {**os.environ, **env}
    tiled = cli_here("tile", earth, "--out", tmp_path / "t2", "--quiet", env=here, cwd=tmp_path)  # refused at tile time too
    assert tiled.returncode == 1 and "not Mars" in tiled.stderr and "Traceback" not in tiled.stderr

    missing = cli_here("map", tmp_path / "gone.LBL", "--decoder", root / "dec.pt", "--out", tmp_path / "none.gpkg",
                       env=here, cwd=tmp_path)
    assert missing.returncode == 1 and "gone.LBL: no such file" in missing.stderr
    assert not list(tmp_path.glob("*none*.gpkg")), "a run that mapped nothing leaves no GeoPackage, whole or partial"


def test_train_holds_out_tiles_and_a_decoder_says_what_it_is(synthetic_dataset, tmp_path, capsys):
    """train keeps back whole groups, scores on them and stores it; status --decoder shows it, and
    the stored figures equal a recomputation on the same held-out tiles."""
    from al_loop.cli import main
    from al_loop.data.yolo import load_split
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.embeddings.embed import embed_files
    from al_loop.evaluation.evaluate import evaluate_decoder
    from al_loop.models.decoder import load_decoder
    from al_loop.models.encoders import LazyEncoder
    from al_loop.training.oracle import BoxOracle

    out, cache = tmp_path / "d.pt", tmp_path / "cache"
    assert main(["train", "--dataset", str(synthetic_dataset), "--out", str(out), "--epochs", "10", "--held-out", "0.25",
                 "--cache-dir", str(cache), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "on 6 held-out tiles it never saw: object recall" in said
    assert main(["status", "--decoder", str(out), "--json"]) == 0
    about = json.loads(capsys.readouterr().out)
    held = about["held_out"]
    assert len(held["tiles"]) == 6 and len(about["trained_on"]) == 18 and not set(held["tiles"]) & set(about["trained_on"])
    decoder, _ = load_decoder(out)
    tiles = {str(t.image): t for t in load_split(synthetic_dataset, "train")[0]}
    chosen = [tiles[p] for p in held["tiles"]]
    encoder = LazyEncoder(about["encoder"])
    refs = embed_files([t.image for t in chosen], encoder, EmbeddingCache(cache), progress=False).refs
    # data.yaml names two types, so the decoder learned both, and its held-out figures are typed
    again = evaluate_decoder(decoder, refs, [BoxOracle().labels(t) for t in chosen], [t.boxes for t in chosen],
                     EmbeddingCache(cache), encoder.id, type_names=about["type_names"],
                     expert_types=[t.classes + 1 for t in chosen])
    assert about["type_names"] == ["pit", "skylight"] and decoder.types == 2
    assert again == pytest.approx(held["metrics"])
    assert main(["status", "--decoder", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "trained on 18 tiles of 256 px, 10 epochs, box oracle" in shown and "held-out fit: object recall" in shown
    assert "normalisation:" in shown


def test_the_searched_area_is_the_valid_pixels_not_the_tiles_that_hold_them(tmp_path):
    """A swath-like product with a 30 % null border, tiled as `map` tiles it (tiles up to 95 % null are
    kept): the area `map` reports and `export` divides by is that of the valid pixels under kept
    tiles, within 1 %, where the union of the tile outlines is far larger."""
    import shapely

    from al_loop.data.products import open_product, read_valid_mask
    from al_loop.data.tiling import tile_products
    from al_loop.mapping.outputs import overview_from_tiles, searched_mask
    from al_loop.mapping.run import MapReport, _write_searched
    from al_loop.science.exports import searched_area

    width, height = 2000, 1600
    rows, cols = np.mgrid[0:height, 0:width]
    skew = cols - 0.35 * rows  # a parallelogram swath, its null wedges left and right
    valid = (skew > 100) & (skew < 1500)
    assert 0.29 < 1 - valid.mean() < 0.31
    pixels = np.where(valid, 400 + (rows * 7 + cols * 3) % 300, 0).astype(np.uint16)
    wkt = sp.equirectangular_wkt(LAT, LON)
    product = sp.write_geotiff(pixels, tmp_path / "SWATH.tif", wkt, sp.corner_for(LAT, width, height, SCALE), SCALE, nodata=0)
    entry = tile_products([product], tmp_path / "tiles", 512, 128, progress=False).entries["SWATH"]
    covered = np.zeros_like(valid)
    for t in entry.tiles:
        covered[t.row:t.row + t.height, t.col:t.col + t.width] = True
    truth = (valid & covered).sum() * SCALE**2
    tiles_union = shapely.union_all([shapely.box(t.col, t.row, t.col + t.width, t.row + t.height) for t in entry.tiles]).area
    assert tiles_union * SCALE**2 > 1.25 * truth  # what the area was before: the kept tiles' null parts counted

    overview = overview_from_tiles(entry, tmp_path / "tiles")
    assert searched_mask(entry, *overview).area_m2 == pytest.approx(truth, rel=0.01)
    report = MapReport()
    _write_searched(tmp_path / "map.gpkg", entry, overview, report)
    assert report.valid_area_m2["SWATH"] == pytest.approx(truth, rel=0.01)
    assert json.loads(json.dumps(report.summary()))["valid_area_m2"]["SWATH"] == pytest.approx(truth, rel=0.01)
    found = searched_area(tmp_path / "map.gpkg")
    assert found.area_km2 * 1e6 == pytest.approx(truth, rel=0.01) and found.pixel_m == pytest.approx(SCALE)
    assert read_valid_mask(open_product(product)).area_m2 == pytest.approx(valid.sum() * SCALE**2, rel=0.01)
    coarse = read_valid_mask(open_product(product), side=200)  # a decimated read samples: still within 1 %
    assert coarse.factor == 10 and coarse.area_m2 == pytest.approx(valid.sum() * SCALE**2, rel=0.01)


def test_each_pit_is_scored_as_an_object_and_low_scores_are_flagged_or_dropped(mapped):
    """map writes object_score (mean probability x fit to the training sizes) and flags those under
    MIN_OBJECT_SCORE; --drop-low-score writes the same map less exactly those (issue 34)."""
    import pyogrio.raw

    from al_loop.models.pits import MIN_OBJECT_SCORE

    root, result, label = mapped
    meta, _, _, fields = pyogrio.raw.read(root / "pits.gpkg", layer="pits_ESP_MAP_0001_RED")
    values = dict(zip(meta["fields"], fields, strict=False))
    scores, flags = np.asarray(values["object_score"], float), list(values["flag"])
    assert len(scores) and ((scores >= 0) & (scores <= 1)).all()
    assert flags == ["low_score" if s < MIN_OBJECT_SCORE else "" for s in scores]
    dropped = cli_here("map", label, "--decoder", root / "dec.pt", "--out", root / "kept.gpkg", "--tiles",
                       root / "pits-tiles", "--drop-low-score", "--no-quicklook", "--quiet", cwd=root,
                       env={**os.environ, "AL_LOOP_CACHE_DIR": str(root / "cache")})
    assert dropped.returncode == 0, dropped.stderr
    meta, _, _, fields = pyogrio.raw.read(root / "kept.gpkg", layer="pits_ESP_MAP_0001_RED")
    kept = dict(zip(meta["fields"], fields, strict=False))
    assert sorted(np.round(kept["object_score"], 6)) == sorted(np.round(scores[scores >= MIN_OBJECT_SCORE], 6))
    assert set(kept["flag"]) <= {""}
