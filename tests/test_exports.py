"""A pit map in the forms planetary tools read: JMARS CSV, craterstats .diam, size-frequency."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import shapely

from al_loop.cli import main
from al_loop.data import sample_products as sp
from al_loop.data.mars import lonlat_wkt, reproject
from al_loop.data.vectors import write_layer
from al_loop.errors import UsageError
from al_loop.science.exports import poisson_limits, size_frequency, write_exports

LAT, LON, SCALE = -8.0, 240.0, 0.25
SIDE = 4000  # px: a 1 km x 1 km footprint


@pytest.fixture
def pit_map(tmp_path):
    """A map GeoPackage as `al-loop map` writes one: a footprint of two overlapping tiles (1 km2 in
    all) and four round pits of known diameters in pits_lonlat."""
    wkt = sp.equirectangular_wkt(LAT, LON)
    x0, y0 = sp.corner_for(LAT, SIDE, SIDE, SCALE)
    half = SIDE * SCALE
    tiles = [shapely.box(x0, y0 - half, x0 + 0.6 * half, y0), shapely.box(x0 + 0.4 * half, y0 - half, x0 + half, y0)]
    gpkg = tmp_path / "pits.gpkg"
    write_layer(gpkg, "tiles_P", tiles, {"file": ["a.png", "b.png"]}, wkt)
    diameters = [10.0, 20.0, 40.0, 80.0]
    pits = [shapely.Point(x0 + 100 + 200 * i, y0 - 500).buffer(d / 2, 64) for i, d in enumerate(diameters)]
    lonlat = [reproject(p, wkt, lonlat_wkt()) for p in pits]
    write_layer(gpkg, "pits_lonlat", lonlat, {"pit_id": np.arange(1, 5), "diam_eq_m": np.array(diameters),
                                               "confidence": np.array([0.6, 0.7, 0.8, float("nan")])}, lonlat_wkt())
    return gpkg, diameters


def test_size_frequency_bins_are_the_catwg_root2_bins_anchored_at_1_km():
    sfd = size_frequency(np.array([10.0, 20.0, 40.0, 80.0, 11.0, 1000.0]), area_km2=2.0, pixel_m=0.25)
    # 2*log2(10/1000) = -13.3: the lowest edge is 1000 * 2^(-14/2) = 7.8125 m; 1000 m opens the bin [1000, 1414)
    assert sfd.d_low_m[0] == 7.8125 and sfd.d_low_m[-1] == 1000.0 and sfd.d_high_m[-1] == pytest.approx(1000 * 2**0.5)
    assert sfd.d_high_m / sfd.d_low_m == pytest.approx(np.full(len(sfd.n), 2**0.5))
    assert list(sfd.n[:7]) == [2, 0, 1, 0, 1, 0, 1]  # [7.8, 11.0): 10 and 11; [15.6, 22.1): 20; [31.3, 44.2): 40; [62.5, 88.4): 80
    assert sfd.n.sum() == 6 and sfd.density_per_km2 == pytest.approx(sfd.n / 2.0)
    assert list(sfd.d_m[:2]) == [1000, 80] and sfd.cumulative[-1] == 3.0  # 6 pits over 2 km2
    assert sfd.completeness_m == 2.5 and sfd.complete.all()  # 10 px of 0.25 m
    assert not size_frequency(np.array([10.0, 40.0]), 1.0, pixel_m=1.5).complete[0]  # 15 m: [7.8, 11) is below it


@pytest.mark.parametrize("n, lower, upper", [(0, 0.0, 1.841), (1, 0.173, 3.300), (2, 0.708, 4.638), (10, 6.891, 14.27)])
def test_poisson_limits_are_gehrels_1986_one_sigma(n, lower, upper):
    """Gehrels (1986), Tables 1 and 2, S = 1 (the exact limits, to the tables' digits)."""
    low, high = poisson_limits(np.array([n]))
    assert low[0] == pytest.approx(lower, abs=6e-4) and high[0] == pytest.approx(upper, abs=6e-3)


def test_sfd_writes_its_table_beside_the_plot(pit_map, tmp_path):
    gpkg, diameters = pit_map
    result = write_exports(gpkg, sfd=tmp_path / "out" / "sfd.png", area_km2=0.5, pixel_m=2.0)
    assert [p.name for p in result.written] == ["sfd.png", "sfd.csv"] and (tmp_path / "out" / "sfd.png").stat().st_size > 10_000
    rows = list(csv.DictReader((tmp_path / "out" / "sfd.csv").open()))
    assert list(rows[0])[:6] == ["D_low_m", "D_high_m", "n", "density_per_km2", "err_low", "err_high"]
    assert sum(int(r["n"]) for r in rows) == len(diameters)
    for r in rows:
        n, low, high = int(r["n"]), *poisson_limits(np.array([int(r["n"])]))
        assert float(r["density_per_km2"]) == pytest.approx(n / 0.5, rel=1e-5)
        assert float(r["err_low"]) == pytest.approx((n - low[0]) / 0.5, rel=1e-5)
        assert float(r["err_high"]) == pytest.approx((high[0] - n) / 0.5, rel=1e-5)
        assert (r["complete"] == "True") is (float(r["D_low_m"]) >= 20.0)  # 10 px of 2 m


def test_a_layer_in_the_products_crs_gives_the_jmars_positions_of_its_lonlat_twin(tmp_path):
    """`measure` writes its layer in the product's projected CRS: its metres must not be read as degrees."""
    wkt = sp.equirectangular_wkt(-5.5, LON)
    x0, y0 = sp.corner_for(-5.5, SIDE, SIDE, SCALE)
    pits = [shapely.Point(x0 + 100 + 200 * i, y0 - 500).buffer(15, 32) for i in range(3)]
    columns = {"diameter_m": np.array([30.0, 31.0, 32.0]), "depth_m": np.array([5.0, np.nan, 7.0])}
    write_layer(tmp_path / "m.gpkg", "measured", pits, columns, wkt)
    write_layer(tmp_path / "t.gpkg", "pits", [reproject(p, wkt, lonlat_wkt()) for p in pits], columns, lonlat_wkt())
    write_exports(tmp_path / "m.gpkg", "measured", jmars=tmp_path / "m.csv")
    write_exports(tmp_path / "t.gpkg", "pits", jmars=tmp_path / "t.csv")
    measured, twin = (list(csv.DictReader((tmp_path / n).open())) for n in ("m.csv", "t.csv"))
    for a, b in zip(measured, twin, strict=True):
        assert abs(float(a["latitude"]) - float(b["latitude"])) < 1e-6 and abs(float(a["longitude"]) - float(b["longitude"])) < 1e-6
        assert abs(float(a["latitude"]) + 5.5) < 0.01 and abs(float(a["longitude"]) - LON) < 0.01
    assert [r["depth_m"] for r in measured] == ["5.0", "", "7.0"]


def test_a_layer_without_a_crs_or_without_pits_is_refused_and_nothing_is_written(tmp_path):
    write_layer(tmp_path / "bare.gpkg", "pits", [shapely.Point(1, 1).buffer(1)], {"diameter_m": np.array([2.0])}, None)
    with pytest.raises(UsageError, match="layer pits has no CRS") as caught:
        write_exports(tmp_path / "bare.gpkg", "pits", jmars=tmp_path / "a.csv")
    assert str(tmp_path / "bare.gpkg") in str(caught.value) and "\n" not in str(caught.value)
    write_layer(tmp_path / "empty.gpkg", "pits", [], {"diameter_m": np.array([], float)}, lonlat_wkt())
    with pytest.raises(UsageError, match="holds no pits"):
        write_exports(tmp_path / "empty.gpkg", "pits", jmars=tmp_path / "a.csv", area_km2=1.0)
    assert not (tmp_path / "a.csv").exists()


def test_the_searched_area_is_the_maps_valid_pixels_when_it_has_them(pit_map, tmp_path):
    """A valid_<product> layer (what `map` writes) wins over the tile outlines, which keep null borders."""
    gpkg, diameters = pit_map
    wkt = sp.equirectangular_wkt(LAT, LON)
    write_layer(gpkg, "valid_P", [shapely.box(0, 0, 1, 1)], {"valid_area_m2": np.array([0.7e6]), "pixel_m": np.array([SCALE])}, wkt)
    result = write_exports(gpkg, diam=tmp_path / "p.diam", sfd=tmp_path / "s.png")
    assert result.area.area_km2 == pytest.approx(0.7) and result.area.pixel_m == SCALE and not result.warnings
    assert "area = 0.7\n" in (tmp_path / "p.diam").read_text()
    assert math.isclose(size_frequency(np.array(diameters), 0.7, SCALE).completeness_m, 2.5)


def test_export_writes_jmars_csv_diam_and_plot(pit_map, tmp_path, capsys):
    gpkg, diameters = pit_map
    out = tmp_path / "out"
    assert main(["export", str(gpkg), "--jmars", str(out / "p.csv"), "--craterstats", str(out / "p.diam"),
                 "--sfd", str(out / "sfd.png")]) == 0
    rows = list(csv.DictReader((out / "p.csv").open()))
    assert [float(r["diameter_m"]) for r in rows] == diameters
    assert all(abs(float(r["latitude"]) - LAT) < 0.02 and abs(float(r["longitude"]) - LON) < 0.02 for r in rows)
    assert rows[3]["confidence"] == ""  # NaN is an empty cell, not "nan"
    text = (out / "p.diam").read_text()
    area = float(next(line for line in text.splitlines() if line.startswith("area =")).split("=")[1])
    assert area == pytest.approx(1.0, rel=0.005)  # the union of the two overlapping tiles: 1 km2
    body = text.split("crater = {diameter, fraction, lon, lat\n")[1].split("}")[0].split()
    assert [float(v) for v in body[0::4]] == pytest.approx([d / 1000 for d in diameters])
    assert (out / "sfd.png").stat().st_size > 10_000


def test_export_without_footprints_needs_the_area(tmp_path, capsys):
    gpkg = tmp_path / "other.gpkg"
    write_layer(gpkg, "pits_lonlat", [shapely.Point(240, -8).buffer(0.001)], {"diam_eq_m": np.array([50.0])},
                lonlat_wkt())
    assert main(["export", str(gpkg), "--craterstats", str(tmp_path / "x.diam")]) == 2
    assert "--area-km2" in capsys.readouterr().err and not (tmp_path / "x.diam").exists()
    assert main(["export", str(gpkg), "--craterstats", str(tmp_path / "x.diam"), "--area-km2", "2.5"]) == 0
    assert "area = 2.5" in (tmp_path / "x.diam").read_text()
    assert main(["export", str(gpkg), "--layer", "nope", "--jmars", str(tmp_path / "y.csv")]) == 2
    assert "no layer 'nope'" in capsys.readouterr().err
