"""Pit morphometry: sun and view from a real HiRISE label, shape of outlines, and the depth code's
answers where there is nothing to measure. Depth under oblique views, against ray-cast pits, is
tests/test_depth_geometry.py's.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from al_loop.data.render import CylinderPit, Sun, render_scene, rim_mask
from al_loop.data.viewing import (
    NADIR_ASSUMED,
    SIDE_FROM_PHASE,
    Viewing,
    compass_azimuth,
    image_azimuth,
    image_direction,
    read_viewing,
    viewing_from_label,
)
from al_loop.science.morphometry import (
    NO_GEOMETRY,
    NO_SHADOW,
    SHADOW,
    depth_columns,
    pit_depth,
    shadow_depth,
    shape_measures,
    window_around,
)

SCALE = 0.25  # m per pixel

# From a real HiRISE RDR label: ESP_013951_1955_RED.LBL as kept in GDAL's test data
# (OSGeo/gdal, autotest/gdrivers/data/pds/ESP_013951_1955_RED.LBL), the lines this test reads,
# verbatim. Northeast Syrtis Major, 15.2-15.8 N, afternoon, southern summer (Ls 306).
REAL_LABEL = """PDS_VERSION_ID            = PDS3
PRODUCT_ID                = "ESP_013951_1955_RED"
OBJECT = IMAGE_MAP_PROJECTION
    MAP_PROJECTION_TYPE          = "EQUIRECTANGULAR"
    MAP_SCALE                    = 0.5 <METERS/PIXEL>
    MAXIMUM_LATITUDE             = 15.797211542227 <DEG>
    MINIMUM_LATITUDE             = 15.228493633562 <DEG>
END_OBJECT = IMAGE_MAP_PROJECTION
GROUP = VIEWING_PARAMETERS
    INCIDENCE_ANGLE   = 49.990076 <DEG>
    EMISSION_ANGLE    = 8.476113 <DEG>
    PHASE_ANGLE       = 43.677223 <DEG>
    LOCAL_TIME        = 14.37002 <LOCALDAY/24>
    SOLAR_LONGITUDE   = 305.594678 <DEG>
    SUB_SOLAR_AZIMUTH = 135.482409 <DEG>
    NORTH_AZIMUTH     = 270.000000 <DEG>
END_GROUP = VIEWING_PARAMETERS
END
"""
MARS_OBLIQUITY = 25.19


def outline_metres(mask: np.ndarray):
    """The mask's outline as the map makes it (4-connected polygon, simplified), north-up in metres."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    from al_loop.mapping.assemble import simplify_outline

    polygons = [shapely.geometry.shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                                              transform=Affine(SCALE, 0, 0, 0, -SCALE, 0))]
    return simplify_outline(shapely.union_all(polygons), SCALE)


def rendered(depth_px: float, incidence: float, sun_azimuth: float, diameter_px: float = 80.0, seed: int = 0):
    """(pixels, mask) of one ray-cast pit seen straight down (al_loop.data.render)."""
    size = int(diameter_px + 40)
    pit = CylinderPit(size / 2 + 0.3, size / 2 - 0.2, diameter_px, depth_px)
    return render_scene((size, size), [pit], Sun(incidence, sun_azimuth), seed=seed), rim_mask((size, size), pit)


# --- the sun and the view, from a real label ---------------------------------------------------


@pytest.fixture
def real_label(tmp_path):
    path = tmp_path / "ESP_013951_1955_RED.LBL"
    path.write_text(REAL_LABEL)
    return path


def test_the_real_labels_viewing_parameters_are_read(real_label):
    viewing = read_viewing(real_label)
    # an RDR label has no SUB_SPACECRAFT_AZIMUTH: the phase angle's two sides, and that is said
    assert viewing == Viewing(49.990076, 8.476113, 135.482409, 270.0, 43.677223, None, 0.5, SIDE_FROM_PHASE)


def test_the_real_labels_azimuths_put_the_sun_where_it_was(real_label):
    """North azimuth 270 (clockwise from 3 o'clock) is 12 o'clock: the RDR is north-up. The sun at
    135.5 is down-left on the image, south-west on the ground: 225.5 clockwise from north. Spherical
    astronomy from the same label's local solar time (14.37 h: afternoon, sun to the west), season
    (Ls 305.6: southern summer, sun south of 15.5 N) and latitude puts the sun there, and at its
    incidence: the azimuths point *to* the sun, clockwise, from 3 o'clock."""
    viewing = read_viewing(real_label)
    assert image_direction(viewing.north_azimuth_deg) == pytest.approx((0.0, -1.0), abs=1e-9)  # up
    assert viewing.sun_compass_deg == pytest.approx(225.482409)
    declination = math.asin(math.sin(math.radians(MARS_OBLIQUITY)) * math.sin(math.radians(305.594678)))
    hour = math.radians((14.37002 - 12.0) * 15.0)
    lat = math.radians((15.797211542227 + 15.228493633562) / 2)
    east = -math.cos(declination) * math.sin(hour)
    north = math.sin(declination) * math.cos(lat) - math.cos(declination) * math.cos(hour) * math.sin(lat)
    up = math.sin(declination) * math.sin(lat) + math.cos(declination) * math.cos(hour) * math.cos(lat)
    assert math.degrees(math.atan2(east, north)) % 360 == pytest.approx(viewing.sun_compass_deg, abs=1.0)
    assert math.degrees(math.acos(up)) == pytest.approx(viewing.incidence_deg, abs=1.0)
    # Light travels away from the sun: towards the upper right of the image, the north-east.
    d_col, d_row = viewing.sunlight()
    assert d_col > 0.7 and d_row < -0.69


def test_the_real_labels_phase_gives_the_spacecraft_39_degrees_from_the_sun_on_either_side():
    """cos g = cos i cos e + sin i sin e cos(dphi): |dphi| 39.3, its sign unknown without
    SUB_SPACECRAFT_AZIMUTH; with it, one value, whichever way round the label's azimuths are."""
    viewing = read_viewing_text(REAL_LABEL)
    first, second = viewing.sun_view_azimuths()
    assert first == pytest.approx(39.3, abs=0.1) and second == -first
    labelled = read_viewing_text(REAL_LABEL.replace("END_GROUP", "    SUB_SPACECRAFT_AZIMUTH = 100.0 <DEG>\nEND_GROUP"))
    assert labelled.sun_view_azimuths() == [pytest.approx(100.0 - 135.482409)] and labelled.assumed == ""
    assert Viewing(50.0, 0.0, 10.0, 270.0, 50.0).sun_view_azimuths() == [0.0]  # nadir: no side to know


def test_labels_without_sun_geometry_give_none_and_without_emission_a_flagged_nadir(tmp_path):
    from al_loop.data.sample_products import write_hirise_rdr

    label = write_hirise_rdr(np.full((64, 64), 500, np.uint16), tmp_path, "NO_SUN", -8.8, 239.3)
    assert read_viewing(label) is None
    not_applicable = REAL_LABEL.replace("135.482409 <DEG>", "-9998")
    assert viewing_from_label(_parse(not_applicable)) is None
    no_emission = viewing_from_label(_parse(REAL_LABEL.replace("    EMISSION_ANGLE    = 8.476113 <DEG>\n", "")))
    assert no_emission.emission_deg == 0.0 and no_emission.assumed == NADIR_ASSUMED
    assert no_emission.incidence_deg == pytest.approx(49.990076) and no_emission.map_scale_m == 0.5
    bare = REAL_LABEL.replace(" <DEG>", "").replace("    PHASE_ANGLE       = 43.677223\n", "")
    assert viewing_from_label(_parse(bare)) == Viewing(49.990076, 8.476113, 135.482409, 270.0, None, None, 0.5, "")


def _parse(text: str):
    import pvl

    return pvl.loads(text)


def test_image_azimuths_turn_clockwise_from_three_oclock():
    for azimuth, expected in ((0, (1, 0)), (90, (0, 1)), (180, (-1, 0)), (270, (0, -1))):
        assert image_direction(azimuth) == pytest.approx(expected, abs=1e-12)
    assert compass_azimuth(0.0, 270.0) == 90.0  # 3 o'clock on a north-up image is east
    assert image_azimuth(compass_azimuth(215.0, 263.0), 263.0) == pytest.approx(215.0)
    # the sun at 3 o'clock: the shadow lies along the right-hand wall, light travels left
    assert Viewing(40.0, 0.0, 0.0, 270.0).sunlight() == pytest.approx((-1.0, 0.0), abs=1e-12)


# --- depth: what it says where there is nothing to measure --------------------------------------


def read_viewing_text(text: str) -> Viewing:
    viewing = viewing_from_label(_parse(text))
    assert viewing is not None
    return viewing


def test_a_nadir_pit_gives_its_depth_and_a_small_error():
    pixels, mask = rendered(30.0, 50.0, 90.0)
    result = pit_depth(pixels, mask, Viewing(50.0, 0.0, 90.0, 270.0), SCALE)
    assert result.method == SHADOW and not result.depth_is_minimum
    assert result.depth_m == pytest.approx(30.0 * SCALE, rel=0.05)
    assert 0 < result.depth_err_m < 0.1 * result.depth_m


def test_a_pit_without_a_shadow_has_no_depth_and_says_why():
    pixels, mask = rendered(0.0, 50.0, 0.0)
    result = pit_depth(pixels, mask, Viewing(50.0, 0.0, 0.0, 270.0), SCALE)
    assert math.isnan(result.depth_m) and math.isnan(result.shadow_length_m) and not result.depth_is_minimum
    assert result.method == NO_SHADOW and "no shadow" in result.reason


def test_without_sun_geometry_there_is_no_depth():
    pixels, mask = rendered(30.0, 50.0, 0.0)
    none = pit_depth(pixels, mask, None, SCALE)
    assert none.method == NO_GEOMETRY and "VIEWING_PARAMETERS" in none.reason
    set_sun = shadow_depth(pixels, mask, Viewing(95.0, 0.0, 0.0, 270.0), SCALE)
    assert math.isnan(set_sun.depth_m) and "no sun geometry" in set_sun.reason
    columns = depth_columns(none, 20.0, None)
    assert math.isnan(columns["d_over_D"]) and math.isnan(columns["sun_azimuth_deg"]) and columns["depth_note"]


def test_a_shadow_on_the_wrong_side_for_the_sun_is_not_taken():
    """The sun said to be at 3 o'clock while the shadow lies along the left wall: no rim shadow."""
    pixels, mask = rendered(30.0, 50.0, 180.0)
    wrong = pit_depth(pixels, mask, Viewing(50.0, 0.0, 0.0, 270.0), SCALE)
    assert math.isnan(wrong.depth_m) and "sun-side rim" in wrong.reason
    right = pit_depth(pixels, mask, Viewing(50.0, 0.0, 180.0, 270.0), SCALE)
    assert right.depth_m == pytest.approx(30.0 * SCALE, rel=0.1)


def test_a_missing_emission_widens_the_error_and_says_so():
    pixels, mask = rendered(30.0, 50.0, 90.0)
    known = pit_depth(pixels, mask, Viewing(50.0, 0.0, 90.0, 270.0), SCALE)
    assumed = pit_depth(pixels, mask, Viewing(50.0, 0.0, 90.0, 270.0, assumed=NADIR_ASSUMED), SCALE)
    assert assumed.depth_m == pytest.approx(known.depth_m) and assumed.reason == NADIR_ASSUMED
    assert assumed.depth_err_m > 2 * known.depth_err_m


def test_depth_columns_carry_the_compass_sun_and_the_ratio():
    pixels, mask = rendered(30.0, 50.0, 90.0)
    viewing = Viewing(50.0, 0.0, 90.0, 270.0, 50.0, 0.0)
    columns = depth_columns(pit_depth(pixels, mask, viewing, SCALE), 20.0, viewing)
    assert columns["sun_azimuth_deg"] == 180.0  # 6 o'clock on a north-up image: the sun in the south
    assert columns["spacecraft_azimuth_deg"] == 90.0  # 3 o'clock: east
    assert columns["d_over_D"] == pytest.approx(30.0 * SCALE / 20.0, rel=0.1)
    assert columns["depth_method"] == SHADOW and columns["depth_err_m"] > 0
    assert window_around((10, 20, 30, 60), 100, 70) == (0, 0, 50, 70)


# --- shape ---------------------------------------------------------------------------------------


def test_an_ellipses_axes_and_orientation():
    """Semi-axes 12 m and 6 m, the long axis N30E (30 degrees clockwise from north)."""
    import shapely
    from shapely import affinity

    ellipse = affinity.scale(shapely.Point(0, 0).buffer(1.0, quad_segs=256), 12.0, 6.0)  # long axis east
    ellipse = affinity.rotate(ellipse, 60.0, origin=(0, 0))  # counter-clockwise: east turns to N30E
    shape = shape_measures(affinity.translate(ellipse, 3.0e5, -1.2e6))
    assert shape["major_axis_m"] == pytest.approx(24.0, rel=1e-3)
    assert shape["minor_axis_m"] == pytest.approx(12.0, rel=1e-3)
    assert shape["axis_azimuth_deg"] == pytest.approx(30.0, abs=0.1)
    assert shape["diameter_m"] == pytest.approx(2 * math.sqrt(72.0), rel=1e-3)
    assert shape["feret_max_m"] == pytest.approx(24.0, rel=1e-3)  # the longest distance across: the major axis
    assert shape["axis_ratio"] == pytest.approx(0.5, rel=1e-3) and shape["solidity"] == pytest.approx(1.0, abs=1e-3)
    disc = shape_measures(shapely.Point(0, 0).buffer(5.0, quad_segs=64))
    assert disc["axis_ratio"] == pytest.approx(1.0, abs=1e-3) and math.isnan(disc["axis_azimuth_deg"])
    assert disc["diameter_m"] == pytest.approx(10.0, rel=1e-3) and disc["feret_max_m"] == pytest.approx(10.0, rel=1e-3)


def test_two_pits_joined_lose_solidity_and_gain_a_feret_length():
    """Two discs of 10 m joined by a neck: solidity well under 1 (a geologist would split them), the
    longest distance across 25 m while the equivalent diameter stays near sqrt(2) x 10 m."""
    import shapely

    pair = shapely.union_all([shapely.Point(0, 0).buffer(5.0, 64), shapely.Point(15, 0).buffer(5.0, 64),
                              shapely.box(4, -1, 11, 1)])
    shape = shape_measures(pair)
    assert shape["solidity"] < 0.8 and shape["feret_max_m"] == pytest.approx(25.0, rel=1e-3)
    assert shape["diameter_m"] == pytest.approx(math.sqrt(2) * 10.0, rel=0.05) and shape["axis_ratio"] < 0.6


def test_an_ellipse_on_a_north_up_image_points_where_it_points():
    """The same ellipse drawn on a north-up image (rows going south), outlined as the map does."""
    rows, cols = np.mgrid[0:120, 0:120].astype(float)
    east, north = cols - 60.2, -(rows - 59.7)  # pixels
    azimuth = math.radians(30.0)
    along = east * math.sin(azimuth) + north * math.cos(azimuth)
    across = east * math.cos(azimuth) - north * math.sin(azimuth)
    mask = (along / 48.0) ** 2 + (across / 24.0) ** 2 <= 1.0  # semi-axes 12 m and 6 m
    shape = shape_measures(outline_metres(mask))
    assert shape["axis_azimuth_deg"] == pytest.approx(30.0, abs=1.0)
    assert shape["major_axis_m"] == pytest.approx(24.0, rel=0.03)
    assert shape["minor_axis_m"] == pytest.approx(12.0, rel=0.03)
    assert shape["diameter_m"] == pytest.approx(2 * math.sqrt(72.0), rel=0.03)
    # a blocky outline stays round: what circularity (0.28-0.42 for round pits) could not say
    assert shape["axis_ratio"] == pytest.approx(0.5, abs=0.02) and shape["solidity"] > 0.97
    assert not shape_measures(shapely_empty())["area_m2"] > 0


def shapely_empty():
    import shapely

    return shapely.Polygon()
