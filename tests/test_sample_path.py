"""The sample product shows real output along the whole path (issue 36): its label carries a real
observation's sun and view and its pits are shaded by that sun, so `measure` gives depths; it
lies on a real MGC3 candidate, so `compare` against the catalogue finds an entry in it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from al_loop.data import sample_products as sp
from al_loop.data.synthetic import generate_tile

from .conftest import ROOT

MGC3 = ROOT.parent / "shared" / "data" / "mgc3" / "mars_cave_catalog.csv"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """The sample product, and its pits' true outlines (the ellipses the generator drew)."""
    import shapely
    import shapely.affinity

    from al_loop.data.products import open_product
    from al_loop.data.vectors import write_layer

    root = tmp_path_factory.mktemp("sample")
    made = sp.write_sample_product(root)
    product = open_product(made["product"])
    a, _, c, _, e, f = product.transform
    light = math.radians(sp.SAMPLE_VIEWING["sun_azimuth"]) + math.pi
    outlines = []
    for i in range(6):  # write_sample_product's 3 x 2 tiles of 512 px, seed 0
        row, col = divmod(i, 3)
        for x0, y0, x1, y1 in generate_tile(50_000 + i, 512, light_azimuth=light).boxes:
            cx, cy = (x0 + x1) / 2 + col * 512, (y0 + y1) / 2 + row * 512
            disc = shapely.Point(c + a * cx, f + e * cy).buffer(1, 64)
            outlines.append(shapely.affinity.scale(disc, (x1 - x0) / 2 * a, (y1 - y0) / 2 * abs(e)))
    layer = root / "outlines.gpkg"
    write_layer(layer, "pits", outlines, {"n": np.arange(len(outlines))}, product.crs_wkt)
    return {**made, "outlines": layer, "root": root}


def test_the_sample_pits_get_depths_from_the_labels_sun(sample):
    from al_loop.science.pit_measures import measure_layer

    report = measure_layer(sample["outlines"], sample["product"], sample["root"] / "measured.gpkg")
    depths = [r for r in report.rows if r["depth_m"] == r["depth_m"]]
    # the generator's shadows used to fall by a random sun per tile: no pit had a depth
    assert len(depths) >= 0.7 * len(report.rows) and len(report.rows) >= 5
    assert all(0 < r["d_over_D"] < 1.5 and r["depth_err_m"] > 0 for r in depths)


@pytest.mark.skipif(not MGC3.is_file(), reason=f"the MGC3 catalogue is not at {MGC3}")
def test_the_sample_lies_on_a_real_mgc3_candidate(sample):
    from al_loop.science.compare import compare_map

    report = compare_map(sample["outlines"], MGC3, sample["root"] / "compared.gpkg", products=[sample["product"]])
    assert report.counts["matched"] == 1  # CC0203, at the product's centre, paired with one pit
    assert not report.empty  # the footprint holds a catalogue entry


def test_the_light_of_the_generator_follows_the_labels_sun():
    """The label's SUB_SOLAR_AZIMUTH points to the sun: the shadow lies on the sun's side of the floor."""
    light = math.radians(sp.SAMPLE_VIEWING["sun_azimuth"]) + math.pi
    tile = generate_tile(50_000, 512, light_azimuth=light)
    x0, y0, x1, y1 = tile.boxes[0]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    to_sun = np.array([math.cos(math.radians(sp.SAMPLE_VIEWING["sun_azimuth"])),
                       math.sin(math.radians(sp.SAMPLE_VIEWING["sun_azimuth"]))])
    r = 0.7 * min(x1 - x0, y1 - y0) / 2
    sun_side = tile.image[int(cy + r * to_sun[1]), int(cx + r * to_sun[0])]
    far_side = tile.image[int(cy - r * to_sun[1]), int(cx - r * to_sun[0])]
    assert sun_side < 30 < far_side
