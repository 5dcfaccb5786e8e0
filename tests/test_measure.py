"""`al-loop measure`: any outline over a product, measured in metres, with its depth from the
shadow along the label's sun (a HiRISE RDR written here: JP2 + PDS3 label with VIEWING_PARAMETERS)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from al_loop.cli import main
from al_loop.data import sample_products as sp
from al_loop.data.mars import lonlat_wkt, reproject
from al_loop.data.vectors import write_geojson

from .test_morphometry import render_pit

LAT, LON, SCALE, SIDE = -8.0, 240.0, 0.25, 400
DIAMETER_PX, DEPTH_PX, INCIDENCE, SUN = 80, 40, 50.0, 135.0  # 20 m across, 10 m deep; the sun to the lower right


@pytest.fixture
def product(tmp_path):
    """A 400 px product of terrain with one rendered pit in its middle, and the pit's outline
    (a circle, as an expert would draw it) as GeoJSON in Mars lon/lat."""
    pit, _ = render_pit(diameter_px=DIAMETER_PX, depth_px=DEPTH_PX, incidence=INCIDENCE, sun_azimuth=SUN)
    canvas = 0.6 + np.random.default_rng(1).normal(0, 0.02, (SIDE, SIDE)).astype(np.float32)
    top = (SIDE - pit.shape[0]) // 2
    canvas[top:top + pit.shape[0], top:top + pit.shape[1]] = pit
    dn = np.clip(np.round(canvas * 800) + 1, 1, 1023).astype(np.uint16)
    viewing = {"incidence": INCIDENCE, "emission": 0.0, "phase": INCIDENCE, "sun_azimuth": SUN}
    label = sp.write_hirise_rdr(dn, tmp_path / "rdr", "ESP_000001_1700_RED", LAT, LON, SCALE, viewing=viewing)
    bare = sp.write_hirise_rdr(dn, tmp_path / "bare", "ESP_000002_1700_RED", LAT, LON, SCALE)
    wkt = sp.equirectangular_wkt(LAT, LON)
    x0, y0 = sp.corner_for(LAT, SIDE, SIDE, SCALE)
    centre = (top + pit.shape[1] / 2 + 0.3, top + pit.shape[0] / 2 - 0.2)  # render_pit's centre, in (col, row)
    circle = shapely.Point(x0 + centre[0] * SCALE, y0 - centre[1] * SCALE).buffer(DIAMETER_PX / 2 * SCALE, 64)
    outlines = tmp_path / "outlines.geojson"
    write_geojson(outlines, [reproject(circle, wkt, lonlat_wkt())], {"name": ["P1"]})
    return label, bare, outlines


def read(path):
    import pyogrio.raw

    meta, _, _, values = pyogrio.raw.read(path, layer="measured")
    return {k: v[0] for k, v in zip(meta["fields"], values, strict=False)}


def test_measure_gives_diameter_and_depth_from_the_labels_sun(product, tmp_path, capsys):
    label, _, outlines = product
    assert main(["measure", str(outlines), str(label), "--out", str(tmp_path / "m.gpkg")]) == 0
    assert "1 outlines measured, 1 with a depth" in capsys.readouterr().out
    row = read(tmp_path / "m.gpkg")
    assert row["name"] == "P1"  # the layer's own columns travel with it
    assert row["diameter_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05)
    assert row["depth_m"] == pytest.approx(DEPTH_PX * SCALE, rel=0.15)
    assert not row["depth_is_minimum"] and row["incidence_deg"] == pytest.approx(INCIDENCE)
    assert row["depth_diameter"] == pytest.approx(DEPTH_PX / DIAMETER_PX, rel=0.2)
    assert row["shadow_length_m"] == pytest.approx(DEPTH_PX * SCALE * math.tan(math.radians(INCIDENCE)), rel=0.15)


def test_a_product_without_sun_geometry_gets_empty_depths_and_a_warning(product, tmp_path, capsys):
    _, bare, outlines = product
    assert main(["measure", str(outlines), str(bare), "--out", str(tmp_path / "b.gpkg")]) == 0
    assert "no sun geometry" in capsys.readouterr().err
    row = read(tmp_path / "b.gpkg")
    assert math.isnan(row["depth_m"]) and row["diameter_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05)
    assert main(["measure", str(tmp_path / "none.geojson"), str(bare), "--out", str(tmp_path / "c.gpkg")]) == 2
