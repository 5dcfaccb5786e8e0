"""A pit map in the forms planetary tools read: JMARS CSV, craterstats .diam, size-frequency."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import shapely

from al_loop.cli import main
from al_loop.data import sample_products as sp
from al_loop.data.mars import lonlat_wkt, reproject
from al_loop.data.vectors import write_layer
from al_loop.science.exports import size_frequency

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


def test_size_frequency_counts_and_root2_bins():
    sfd = size_frequency(np.array([10.0, 20.0, 40.0, 80.0, 11.0]), area_km2=2.0)
    assert list(sfd["d_m"]) == [80, 40, 20, 11, 10] and list(sfd["cumulative"]) == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert sfd["counts"].sum() == 5
    widths = sfd["bin_centre_m"] * (2**0.25 - 2**-0.25) / 1000  # a root-2 bin's width, in km
    assert (sfd["differential"] * 2.0 * widths) == pytest.approx(sfd["counts"])


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
