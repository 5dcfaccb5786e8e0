"""Pit morphometry: sun and view from a real HiRISE label, shape of outlines, depth from rendered shadows.

The pits are rendered from their geometry, not from the code under test: a cylinder of diameter D
and depth h with vertical walls, in a north-up map-projected image (0.25 m/px), lit from incidence i
and sun azimuth a (the label's convention: clockwise from the image's 3 o'clock, rows going down).
Each pixel's line of sight is followed to the surface it meets (terrain, floor or wall) and that
point is in shadow when the ray from it towards the sun meets the pit's wall before rising above
the rim. Seen straight down this is the textbook shadow: floor pixels whose distance to the
sun-side rim, measured towards the sun, is under h tan(i).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from al_loop.data.viewing import (
    Viewing,
    compass_azimuth,
    image_azimuth,
    image_direction,
    read_viewing,
    viewing_from_label,
)
from al_loop.science.morphometry import (
    CORRECTED,
    UNCORRECTED,
    depth_columns,
    pit_depth,
    shadow_depth,
    shape_measures,
    view_parallax,
    window_around,
)

SCALE = 0.25  # m per pixel
TERRAIN, FLOOR, WALL, SHADOW = 0.6, 0.45, 0.7, 0.1

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


def _exit_distance(points: np.ndarray, direction: np.ndarray, radius: float) -> np.ndarray:
    """Horizontal distance from points inside a disc (centred at 0) to its edge along ``direction``."""
    b = points @ direction
    c = (points**2).sum(-1) - radius**2
    return -b + np.sqrt(np.maximum(b * b - c, 0.0))


def render_pit(*, diameter_px: float, depth_px: float, incidence: float, sun_azimuth: float, emission: float = 0.0,
               view_azimuth: float = 0.0, margin: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, mask) of a cylindrical pit; azimuths clockwise from 3 o'clock (the spacecraft's: where
    it looks from). Brightness: terrain 0.6, floor 0.45, lit wall 0.7, shadow 0.1, noise 0.02."""
    size = int(diameter_px + 2 * margin)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    points = np.stack([cols - (size / 2 + 0.3), rows - (size / 2 - 0.2)], axis=-1)  # (col, row) from the centre
    radius = diameter_px / 2
    mask = (points**2).sum(-1) <= radius**2
    sun = np.array([math.cos(math.radians(sun_azimuth)), math.sin(math.radians(sun_azimuth))])
    view = np.array([math.cos(math.radians(view_azimuth)), math.sin(math.radians(view_azimuth))])
    tan_i, tan_e = math.tan(math.radians(incidence)), math.tan(math.radians(emission))
    # The line of sight through a pixel goes down and away from the spacecraft: it meets the floor
    # depth * tan(e) further on, or the wall first.
    to_wall = _exit_distance(points, -view, radius)
    reach = np.minimum(depth_px * tan_e, to_wall)
    hit = points - reach[..., None] * view
    hit_depth = np.where(reach < depth_px * tan_e, reach / max(tan_e, 1e-12), depth_px)
    lit = _exit_distance(hit, sun, radius) >= hit_depth * tan_i - 1e-9
    surface = np.where(reach < depth_px * tan_e - 1e-9, WALL, FLOOR)
    pixels = np.where(mask, np.where(lit, surface, SHADOW), TERRAIN)
    pixels = pixels + np.random.default_rng(seed).normal(0.0, 0.02, pixels.shape)
    return pixels.astype(np.float32), mask


def outline_metres(mask: np.ndarray):
    """The mask's outline as the map makes it (4-connected polygon, simplified), north-up in metres."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    from al_loop.mapping.assemble import simplify_outline

    polygons = [shapely.geometry.shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                                              transform=Affine(SCALE, 0, 0, 0, -SCALE, 0))]
    return simplify_outline(shapely.union_all(polygons), SCALE)


def measure(pixels, mask, viewing: Viewing):
    return pit_depth(pixels, mask, viewing, SCALE)


# --- the sun and the view, from a real label ---------------------------------------------------


@pytest.fixture
def real_label(tmp_path):
    path = tmp_path / "ESP_013951_1955_RED.LBL"
    path.write_text(REAL_LABEL)
    return path


def test_the_real_labels_viewing_parameters_are_read(real_label):
    viewing = read_viewing(real_label)
    assert viewing == Viewing(49.990076, 8.476113, 135.482409, 270.0, 43.677223)


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


def test_the_real_labels_view_hides_a_tenth_of_the_shadow():
    """Spacecraft 39 degrees of azimuth from the sun: the floor shifts sunwards by h tan(e) cos(39),
    under the sun-side wall, so the depth is 11 % more than the visible shadow / tan(i) says."""
    parallax = view_parallax(49.990076, 8.476113, 43.677223)
    assert parallax == pytest.approx(math.tan(math.radians(8.476113)) * math.cos(math.radians(39.1)), abs=0.003)
    assert math.tan(math.radians(49.990076)) / (math.tan(math.radians(49.990076)) - parallax) == pytest.approx(1.107, abs=0.005)


def test_labels_without_sun_geometry_give_none(tmp_path):
    from al_loop.data.sample_products import write_hirise_rdr

    label = write_hirise_rdr(np.full((64, 64), 500, np.uint16), tmp_path, "NO_SUN", -8.8, 239.3)
    assert read_viewing(label) is None
    missing = REAL_LABEL.replace("    EMISSION_ANGLE    = 8.476113 <DEG>\n", "")
    assert viewing_from_label(_parse(missing)) is None
    not_applicable = REAL_LABEL.replace("135.482409 <DEG>", "-9998")
    assert viewing_from_label(_parse(not_applicable)) is None
    bare = REAL_LABEL.replace(" <DEG>", "").replace("    PHASE_ANGLE       = 43.677223\n", "")
    assert viewing_from_label(_parse(bare)) == Viewing(49.990076, 8.476113, 135.482409, 270.0, None)


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


# --- depth from rendered shadows -----------------------------------------------------------------

DIAMETER_PX = 80.0


@pytest.mark.parametrize("incidence", [30.0, 50.0, 70.0])
@pytest.mark.parametrize("sun_azimuth,reach", [(0.0, 0.35), (90.0, 0.55), (215.0, 0.75)])
def test_depth_and_diameter_of_rendered_pits(incidence, sun_azimuth, reach):
    """``reach``: the shadow's length as a fraction of D, so depth = reach D / tan(i)."""
    depth_px = reach * DIAMETER_PX / math.tan(math.radians(incidence))
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=depth_px, incidence=incidence, sun_azimuth=sun_azimuth)
    shape = shape_measures(outline_metres(mask))
    assert shape["diameter_m"] == pytest.approx(DIAMETER_PX * SCALE, rel=0.05)
    result = measure(pixels, mask, Viewing(incidence, 0.0, sun_azimuth, 270.0, incidence))
    assert result.reason == ""
    assert result.depth_m == pytest.approx(depth_px * SCALE, rel=0.15)
    assert result.shadow_length_m == pytest.approx(reach * DIAMETER_PX * SCALE, rel=0.1)
    assert not result.depth_is_minimum


def test_a_shadow_reaching_the_far_wall_gives_a_minimum_depth():
    """h tan(i) = 1.3 D: the whole floor is dark; the depth said is D / tan(i), a lower bound."""
    depth_px = 1.3 * DIAMETER_PX / math.tan(math.radians(50.0))
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=depth_px, incidence=50.0, sun_azimuth=215.0, seed=3)
    result = measure(pixels, mask, Viewing(50.0, 0.0, 215.0, 270.0, 50.0))
    assert result.depth_is_minimum
    assert result.depth_m == pytest.approx(DIAMETER_PX * SCALE / math.tan(math.radians(50.0)), rel=0.15)
    assert result.depth_m < depth_px * SCALE


def test_the_minimum_flag_stays_off_just_short_of_the_far_wall():
    depth_px = 0.9 * DIAMETER_PX / math.tan(math.radians(50.0))
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=depth_px, incidence=50.0, sun_azimuth=90.0, seed=4)
    result = measure(pixels, mask, Viewing(50.0, 0.0, 90.0, 270.0, 50.0))
    assert not result.depth_is_minimum
    assert result.depth_m == pytest.approx(depth_px * SCALE, rel=0.15)


@pytest.mark.parametrize("side", ["sun's side", "across", "far side"])
def test_an_off_nadir_view_is_corrected_with_the_phase_angle(side):
    """i = 50, e = 15, the spacecraft on the sun's side (it hides a quarter of the shadow), at right
    angles (no change along the sunlight) or opposite (the dark sun-side wall shows too). The phase
    angle is what the label would say: cos g = cos i cos e + sin i sin e cos(dphi)."""
    incidence, emission, sun_azimuth = 50.0, 15.0, 120.0
    view_azimuth = {"sun's side": sun_azimuth, "across": sun_azimuth + 90.0, "far side": sun_azimuth + 180.0}[side]
    phase = math.degrees(math.acos(math.cos(math.radians(incidence)) * math.cos(math.radians(emission)) + math.sin(
        math.radians(incidence)) * math.sin(math.radians(emission)) * math.cos(math.radians(view_azimuth - sun_azimuth))))
    depth_px = 0.5 * DIAMETER_PX / math.tan(math.radians(incidence))
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=depth_px, incidence=incidence, sun_azimuth=sun_azimuth,
                              emission=emission, view_azimuth=view_azimuth, seed=5)
    corrected = measure(pixels, mask, Viewing(incidence, emission, sun_azimuth, 270.0, phase))
    assert corrected.method == CORRECTED and corrected.emission_deg == emission
    assert corrected.depth_m == pytest.approx(depth_px * SCALE, rel=0.1)
    uncorrected = measure(pixels, mask, Viewing(incidence, emission, sun_azimuth, 270.0, None))
    assert uncorrected.method == UNCORRECTED
    off = abs(uncorrected.depth_m / (depth_px * SCALE) - 1)
    assert off > 0.15 if side != "across" else off < 0.1


def test_a_pit_seen_as_in_the_real_label():
    """ESP_013951_1955_RED's sun and view (spacecraft 39 degrees of azimuth from the sun, from phase)."""
    viewing = read_viewing_text(REAL_LABEL)
    dphi = math.degrees(math.acos(view_parallax(viewing.incidence_deg, viewing.emission_deg, viewing.phase_deg)
                                  / math.tan(math.radians(viewing.emission_deg))))
    depth_px = 0.6 * DIAMETER_PX / math.tan(math.radians(viewing.incidence_deg))
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=depth_px, incidence=viewing.incidence_deg,
                              sun_azimuth=viewing.sun_azimuth_deg, emission=viewing.emission_deg,
                              view_azimuth=viewing.sun_azimuth_deg - dphi, seed=6)
    result = measure(pixels, mask, viewing)
    assert result.depth_m == pytest.approx(depth_px * SCALE, rel=0.06)
    # the shadow is against the south-west wall: lower left of the pit's centre on the north-up image
    rows, cols = np.nonzero(mask & (pixels < 0.3))
    centre_rows, centre_cols = np.nonzero(mask)
    assert cols.mean() < centre_cols.mean() and rows.mean() > centre_rows.mean()


def read_viewing_text(text: str) -> Viewing:
    viewing = viewing_from_label(_parse(text))
    assert viewing is not None
    return viewing


def test_a_pit_without_a_shadow_has_no_depth_and_says_why():
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=0.0, incidence=50.0, sun_azimuth=0.0)
    result = measure(pixels, mask, Viewing(50.0, 0.0, 0.0, 270.0, 50.0))
    assert math.isnan(result.depth_m) and math.isnan(result.shadow_length_m) and not result.depth_is_minimum
    assert "no shadow" in result.reason


def test_without_sun_geometry_there_is_no_depth():
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=30.0, incidence=50.0, sun_azimuth=0.0)
    assert "VIEWING_PARAMETERS" in pit_depth(pixels, mask, None, SCALE).reason
    result = shadow_depth(pixels, mask, sunlight=(-1.0, 0.0), pixel_size_m=SCALE, incidence_deg=math.nan)
    assert math.isnan(result.depth_m) and "no sun geometry" in result.reason
    columns = depth_columns(result, 20.0, None)
    assert math.isnan(columns["depth_diameter"]) and math.isnan(columns["sun_azimuth_deg"]) and columns["depth_note"]


def test_a_shadow_on_the_wrong_side_for_the_sun_is_not_taken():
    """The sun said to be at 3 o'clock while the shadow lies along the left wall: no rim shadow."""
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=30.0, incidence=50.0, sun_azimuth=180.0)
    result = measure(pixels, mask, Viewing(50.0, 0.0, 0.0, 270.0, 50.0))
    assert math.isnan(result.depth_m) and "sun-side wall" in result.reason
    right = measure(pixels, mask, Viewing(50.0, 0.0, 180.0, 270.0, 50.0))
    assert right.depth_m == pytest.approx(30.0 * SCALE, rel=0.15)


def test_depth_columns_carry_the_compass_sun_and_the_ratio():
    pixels, mask = render_pit(diameter_px=DIAMETER_PX, depth_px=30.0, incidence=50.0, sun_azimuth=90.0)
    viewing = Viewing(50.0, 0.0, 90.0, 270.0, 50.0)
    columns = depth_columns(measure(pixels, mask, viewing), 20.0, viewing)
    assert columns["sun_azimuth_deg"] == 180.0  # 6 o'clock on a north-up image: the sun in the south
    assert columns["depth_diameter"] == pytest.approx(30.0 * SCALE / 20.0, rel=0.15)
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
    perimeter = math.pi * (3 * (12 + 6) - math.sqrt((3 * 12 + 6) * (12 + 3 * 6)))  # Ramanujan
    assert shape["circularity"] == pytest.approx(4 * math.pi * math.pi * 72 / perimeter**2, rel=1e-3)
    disc = shape_measures(shapely.Point(0, 0).buffer(5.0, quad_segs=64))
    assert disc["circularity"] == pytest.approx(1.0, abs=1e-3) and math.isnan(disc["axis_azimuth_deg"])


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
    assert not shape_measures(shapely_empty())["area_m2"] > 0


def shapely_empty():
    import shapely

    return shapely.Polygon()
