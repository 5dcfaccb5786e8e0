"""The map a new user gets: a sample product to try it on, pits within sizes a decoder learned,
outlines without the pixel staircase, and a quicklook with its own colour scale, scale bar,
north arrow and the expert's boxes over it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pyproj import CRS

from al_loop.data import sample_products as sp

from .conftest import cli_here


def run(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "al_loop.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **env})


def run_here(*args, cwd, env):
    """``run`` by ``al_loop.cli.main`` in this process (conftest's ``cli_here``): for the maps that vary
    a flag of the sample's map, which ``sample`` ran in a child already."""
    return cli_here(*args, cwd=cwd, env={**os.environ, **env})


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """`al-loop sample --product`, then the two commands it prints, as the README runs them."""
    root = tmp_path_factory.mktemp("sample")
    env = {"AL_LOOP_CACHE_DIR": str(root / "cache")}
    made = run("sample", "--product", root / "s", cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    trained = run("train", "--dataset", root / "s" / "training", "--encoder", "filterbank", "--out", root / "dec.pt",
                  "--epochs", "40", "--quiet", cwd=root, env=env)
    assert trained.returncode == 0, trained.stderr
    label = root / "s" / "product" / f"{sp.SAMPLE_ID}.LBL"
    mapped = run("map", label, "--decoder", root / "dec.pt", "--out", root / "pits.gpkg", "--geojson",
                 root / "pits.geojson", "--overlay", root / "s" / "expert_boxes.geojson", "--quiet", cwd=root, env=env)
    return root, made, mapped, env


def pit_table(path, layer):
    import pyogrio.raw
    import shapely

    meta, _, geometry, fields = pyogrio.raw.read(path, layer=layer)
    return shapely.from_wkb(geometry), dict(zip(meta["fields"], fields, strict=False))


def test_the_sample_product_is_a_georeferenced_mars_product_with_its_expert_boxes(sample):
    import rasterio
    import shapely

    root, made, _, _ = sample
    assert "al-loop train --dataset" in made.stdout and "al-loop map" in made.stdout
    with rasterio.open(root / "s" / "product" / f"{sp.SAMPLE_ID}.LBL") as src:
        assert CRS.from_wkt(src.crs.to_wkt()).ellipsoid.semi_major_metre == pytest.approx(3396190.0)
        assert src.res == pytest.approx((0.25, 0.25)) and src.shape == (1024, 1536)
    boxes = json.loads((root / "s" / "expert_boxes.geojson").read_text())
    assert boxes["crs"]["properties"]["name"] == "IAU_2015:49900" and len(boxes["features"]) >= 3
    lat, lon = sp.SAMPLE_CENTRE
    for feature in boxes["features"]:
        centre = shapely.geometry.shape(feature["geometry"]).centroid
        assert abs(centre.y - lat) < 0.01 and abs(centre.x % 360 - lon) < 0.01  # ~600 m: on the product


def test_the_sample_maps_without_weights_and_finds_its_pits_within_the_learned_sizes(sample):
    import shapely

    root, _, mapped, _ = sample
    assert mapped.returncode == 0, mapped.stderr
    # no library chatter (the .partial name once made GDAL warn): the sample's label carries a real
    # observation's sun and view, so nothing needs saying
    warnings = [line for line in mapped.stderr.splitlines() if "warning" in line.lower()]
    assert not warnings, mapped.stderr
    line = next(x for x in mapped.stdout.splitlines() if x.startswith(sp.SAMPLE_ID))
    low, high = (float(v) for v in line.split(" within ")[1].split(" m2")[0].split("-"))
    outlines, table = pit_table(root / "pits.gpkg", f"pits_{sp.SAMPLE_ID}")
    assert len(outlines) >= 2 and all(low <= a <= high for a in table["area_m2"])
    # data.yaml names two types, so the decoder learned both and every pit says which it is
    assert set(table["class"]) <= {"pit", "skylight"} and all(0.5 <= p <= 1 for p in table["type_prob"])
    boxes = json.loads((root / "s" / "expert_boxes.geojson").read_text())["features"]
    lonlat, _ = pit_table(root / "pits.gpkg", "pits_lonlat")
    found = [any(shapely.geometry.shape(b["geometry"]).intersects(p) for p in lonlat) for b in boxes]
    assert sum(found) >= len(boxes) / 2, f"{sum(found)} of {len(boxes)} expert boxes have a mapped pit on them"
    assert (root / f"pits_{sp.SAMPLE_ID}_quicklook.png").stat().st_size > 20_000


def test_the_sample_map_records_the_area_it_searched_without_the_null_corner(sample):
    """`map` writes valid_<product>: the product's valid pixels (its null corner left out), with their area."""
    from al_loop.data.products import open_product, read_valid_mask

    root, _, mapped, _ = sample
    assert mapped.returncode == 0, mapped.stderr
    outlines, table = pit_table(root / "pits.gpkg", f"valid_{sp.SAMPLE_ID}")
    product = open_product(root / "s" / "product" / f"{sp.SAMPLE_ID}.LBL")
    full = product.width * product.height * product.pixel_size**2
    valid = read_valid_mask(product).area_m2
    assert valid < 0.95 * full  # the sample's null corner is a sixth of its first tile
    assert table["valid_area_m2"][0] == pytest.approx(valid, rel=0.01) and table["pixel_m"][0] == pytest.approx(0.25)
    assert outlines[0].area == pytest.approx(valid, rel=0.01)  # equirectangular at its own latitude: true to scale


def test_size_limits_and_threshold_leave_pits_out_and_say_how_many(sample, tmp_path):
    root, _, _, env = sample
    _, table = pit_table(root / "pits.gpkg", f"pits_{sp.SAMPLE_ID}")
    cut = float(np.median(table["area_m2"]))
    label = root / "s" / "product" / f"{sp.SAMPLE_ID}.LBL"
    args = ("--decoder", root / "dec.pt", "--tiles", root / "pits-tiles", "--no-quicklook", "--quiet")
    limited = run_here("map", label, "--out", tmp_path / "small.gpkg", "--max-area-m2", cut, "--min-area-m2", 0, *args,
                  cwd=tmp_path, env=env)
    assert limited.returncode == 0, limited.stderr
    _, small = pit_table(tmp_path / "small.gpkg", f"pits_{sp.SAMPLE_ID}")
    larger = int((table["area_m2"] > cut).sum())
    assert len(small["area_m2"]) >= len(table["area_m2"]) - larger and max(small["area_m2"]) <= cut
    assert f"{larger} larger left out" in limited.stdout or larger == 0
    strict = run_here("map", label, "--out", tmp_path / "strict.gpkg", "--threshold", "0.95", *args, cwd=tmp_path, env=env)
    _, few = pit_table(tmp_path / "strict.gpkg", f"pits_{sp.SAMPLE_ID}") if strict.returncode == 0 else (None, {"area_m2": []})
    assert sum(few["area_m2"]) < sum(table["area_m2"])  # a higher threshold maps less pit
    bad = run("map", label, "--out", tmp_path / "x.gpkg", "--threshold", "1.5", *args, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "not a probability" in bad.stderr


def test_outlines_lose_the_staircase_but_not_their_shape():
    import shapely
    from rasterio.features import shapes

    from al_loop.mapping.assemble import simplify_outline

    yy, xx = np.mgrid[0:64, 0:64]
    disc = (((yy - 32) ** 2 + (xx - 31) ** 2) <= 16**2).astype(np.uint8)
    pixels = shapely.geometry.shape(next(g for g, _ in shapes(disc, mask=disc > 0)))
    simple = simplify_outline(pixels, 1.0)
    assert simple.is_valid and len(simple.exterior.coords) < len(pixels.exterior.coords) / 2
    assert simple.hausdorff_distance(pixels) <= 0.75 + 1e-9
    assert simple.area == pytest.approx(pixels.area, rel=0.02)
    ring = shapely.box(0, 0, 40, 40).difference(shapely.box(15, 15, 25, 25))  # a pit with a hole keeps it
    assert len(simplify_outline(ring, 1.0).interiors) == 1


def test_quicklook_scales_north_and_overlay():
    from al_loop.data.tiling import ProductEntry
    from al_loop.mapping.outputs import confidence_scale, nice_length, north_direction

    scale = confidence_scale([0.56, 0.61, 0.76])
    assert (scale.vmin, scale.vmax) == (0.56, 0.76)  # the pits' own span, not 0.5-1
    assert nice_length(137.0) == 100 and nice_length(0.26 * 1536 * 0.25) == 50
    eqc = sp.equirectangular_wkt(-10.0, 130.0)
    up = ProductEntry("p", "", 1000, 1000, eqc, (0.25, 0.0, 0.0, 0.0, -0.25, -1e6), None, (0, 1), 512, 0)
    assert north_direction(up) == pytest.approx((0.0, -1.0), abs=1e-3)
    # South polar stereographic, the product 100 km along +x from the pole: north points away from the pole.
    polar = CRS.from_proj4("+proj=stere +lat_0=-90 +lon_0=0 +R=3396190 +units=m").to_wkt()
    away = ProductEntry("q", "", 1000, 1000, polar, (1.0, 0.0, 99500.0, 0.0, -1.0, 500.0), None, (0, 1), 512, 0)
    assert north_direction(away) == pytest.approx((1.0, 0.0), abs=1e-3)


def test_an_overlay_gdal_cannot_read_is_a_clear_error(sample, tmp_path):
    root, _, _, env = sample
    junk = tmp_path / "boxes.geojson"
    junk.write_text("not json")
    label = root / "s" / "product" / f"{sp.SAMPLE_ID}.LBL"
    result = run_here("map", label, "--decoder", root / "dec.pt", "--tiles", root / "pits-tiles", "--out",
                      tmp_path / "o.gpkg", "--overlay", junk, "--quiet", cwd=tmp_path, env=env)
    assert result.returncode == 2 and "--overlay" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.gpkg").exists()


def test_the_quicklooks_lat_lon_ticks_sit_where_the_frame_has_those_coordinates(tmp_path):
    """Each longitude tick lies where the bottom edge has that longitude, each latitude tick where
    the left edge has that latitude (to the label's digits); the quicklook draws them with the pit
    ids and the sun's arrow."""
    import re

    import shapely
    from affine import Affine

    from al_loop.data.mars import to_lonlat
    from al_loop.data.tiling import tile_products
    from al_loop.data.viewing import read_viewing
    from al_loop.mapping.outputs import lonlat_ticks, overview_from_tiles, write_quicklook

    pixels = np.full((900, 1300), 500, np.uint16)
    label = sp.write_hirise_rdr(pixels, tmp_path / "p", "TICKS", -8.8, 239.3,
                                viewing={"incidence": 50.0, "emission": 5.0, "phase": 48.0, "sun_azimuth": 200.0})
    entry = tile_products([label], tmp_path / "tiles", 512, 128, progress=False).entries["TICKS"]
    overview, factor = overview_from_tiles(entry, tmp_path / "tiles")
    (x, x_labels), (y, y_labels) = lonlat_ticks(entry, factor, overview.shape)
    assert len(x) >= 2 and len(y) >= 2
    t = Affine(*entry.transform)
    for position, text in zip(x, x_labels, strict=True):
        lon, _ = to_lonlat(entry.crs_wkt, *(t @ (position * factor, overview.shape[0] * factor)))
        value, digits = float(text.rstrip("°E")), len(text.rstrip("°E").split(".")[1])
        assert text.endswith("°E") and abs(float(lon) % 360 - value) < 0.6 * 10.0**-digits
    for position, text in zip(y, y_labels, strict=True):
        _, lat = to_lonlat(entry.crs_wkt, *(t @ (0.0, position * factor)))
        assert re.fullmatch(r"[0-9.]+°S", text) and abs(-float(text[:-2]) - float(lat)) < 1e-9 + 0.6 * 10.0**-len(text[:-2].split(".")[1])
    a, _, c, _, e, f = entry.transform
    path = write_quicklook(tmp_path / "ql.png", entry, tmp_path / "tiles", [shapely.Point(c + a * 300, f + e * 300).buffer(5)],
                           [0.8], pit_ids=[7], viewing=read_viewing(label))
    assert path.stat().st_size > 10_000
