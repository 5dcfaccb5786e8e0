"""From a product to tiles: HiRISE-style JP2 + PDS3 label and a Mars GeoTIFF, built here from
real HiRISE tiles (generated ones where the data is absent), cut with the manifest that ties
each tile back to its product."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from al_loop.data import sample_products as sp
from al_loop.data.images import list_images
from al_loop.data.products import open_product
from al_loop.data.tiling import load_manifest, starts, tile_products, tile_windows
from al_loop.errors import ProductError

from .conftest import HIRISE

SCALE = 0.25
LAT, LON = -10.0, 130.0


def source_tiles(count: int = 12) -> list[np.ndarray]:
    images = sorted((HIRISE / "valid" / "images").glob("*.jpg"))[:count]
    if len(images) == count:
        return [np.asarray(Image.open(p).convert("L")) for p in images]
    from al_loop.data.synthetic import generate_tile

    return [generate_tile(i, 900).image for i in range(count)]


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return sp.mosaic(source_tiles(), columns=4)  # 3600 x 2700, 10 bits in 16, a null corner


@pytest.fixture(scope="module")
def products(tmp_path_factory, pixels):
    root = tmp_path_factory.mktemp("products")
    height, width = pixels.shape
    label = sp.write_hirise_rdr(pixels, root / "rdr", "ESP_TEST_0001_RED", LAT, LON, SCALE)
    wkt = sp.equirectangular_wkt(LAT, LON)
    tif = sp.write_geotiff(pixels, root / "geotiff" / "ESP_TEST_0001_RED.tif", wkt, sp.corner_for(LAT, width, height, SCALE), SCALE)
    return {"root": root, "label": label, "tif": tif}


def test_windows_cover_the_product_with_the_asked_overlap():
    assert starts(3600, 1024, 768) == [0, 768, 1536, 2304, 2576]  # the last snaps to the edge
    windows = tile_windows(3600, 2700, 1024, 256)
    assert len(windows) == 5 * 4
    covered = np.zeros((2700, 3600), dtype=np.uint8)
    for w in windows:
        assert w.col + w.width <= 3600 and w.row + w.height <= 2700 and (w.width, w.height) == (1024, 1024)
        covered[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    assert covered.min() >= 1
    assert tile_windows(500, 300, 1024, 256) == [type(windows[0])(0, 0, 500, 300)]  # smaller than a tile: one tile
    with pytest.raises(ProductError, match="overlap"):
        tile_windows(100, 100, 512, 512)


def test_the_pds_label_opens_the_jp2_with_its_null_and_crs(products, pixels):
    product = open_product(products["label"])
    assert (product.width, product.height) == (3600, 2700)
    assert product.product_id == "ESP_TEST_0001_RED" and product.null == 0.0 and product.scaling == (1e-4, 0.0)
    assert product.crs_wkt and "Equirectangular" in product.crs_wkt
    assert product.transform[0] == pytest.approx(SCALE)


def test_tiles_map_back_to_the_product(products, pixels, tmp_path):
    report = tile_products([products["label"]], tmp_path, 1024, 256, progress=False)
    assert not report.failures
    entry = load_manifest(tmp_path)["ESP_TEST_0001_RED"]
    assert len(entry.tiles) == 20 and entry.skipped_null == 0
    # the folder is what `al-loop init --images` imports: tiles only (the converted JP2 is not an image file here)
    assert len(list_images(tmp_path)) == 20
    product = open_product(products["label"])
    a, b, c, d, e, f = product.transform
    lo, hi = entry.stretch
    for tile in entry.tiles:
        data = (tmp_path / tile.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == tile.sha256
        # the tile's affine puts its pixel (0, 0) where the product has pixel (col, row)
        assert tile.transform[2] == pytest.approx(c + a * tile.col) and tile.transform[5] == pytest.approx(f + e * tile.row)
        png = np.asarray(Image.open(tmp_path / tile.file))
        assert png.dtype == np.uint8 and png.shape == (tile.height, tile.width)
        source = pixels[tile.row : tile.row + tile.height, tile.col : tile.col + tile.width].astype(float)
        expected = np.where(source == 0, 0, np.round(np.clip((source - lo) / (hi - lo), 0, 1) * 254 + 1))
        assert np.abs(png.astype(int) - expected).max() <= 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["products"]["ESP_TEST_0001_RED"]["crs_wkt"] == product.crs_wkt


def test_jp2_and_geotiff_of_the_same_pixels_give_the_same_tiles(products, tmp_path):
    tile_products([products["label"]], tmp_path / "a", 1024, 256, progress=False)
    tile_products([products["tif"]], tmp_path / "b", 1024, 256, progress=False)
    a = load_manifest(tmp_path / "a")["ESP_TEST_0001_RED"]
    b = load_manifest(tmp_path / "b")["ESP_TEST_0001_RED"]
    assert [t.sha256 for t in a.tiles] == [t.sha256 for t in b.tiles]
    assert a.transform == pytest.approx(b.transform)


def test_tiling_again_replaces_the_products_tiles(products, tmp_path):
    tile_products([products["tif"]], tmp_path, 1024, 256, progress=False)
    tile_products([products["tif"]], tmp_path, 2048, 512, progress=False)
    entry = load_manifest(tmp_path)["ESP_TEST_0001_RED"]
    assert len(list_images(tmp_path)) == len(entry.tiles) == len(tile_windows(3600, 2700, 2048, 512)) and entry.tile_size == 2048


def test_mostly_null_tiles_are_skipped(tmp_path, pixels):
    half_null = pixels.copy()
    half_null[:, 1800:] = 0
    tif = sp.write_geotiff(half_null, tmp_path / "half.tif", sp.equirectangular_wkt(LAT, LON), (0.0, 0.0), SCALE)
    entry = tile_products([tif], tmp_path / "tiles", 1024, 256, progress=False).entries["half"]
    assert entry.skipped_null == 4 * 2  # the two columns of windows wholly right of x = 1800
    assert all(t.col + t.width <= 1800 + 1024 for t in entry.tiles)


def test_bad_products_are_named_and_the_others_still_complete(products, pixels, tmp_path):
    liar = sp.write_hirise_rdr(pixels[:600, :800], tmp_path / "liar", "LIAR", LAT, LON, label_size=(700, 800))
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00 not really a tiff")
    no_crs = sp.write_geotiff(pixels[:600, :800], tmp_path / "nocrs.tif", None, (0.0, 0.0), 1.0)
    report = tile_products([liar, garbage, products["tif"], no_crs], tmp_path / "tiles", 512, 128, progress=False)
    messages = [str(e) for e in report.failures]
    assert len(messages) == 2
    assert "label says 800 x 700 pixels but its image holds 800 x 600" in messages[0]
    assert "garbage.tif" in messages[1] and "cannot be read" in messages[1]
    assert set(report.entries) == {"ESP_TEST_0001_RED", "nocrs"}
    assert any("no CRS" in w for w in report.warnings)
    assert report.entries["nocrs"].crs_wkt is None


def test_footprints_layer_keeps_the_mars_crs(products, tmp_path):
    import pyogrio

    tile_products([products["tif"]], tmp_path, 1024, 256, progress=False)
    info = pyogrio.read_info(tmp_path / "tiles.gpkg", layer="tiles_ESP_TEST_0001_RED")
    assert info["features"] == 20
    assert "Equirectangular" in info["crs"] or "EQUIRECTANGULAR" in info["crs"].upper()


def test_the_sample_products_label_carries_a_real_observations_sun_and_view(tmp_path):
    """ESP_013951_1955_RED's angles, read back as written; the spacecraft azimuth the sample adds
    (RDR labels lack it) agrees with that label's phase angle: cos g = cos i cos e + sin i sin e cos dphi."""
    import math

    from al_loop.data.viewing import read_viewing

    label = sp.write_hirise_rdr(np.full((64, 64), 500, np.uint16), tmp_path, sp.SAMPLE_ID, *sp.SAMPLE_CENTRE,
                                viewing=sp.SAMPLE_VIEWING)
    viewing = read_viewing(label)
    assert (viewing.incidence_deg, viewing.emission_deg, viewing.sun_azimuth_deg) == (49.990076, 8.476113, 135.482409)
    assert viewing.assumed == "" and viewing.map_scale_m == SCALE
    i, e = math.radians(viewing.incidence_deg), math.radians(viewing.emission_deg)
    dphi = math.radians(viewing.spacecraft_azimuth_deg - viewing.sun_azimuth_deg)
    phase = math.degrees(math.acos(math.cos(i) * math.cos(e) + math.sin(i) * math.sin(e) * math.cos(dphi)))
    assert phase == pytest.approx(viewing.phase_deg, abs=0.01)
    with pytest.raises(ValueError, match="unknown viewing keys"):
        sp.viewing_group({"incidence_angle": 50.0})


def test_a_folder_of_products_is_tiled_product_by_product(pixels, tmp_path):
    """Issue 36: `tile FOLDER` gave a GDAL error and left empty folders; a folder laid out as `fetch`
    writes it (one folder per product, .LBL beside .JP2) is tiled product by product, the JP2
    through its label, and a folder with nothing to tile is refused before anything is created."""
    from al_loop.cli import main

    downloads = tmp_path / "products"
    for name in ("ESP_000001_1800_RED", "ESP_000002_1800_RED"):
        sp.write_hirise_rdr(pixels[:1200, :1600], downloads / name, name, LAT, LON, SCALE)
    (downloads / "notes.txt").write_text("not a product")
    report = tile_products([downloads], tmp_path / "tiles", 512, 128, progress=False)
    assert not report.failures
    assert set(report.entries) == {"ESP_000001_1800_RED", "ESP_000002_1800_RED"}
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "never"
    assert main(["tile", str(empty), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert main(["tile", str(tmp_path / "missing.LBL"), "--out", str(out), "--quiet"]) == 1
    assert not out.exists()  # a product that does not open leaves no folder behind
