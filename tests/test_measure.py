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
from al_loop.data.render import CylinderPit, Sun, render_scene, to_dn
from al_loop.data.vectors import write_geojson

LAT, LON, SCALE, SIDE = -8.0, 240.0, 0.25, 400
DIAMETER_PX, DEPTH_PX, INCIDENCE, SUN = 80, 40, 50.0, 135.0  # 20 m across, 10 m deep; the sun to the lower right
EMISSION, SPACECRAFT = 15.0, 225.0  # seen 15 degrees off nadir, 90 degrees of azimuth from the sun


@pytest.fixture
def product(tmp_path):
    """A 400 px product of terrain with one ray-cast pit in its middle, seen obliquely, as a HiRISE
    RDR whose label gives the sun and view (and one whose label gives none, one without emission),
    and the pit's outline (a circle, as an expert would draw it) as GeoJSON in Mars lon/lat."""
    centre = (SIDE / 2 + 0.3, SIDE / 2 - 0.2)
    pit = CylinderPit(*centre, DIAMETER_PX, DEPTH_PX)
    dn = to_dn(render_scene((SIDE, SIDE), [pit], Sun(INCIDENCE, SUN, EMISSION, SPACECRAFT), seed=1))
    viewing = {"incidence": INCIDENCE, "emission": EMISSION, "sun_azimuth": SUN, "spacecraft_azimuth": SPACECRAFT}
    label = sp.write_hirise_rdr(dn, tmp_path / "rdr", "ESP_000001_1700_RED", LAT, LON, SCALE, viewing=viewing)
    bare = sp.write_hirise_rdr(dn, tmp_path / "bare", "ESP_000002_1700_RED", LAT, LON, SCALE)
    no_emission = sp.write_hirise_rdr(dn, tmp_path / "noemission", "ESP_000003_1700_RED", LAT, LON, SCALE,
                                      viewing={"incidence": INCIDENCE, "sun_azimuth": SUN})
    wkt = sp.equirectangular_wkt(LAT, LON)
    x0, y0 = sp.corner_for(LAT, SIDE, SIDE, SCALE)
    # pixel centres are at integers; the corner is the first pixel's outer corner
    circle = shapely.Point(x0 + (centre[0] + 0.5) * SCALE, y0 - (centre[1] + 0.5) * SCALE).buffer(
        DIAMETER_PX / 2 * SCALE, 64)
    outlines = tmp_path / "outlines.geojson"
    write_geojson(outlines, [reproject(circle, wkt, lonlat_wkt())], {"name": ["P1"]})
    return label, bare, outlines, no_emission


def read(path):
    import pyogrio.raw

    meta, _, _, values = pyogrio.raw.read(path, layer="measured")
    return {k: v[0] for k, v in zip(meta["fields"], values, strict=False)}


def test_measure_gives_diameter_and_depth_under_the_labels_sun_and_view(product, tmp_path, capsys):
    label, _, outlines, _ = product
    assert main(["measure", str(outlines), str(label), "--out", str(tmp_path / "m.gpkg")]) == 0
    assert "1 outlines measured, 1 with a depth" in capsys.readouterr().out
    row = read(tmp_path / "m.gpkg")
    assert row["name"] == "P1"  # the layer's own columns travel with it
    assert row["diameter_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05)
    assert row["feret_max_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05) and row["axis_ratio"] > 0.95
    assert row["depth_m"] == pytest.approx(DEPTH_PX * SCALE, rel=0.15) and row["depth_method"] == "shadow"
    assert 0 < row["depth_err_m"] < 0.15 * row["depth_m"] and not row["depth_is_minimum"]
    assert row["incidence_deg"] == pytest.approx(INCIDENCE) and row["emission_deg"] == pytest.approx(EMISSION)
    assert row["spacecraft_azimuth_deg"] == pytest.approx((SPACECRAFT - 270.0) % 360)  # compass, from the label
    assert row["d_over_D"] == pytest.approx(DEPTH_PX / DIAMETER_PX, rel=0.2)


def test_a_product_without_sun_geometry_gets_empty_depths_and_a_warning(product, tmp_path, capsys):
    _, bare, outlines, _ = product
    assert main(["measure", str(outlines), str(bare), "--out", str(tmp_path / "b.gpkg")]) == 0
    assert "no sun geometry" in capsys.readouterr().err
    row = read(tmp_path / "b.gpkg")
    assert math.isnan(row["depth_m"]) and row["diameter_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05)
    assert row["depth_method"] == "no-geometry"
    assert main(["measure", str(tmp_path / "none.geojson"), str(bare), "--out", str(tmp_path / "c.gpkg")]) == 2


def test_a_label_without_emission_is_measured_as_nadir_and_says_so(product, tmp_path, capsys):
    """Not an error, and not every depth dropped: nadir assumed, flagged, and a wider error."""
    label, _, outlines, no_emission = product
    assert main(["measure", str(outlines), str(no_emission), "--out", str(tmp_path / "n.gpkg")]) == 0
    assert "nadir assumed" in capsys.readouterr().err
    assumed = read(tmp_path / "n.gpkg")
    assert assumed["depth_m"] > 0 and "nadir assumed" in assumed["depth_note"]
    assert main(["measure", str(outlines), str(label), "--out", str(tmp_path / "m.gpkg")]) == 0
    assert assumed["depth_err_m"] > 2 * read(tmp_path / "m.gpkg")["depth_err_m"]


def test_an_empty_layer_is_refused_in_one_line_and_nothing_is_written(product, tmp_path, capsys):
    _, bare, _, _ = product
    empty = tmp_path / "empty.gpkg"
    from al_loop.data.vectors import write_layer

    write_layer(empty, "outlines", [], {"name": np.array([], dtype=object)}, lonlat_wkt())
    out = tmp_path / "e.gpkg"
    assert main(["measure", str(empty), str(bare), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no polygons" in err and "outlines" in err
    assert not out.exists()


def test_the_pixel_size_comes_from_the_transform_not_the_mask():
    """A projected product's pixel is its transform's; a lon/lat one's is a pixel projected onto the
    equal-area CRS (1e-5 degrees at 8.8 S: 0.593 m north-south, 0.586 m east-west)."""
    from al_loop.data.mars import equal_area_crs
    from al_loop.science.pit_measures import pixel_size_m

    wkt = sp.equirectangular_wkt(LAT, LON)
    assert pixel_size_m((SCALE, 0.0, 100.0, 0.0, -SCALE, -5e5), wkt, equal_area_crs(wkt, LON, LAT)) == SCALE
    lonlat = lonlat_wkt()
    degree = math.radians(1e-5) * sp.MARS_RADIUS_M
    side = pixel_size_m((1e-5, 0.0, LON, 0.0, -1e-5, LAT), lonlat, equal_area_crs(lonlat, LON, LAT))
    assert side == pytest.approx(degree * math.sqrt(math.cos(math.radians(LAT))), rel=1e-3)
