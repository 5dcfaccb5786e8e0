"""Sun and viewing geometry from a HiRISE RDR's PDS3 label (``GROUP = VIEWING_PARAMETERS``).

A HiRISE RDR label says, for the centre of the map-projected image::

    GROUP = VIEWING_PARAMETERS
        INCIDENCE_ANGLE   = 49.990076 <DEG>    sun from the local vertical
        EMISSION_ANGLE    = 8.476113 <DEG>     camera from the local vertical
        PHASE_ANGLE       = 43.677223 <DEG>    between the directions to the sun and to the camera
        SUB_SOLAR_AZIMUTH = 135.482409 <DEG>   towards the sun, in the image plane
        NORTH_AZIMUTH     = 270.000000 <DEG>   towards north, in the image plane
    END_GROUP = VIEWING_PARAMETERS

(ESP_013951_1955_RED, as kept in GDAL's autotest/gdrivers/data/pds/.) Other PDS3 labels add
``SUB_SPACECRAFT_AZIMUTH`` (towards the point under the spacecraft, measured as SUB_SOLAR_AZIMUTH);
a HiRISE RDR label has none, so without it the azimuth from the sun to the spacecraft comes from
the phase angle, which gives its size but not its side (``Viewing.sun_view_azimuths``: both, and
``Viewing.assumed`` says so). A label without EMISSION_ANGLE is read as a nadir view, flagged the
same way; one without the sun (incidence, sub-solar or north azimuth) gives None. MAP_SCALE comes
from ``IMAGE_MAP_PROJECTION``. All azimuths are angles in
the image as displayed (sample to the right, line going down), measured clockwise from the 3
o'clock direction. So azimuth ``a`` is the pixel-space unit vector (d_col, d_row) = (cos a, sin a):
0 points right, 90 down, 180 left, 270 up. NORTH_AZIMUTH = 270 is a north-up map; that image's
sun at 135.5 is down-left, south-west, which is where the sun stands for that place and time (see
tests/test_morphometry.py, which derives it from the label's LOCAL_TIME, SOLAR_LONGITUDE and
latitude).

A compass azimuth (degrees clockwise from north on the ground, seen from above) is the image
azimuth minus the north azimuth, modulo 360. This holds for map-projected products, which show
the ground as seen from above (east clockwise from north); the label's values are for the image's
centre, and across the few kilometres of one product the directions change by far less than a
degree (even near the pole, where grid north turns with longitude).

The RDR's pixel grid is the label's image: GDAL opens the JP2 with the label's LINES x
LINE_SAMPLES, so the directions here are directions in the product's pixel frame, and in the
tiled GeoTIFF written from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from al_loop.errors import ProductError

GROUP = "VIEWING_PARAMETERS"
# PDS3 "no value" markers HiRISE labels use (NOT_APPLICABLE_CONSTANT and friends).
NO_VALUE = (-9998.0, -9999.0, -9997.0, -9996.0)


NADIR_ASSUMED = "nadir assumed: the label has no EMISSION_ANGLE"
SIDE_FROM_PHASE = "spacecraft azimuth from PHASE_ANGLE: its side of the sun line unknown"


@dataclass(frozen=True)
class Viewing:
    """A product's sun and view, in degrees; azimuths as the label gives them (clockwise from the
    image's 3 o'clock, rows going down). ``phase_deg`` is None when the label does not give it;
    ``spacecraft_azimuth_deg`` (SUB_SPACECRAFT_AZIMUTH, towards the point under the spacecraft) is
    None when the label lacks it (HiRISE RDR labels do: it is in the cumulative index, not the
    label); ``map_scale_m`` is the label's MAP_SCALE (m per pixel) when it has one. ``assumed`` says
    what was assumed for what the label did not give ("" when nothing was)."""

    incidence_deg: float
    emission_deg: float
    sun_azimuth_deg: float
    north_azimuth_deg: float
    phase_deg: float | None = None
    spacecraft_azimuth_deg: float | None = None
    map_scale_m: float | None = None
    assumed: str = ""

    def toward_sun(self) -> tuple[float, float]:
        """(d_col, d_row) unit vector pointing at the sun across the image."""
        return image_direction(self.sun_azimuth_deg)

    def sunlight(self) -> tuple[float, float]:
        """(d_col, d_row) unit vector of the way sunlight travels across the image: away from the sun.

        SUB_SOLAR_AZIMUTH points *toward* the sun (towards the sub-solar point), so light comes from
        that side and moves the other way, and a shadow stretches from what casts it in this
        direction. A hill or boulder throws its shadow on its far side from the sun. A pit is the
        other way round: its rim on the sun's side blocks the light, so the wall nearest the sun
        (whose face looks away from the sun) is dark, and its shadow lies on the floor against that
        wall, reaching ``depth * tan(incidence)`` from the sun-side rim in this direction; the floor
        beyond and the far wall (facing the sun) are lit. Inside a pit the shadow is on the sun's
        side: with the sun at 3 o'clock (azimuth 0) it lies along the right-hand wall and light
        travels leftwards, (-1, 0).
        """
        d_col, d_row = self.toward_sun()
        return -d_col, -d_row

    def sun_view_azimuths(self) -> list[float]:
        """The azimuth from the sun to the spacecraft, degrees in -180..180: one value from
        SUB_SPACECRAFT_AZIMUTH; without it, the two the phase angle allows (cos g = cos i cos e +
        sin i sin e cos dphi gives |dphi|, not its side); [0.0] for a nadir view or when neither is known."""
        if self.emission_deg <= 0.0:
            return [0.0]
        if self.spacecraft_azimuth_deg is not None:
            return [(self.spacecraft_azimuth_deg - self.sun_azimuth_deg + 180.0) % 360.0 - 180.0]
        if self.phase_deg is None:
            return [0.0]
        i, e, g = (math.radians(v) for v in (self.incidence_deg, self.emission_deg, self.phase_deg))
        if math.sin(i) * math.sin(e) <= 0:
            return [0.0]
        cos_dphi = (math.cos(g) - math.cos(i) * math.cos(e)) / (math.sin(i) * math.sin(e))
        dphi = math.degrees(math.acos(max(-1.0, min(1.0, cos_dphi))))
        return [dphi, -dphi] if 0.0 < dphi < 180.0 else [dphi]

    @property
    def sun_compass_deg(self) -> float:
        """The sun's azimuth on the ground: degrees clockwise from north (90 east, 180 south)."""
        return compass_azimuth(self.sun_azimuth_deg, self.north_azimuth_deg)


def image_direction(azimuth_deg: float) -> tuple[float, float]:
    """(d_col, d_row) unit vector for an azimuth clockwise from the image's 3 o'clock (rows going
    down, so clockwise on screen turns +col towards +row): 0 -> (1, 0), 90 -> (0, 1), 270 -> (0, -1)."""
    a = math.radians(azimuth_deg)
    return math.cos(a), math.sin(a)


def compass_azimuth(image_azimuth_deg: float, north_azimuth_deg: float) -> float:
    """An image azimuth (clockwise from 3 o'clock) as a compass bearing (clockwise from north), in 0..360."""
    return (image_azimuth_deg - north_azimuth_deg) % 360.0


def image_azimuth(compass_deg: float, north_azimuth_deg: float) -> float:
    """A compass bearing as an image azimuth (clockwise from 3 o'clock), in 0..360."""
    return (compass_deg + north_azimuth_deg) % 360.0


def read_viewing(label_path: str | Path) -> Viewing | None:
    """The sun and view of a PDS3 label (a HiRISE RDR's ``.LBL``); None when it has no
    ``VIEWING_PARAMETERS`` group or no sun (incidence, sub-solar and north azimuths). A missing
    EMISSION_ANGLE is taken as a nadir view and said so in ``Viewing.assumed``.
    A :class:`ProductError` when the file is not a readable PDS3 label: call it for labels only."""
    import pvl

    try:
        label = pvl.load(str(label_path))
    except (OSError, ValueError, pvl.exceptions.LexerError) as exc:
        raise ProductError(label_path, f"not a readable PDS3 label ({exc})") from None
    return viewing_from_label(label)


def viewing_from_label(label) -> Viewing | None:
    """:func:`read_viewing` on a label already parsed by ``pvl`` (a mapping)."""
    group = _find_group(label, GROUP)
    if group is None:
        return None
    angles = {key: _angle(group.get(key), 0.0, 180.0) for key in ("INCIDENCE_ANGLE", "EMISSION_ANGLE", "PHASE_ANGLE")}
    azimuths = {key: _angle(group.get(key), -360.0, 720.0)
                for key in ("SUB_SOLAR_AZIMUTH", "NORTH_AZIMUTH", "SUB_SPACECRAFT_AZIMUTH")}
    incidence, sun, north = angles["INCIDENCE_ANGLE"], azimuths["SUB_SOLAR_AZIMUTH"], azimuths["NORTH_AZIMUTH"]
    if incidence is None or sun is None or north is None:
        return None
    emission, assumed = angles["EMISSION_ANGLE"], ""
    if emission is None:
        emission, assumed = 0.0, NADIR_ASSUMED
    spacecraft = azimuths["SUB_SPACECRAFT_AZIMUTH"]
    if spacecraft is None and emission > 0 and angles["PHASE_ANGLE"] is not None:
        assumed = SIDE_FROM_PHASE
    projection = _find_group(label, "IMAGE_MAP_PROJECTION")
    scale = _angle(projection.get("MAP_SCALE"), 1e-6, 1e6) if projection is not None else None
    return Viewing(incidence, emission, sun % 360.0, north % 360.0, angles["PHASE_ANGLE"],
                   None if spacecraft is None else spacecraft % 360.0, scale, assumed)


def _find_group(label, name: str):
    if hasattr(label, "get") and name in label:
        return label[name]
    for _, value in getattr(label, "items", list)():
        if hasattr(value, "get") and name in value:
            return value[name]
    return None


def _angle(value, low: float, high: float) -> float | None:
    """A number of degrees from a label value (pvl's Quantity ``49.99 <DEG>`` or a bare number);
    None for anything else, a no-value marker or a value outside ``low``..``high``."""
    value = getattr(value, "value", value)
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number in NO_VALUE or not low <= number <= high:
        return None
    return number
