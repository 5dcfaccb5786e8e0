"""Each product's coverage record (issue 35) and the searched area as GeoPackage layer metadata
(issue 34): from HiRISE-like products with PDS3 labels, through the library and `al-loop map
--catalogue --json`; every unknown value null with its reason."""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from al_loop.data import sample_products as sp
from al_loop.data.catalogue import read_catalogue
from al_loop.data.mars import to_lonlat
from al_loop.data.products import open_product, read_valid_mask
from al_loop.data.vectors import write_layer
from al_loop.science.coverage_record import NO_CATALOGUE, SMALLEST_DIAMETER_RULE, product_coverage

from .conftest import cli_here

LS = 113.928541  # a SOLAR_LONGITUDE as a HiRISE RDR label writes it, in VIEWING_PARAMETERS


def with_ls(label: Path, ls: float = LS) -> Path:
    """The label with ``SOLAR_LONGITUDE`` in its VIEWING_PARAMETERS group, where a HiRISE RDR keeps it."""
    text = label.read_text()
    assert "GROUP = VIEWING_PARAMETERS\n" in text
    label.write_text(text.replace("GROUP = VIEWING_PARAMETERS\n", f"GROUP = VIEWING_PARAMETERS\n  SOLAR_LONGITUDE = {ls} <DEG>\n"))
    return label


@functools.cache
def product_pixels() -> np.ndarray:
    """The sample product's terrain (a null corner top left: col + row < 512)."""
    from al_loop.data.synthetic import generate_tile

    return sp.mosaic([generate_tile(50_000 + i, 512).image for i in range(6)], 3)


def pixel_lonlat(label: Path, col: float, row: float) -> tuple[float, float]:
    """(lat, east lon) of a pixel of the product."""
    info = open_product(label)
    a, _, c, _, e, f = info.transform
    lon, lat = to_lonlat(info.crs_wkt, c + a * (col + 0.5), f + e * (row + 0.5))
    return float(lat), float(lon) % 360


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    label = with_ls(sp.write_hirise_rdr(product_pixels(), root / "rdr", "REC_000100_1710_RED", *sp.SAMPLE_CENTRE,
                                        viewing=sp.SAMPLE_VIEWING))
    return root, label


def test_a_labelled_product_gives_its_sun_view_season_scale_and_catalogue_counts(labelled):
    root, label = labelled
    inside, corner = pixel_lonlat(label, 1000, 700), pixel_lonlat(label, 40, 40)  # valid pixels; the null corner
    catalogue = root / "cat.csv"
    catalogue.write_text(f"id,lat,lon\nA,{inside[0]:.7f},{inside[1]:.7f}\nB,{corner[0]:.7f},{corner[1]:.7f}\nC,10,20\n")
    entries = read_catalogue(catalogue)
    record = product_coverage(label, entries, np.array([True, True, False]), pits=3)
    info = open_product(label)
    assert (record.incidence_deg, record.emission_deg, record.phase_deg) == (49.990076, 8.476113, 43.677223)
    assert record.solar_longitude_deg == LS and record.map_scale_m == 0.25
    assert record.smallest_diameter_m == pytest.approx(10 * 0.25)
    # the footprint is the valid pixels: an entry in the null corner is inside the raster's box but not searched
    assert record.catalogue_in_footprint == 1 and record.catalogue_found == 1 and record.recall == 1.0
    assert record.valid_area_m2 == pytest.approx(read_valid_mask(info).area_m2, rel=0.01)
    assert record.valid_area_m2 < 0.95 * info.width * info.height * 0.25**2
    summary = json.loads(json.dumps(record.summary()))
    assert summary["unknown"] == {} and summary["smallest_diameter_rule"] == SMALLEST_DIAMETER_RULE
    assert summary["recall"] == 1.0 and summary["solar_longitude_deg"] == LS and summary["pits"] == 3
    missed = product_coverage(label, entries, np.array([False, True, False]), pits=3)
    assert missed.catalogue_in_footprint == 1 and missed.catalogue_found == 0 and missed.recall == 0.0


def test_what_a_product_does_not_say_is_null_with_its_reason(labelled, tmp_path):
    root, label = labelled
    bare = sp.write_hirise_rdr(product_pixels(), tmp_path / "bare", "BARE_RED", *sp.SAMPLE_CENTRE,
                               viewing={"incidence": 30.0, "sun_azimuth": 90.0})  # no emission, phase or Ls
    record = product_coverage(bare, None, None, pits=0)
    why = json.loads(json.dumps(record.summary()))["unknown"]
    assert record.incidence_deg == 30.0 and record.emission_deg is None and record.phase_deg is None
    assert why["emission_deg"] == "the label has no EMISSION_ANGLE", "not the nadir the depth measure assumes"
    assert why["solar_longitude_deg"] == "the label has no SOLAR_LONGITUDE"
    assert record.catalogue_in_footprint is None and why["catalogue_found"] == why["recall"] == NO_CATALOGUE
    # a GeoTIFF: no label, so no angles; its scale from its transform
    tif = sp.write_geotiff(product_pixels(), tmp_path / "GEO.tif", sp.equirectangular_wkt(*sp.SAMPLE_CENTRE),
                           sp.corner_for(sp.SAMPLE_CENTRE[0], 1536, 1024, 0.5), 0.5)
    geo = product_coverage(tif, [], np.zeros(0, bool), pits=0)
    assert geo.map_scale_m == 0.5 and geo.smallest_diameter_m == pytest.approx(5.0) and geo.incidence_deg is None
    assert geo.why_unknown()["incidence_deg"].startswith("not a PDS3 label")
    assert geo.catalogue_in_footprint == 0 and geo.why_unknown()["recall"] == "no catalogue entry inside the area searched"
    # no CRS: no area, no scale, no smallest diameter, no footprint to count entries in
    flat = sp.write_geotiff(product_pixels(), tmp_path / "FLAT.tif", None, (0.0, 0.0), 1.0)
    none = product_coverage(flat, read_catalogue(root / "cat.csv"), np.zeros(3, bool), pits=0)
    assert none.valid_area_m2 is None and none.map_scale_m is None and none.smallest_diameter_m is None
    assert set(none.why_unknown()) >= {"valid_area_m2", "map_scale_m", "smallest_diameter_m", "catalogue_in_footprint",
                                       "recall"}
    assert "no CRS" in none.why_unknown()["valid_area_m2"]


def test_layer_metadata_is_written_and_gdal_reads_it_back(tmp_path):
    import pyogrio
    import shapely

    path = tmp_path / "m.gpkg"
    write_layer(path, "valid_X", [shapely.box(0, 0, 10, 10)], {"n": np.array([1])}, sp.equirectangular_wkt(0, 0),
                metadata={"valid_area_m2": 1234.5678901234567, "pixel_m": 0.25, "unknown": math.nan, "none": None})
    meta = pyogrio.read_info(path, layer="valid_X")["layer_metadata"]
    assert meta == {"valid_area_m2": "1234.5678901234567", "pixel_m": "0.25"}, "NaN and None are left out"
    assert float(meta["valid_area_m2"]) == 1234.5678901234567


# ---- through `al-loop map` ------------------------------------------------------------------------------------

COARSE = 4.0  # m/px: the sample's terrain over 6 x 4 km, so a catalogue entry can lie beyond compare's radius of every pit


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """The sample's terrain as a 4 m/px product with its label's sun, view and Ls, mapped by a decoder
    trained on the sample's training set: once without a catalogue, then with one placed from what
    the first map found (an entry on a pit, one on valid ground far from every pit, one in the null
    corner, one elsewhere on Mars)."""
    root = tmp_path_factory.mktemp("mapped")
    env = {**os.environ, "AL_LOOP_CACHE_DIR": str(root / "cache")}
    made = sp.write_sample_product(root / "s")
    label = with_ls(sp.write_hirise_rdr(product_pixels(), root / "rdr", "COARSE_000100_1710_RED", *sp.SAMPLE_CENTRE,
                                        scale=COARSE, viewing=sp.SAMPLE_VIEWING))
    trained = cli_here("train", "--dataset", made["training"], "--encoder", "filterbank", "--out", root / "dec.pt",
                       "--epochs", "40", "--quiet", cwd=root, env=env)
    assert trained.returncode == 0, trained.stderr
    first = cli_here("map", label, "--decoder", root / "dec.pt", "--out", root / "plain.gpkg", "--json",
                     root / "plain.json", "--no-quicklook", "--quiet", cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    catalogue = place_catalogue(root, label, root / "plain.gpkg")
    second = cli_here("map", label, "--decoder", root / "dec.pt", "--out", root / "pits.gpkg", "--json", root / "pits.json",
                      "--catalogue", catalogue, "--no-quicklook", "--quiet", cwd=root, env=env)
    assert second.returncode == 0, second.stderr
    return {"root": root, "label": label, "second": second}


def place_catalogue(root: Path, label: Path, gpkg: Path) -> Path:
    import pyogrio.raw

    info = open_product(label)
    meta, _, _, values = pyogrio.raw.read(gpkg, layer=f"pits_{info.product_id}", read_geometry=False)
    pits = dict(zip(meta["fields"], values, strict=True))
    assert len(pits["pit_id"]), "the decoder finds pits on the sample's terrain"
    # the valid pixel farthest from every pit, clear of the null corner (col + row < 512)
    cols, rows = np.meshgrid(np.arange(16, info.width - 16, 8), np.arange(16, info.height - 16, 8))
    keep = cols + rows > 600
    a, _, c, _, e, f = info.transform
    x, y = c + a * cols[keep], f + e * rows[keep]
    gap = np.hypot(x[:, None] - pits["centroid_x"], y[:, None] - pits["centroid_y"]).min(axis=1)
    best = int(gap.argmax())
    assert gap[best] > 2 * max(150.0, float(np.nanmax(pits["diameter_m"]))), "room beyond compare's radius of every pit"
    far = to_lonlat(info.crs_wkt, x[best], y[best])
    corner = pixel_lonlat(label, 60, 60)
    path = root / "catalogue.csv"
    path.write_text("id,lat,lon\n"
                    f"ON_PIT,{pits['centroid_lat'][0]:.7f},{pits['centroid_lon_e'][0]:.7f}\n"
                    f"MISSED,{float(far[1]):.7f},{float(far[0]) % 360:.7f}\n"
                    f"CORNER,{corner[0]:.7f},{corner[1]:.7f}\n"
                    "ELSEWHERE,10.0,20.0\n")
    return path


@pytest.mark.slow
def test_map_json_carries_each_products_record_with_reasons_for_what_is_unknown(mapped):
    root, label = mapped["root"], mapped["label"]
    pid = open_product(label).product_id
    plain = json.loads((root / "plain.json").read_text())["coverage"][pid]
    assert plain["catalogue_in_footprint"] is None and plain["recall"] is None
    assert plain["unknown"] == {"catalogue_in_footprint": NO_CATALOGUE, "catalogue_found": NO_CATALOGUE,
                                "recall": NO_CATALOGUE}
    summary = json.loads((root / "pits.json").read_text())
    record = summary["coverage"][pid]
    assert record["valid_area_m2"] == summary["valid_area_m2"][pid] and record["area_source"].startswith("valid pixels")
    assert (record["incidence_deg"], record["emission_deg"], record["phase_deg"]) == (49.990076, 8.476113, 43.677223)
    assert record["solar_longitude_deg"] == LS and record["map_scale_m"] == COARSE
    assert record["smallest_diameter_m"] == pytest.approx(10 * COARSE)
    # ON_PIT found, MISSED not; CORNER (null pixels, never searched) and ELSEWHERE are outside the footprint
    assert (record["catalogue_in_footprint"], record["catalogue_found"], record["recall"]) == (2, 1, 0.5)
    assert record["pits"] == summary["pits"][pid] and record["unknown"] == {}
    assert "1 of 2 catalogue entries in it found" in mapped["second"].stdout


@pytest.mark.slow
def test_map_writes_the_searched_area_as_layer_metadata_gdal_reads(mapped):
    import pyogrio
    import pyogrio.raw

    root, label = mapped["root"], mapped["label"]
    pid = open_product(label).product_id
    area = json.loads((root / "pits.json").read_text())["valid_area_m2"][pid]
    for layer in (f"valid_{pid}", f"pits_{pid}", "pits_lonlat"):
        meta = pyogrio.read_info(root / "pits.gpkg", layer=layer)["layer_metadata"]
        assert float(meta["valid_area_m2"]) == area and float(meta["pixel_m"]) == COARSE, layer
    meta, _, _, values = pyogrio.raw.read(root / "pits.gpkg", layer=f"valid_{pid}", read_geometry=False)
    assert dict(zip(meta["fields"], values, strict=True))["valid_area_m2"][0] == area, "the column and the metadata agree"
    assert area == pytest.approx(read_valid_mask(open_product(label)).area_m2, rel=0.01)


def test_a_catalogue_map_cannot_read_is_one_line_before_any_work(labelled, tmp_path):
    _, label = labelled
    bad = tmp_path / "bad.csv"
    bad.write_text("name,colour\nA,red\n")  # no latitude or longitude column
    for catalogue, words in ((tmp_path / "missing.csv", "no such catalogue file"), (bad, "bad.csv")):
        # the decoder does not exist either: the catalogue is read first, so its error is the one told
        done = cli_here("map", label, "--decoder", tmp_path / "none.pt", "--out", tmp_path / "pits.gpkg", "--catalogue",
                        catalogue, "--quiet", cwd=tmp_path, env=dict(os.environ))
        assert done.returncode != 0 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "pits.gpkg").exists() and not (tmp_path / "pits-tiles").exists()
