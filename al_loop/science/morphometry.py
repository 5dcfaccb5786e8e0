"""A pit's shape from its outline and its depth from the shadow inside it, in metres.

Pure numbers: the caller projects the outline and reads the pixels; nothing here opens a file.

Shape (:func:`shape_measures`) is measured on the outline in an equal-area projection centred on
the product (``science.measure.product_area_crs``: metres on the body, north up at the centre).
The axes are those of the ellipse with the same second moments of area (what
``skimage.measure.regionprops`` calls ``major_axis_length``): exact for an ellipse, computed from
the whole area, so a spur or a pixel step on the outline moves them little. A minimum rotated
rectangle was the other choice; it rests on a few extreme vertices, and its orientation jumps
about on near-round pits.

Depth (:func:`shadow_depth`) is read from the shadow the sun-side rim casts on the floor, as PITS
(Le Corre et al. 2023, RAS Techniques and Instruments) does. Seen straight down, a pit of depth h
with steep walls, lit from incidence i, has a shadow reaching ``L = h tan(i)`` from its sun-side rim
along the sunlight; so ``h = L / tan(i)``. When the shadow reaches the far wall (no sunlit floor
between it and the far rim) the floor is deeper than this says: ``depth_is_minimum``.

Viewed off-nadir, a map-projected (orthorectified) image is projected onto a surface that does
not know the pit (MOLA-scale), so distances are already ground distances at the rim's level and
PITS's foreshortening factor (``1 / cos`` of the along-sun emission) is 1 there. What remains is
parallax: the floor, h below that surface, appears shifted by ``h tan(e)`` towards the spacecraft.
With the spacecraft on the sun's side the near wall hides part of the shadow; on the far side the
shadowed sun-side wall shows as well. The visible shadow is ``L = h (tan(i) - tan(e) cos(dphi))``,
dphi the azimuth between sun and spacecraft, and the label gives it through the phase angle g:
``cos(g) = cos(i) cos(e) + sin(i) sin(e) cos(dphi)``, so ``tan(e) cos(dphi) = (cos g - cos i cos e) /
(sin i cos e)`` (:func:`view_parallax`). This is PITS's correction (its ``S_hidden`` for the
spacecraft on the sun's side, its ``d sin(i)`` on the other) without its foreshortening factor.
For ESP_013951_1955_RED (i 50.0, e 8.5, g 43.7: the spacecraft 39 degrees of azimuth from the sun)
the near wall hides a tenth of the shadow, and the depth is 11 % more than ``L / tan(i)``.
Without a phase angle no correction is made, and ``method`` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from al_loop.data.viewing import Viewing

# The shadow's darkness: its pixels average under this fraction of the lit terrain around the pit.
# A shadow is lit by the sky alone, far darker than sunlit ground; a floor of other dust or sand
# that is not in shadow rarely differs from the ground around it by a factor of two.
SHADOW_RATIO = 0.5
MIN_SHADOW_PIXELS = 4
MIN_TERRAIN_PIXELS = 20
# Profiles along the sunlight: every PROFILE_STEP px across the pit's middle CENTRAL_BAND (a
# fraction of its half-width across the sunlight: chords there are >= 95 % of the widest one),
# sampled every PROFILE_STEP px along.
CENTRAL_BAND = 0.3
PROFILE_STEP = 0.5
# A shadow is the rim's when it starts this close to the sun-side rim (px, and fraction of the chord).
START_TOLERANCE_PX = 3.0
START_TOLERANCE_FRACTION = 0.1
# A shadow ending this close to the far rim reaches the far wall.
RIM_TOLERANCE_PX = 1.5
# Below this axis ratio the outline has no orientation worth a number.
AXIS_RATIO_FOR_AZIMUTH = 1.02
# The view must leave this fraction of the shadow's length visible (tan(i) - parallax vs tan(i)).
MIN_VISIBLE_FRACTION = 0.1

CORRECTED = "shadow length along the sunlight / (tan(incidence) - tan(emission) cos(sun-to-view azimuth from the phase))"
UNCORRECTED = "shadow length along the sunlight / tan(incidence); no emission correction (emission but no phase angle)"
NO_DEPTH = "none"


def shape_measures(polygon) -> dict:
    """Shape of a pit outline in an equal-area CRS in metres, north up (+y): ``area_m2``,
    ``diameter_m`` (of the circle of the same area), ``major_axis_m`` and ``minor_axis_m`` (full axes
    of the ellipse with the same second moments), ``axis_azimuth_deg`` (the major axis, degrees
    clockwise from north in 0..180; NaN when the axes differ by under 2 %) and ``circularity``
    (4 pi area / perimeter^2: 1 for a disc; a pixel staircase lowers it, simplified outlines less).
    Polygons or multipolygons; holes count against the area. All NaN for an empty outline."""
    area, covariance = _second_moments(polygon)
    if not area > 0:
        return {k: math.nan for k in ("area_m2", "diameter_m", "major_axis_m", "minor_axis_m", "axis_azimuth_deg", "circularity")}
    values, vectors = np.linalg.eigh(covariance)
    minor, major = (4.0 * math.sqrt(max(v, 0.0)) for v in values)
    east, north = vectors[:, 1]
    azimuth = math.degrees(math.atan2(east, north)) % 180.0 if major >= AXIS_RATIO_FOR_AZIMUTH * minor else math.nan
    perimeter = float(polygon.length)
    return {"area_m2": area, "diameter_m": 2.0 * math.sqrt(area / math.pi), "major_axis_m": major, "minor_axis_m": minor,
            "axis_azimuth_deg": azimuth, "circularity": 4.0 * math.pi * area / perimeter**2 if perimeter > 0 else math.nan}


def _second_moments(polygon) -> tuple[float, np.ndarray]:
    """Area and the 2 x 2 covariance of the area about its centroid (Green's theorem over the rings)."""
    from shapely.geometry.polygon import orient

    if polygon is None or polygon.is_empty:
        return 0.0, np.zeros((2, 2))
    origin = np.asarray(polygon.centroid.coords[0][:2])
    sums = np.zeros(6)  # A, int x, int y, int x^2, int y^2, int xy
    for part in getattr(polygon, "geoms", [polygon]):
        part = orient(part, 1.0)  # exterior counter-clockwise, holes clockwise: signed sums add up
        for ring in (part.exterior, *part.interiors):
            sums += _ring_integrals(np.asarray(ring.coords)[:, :2] - origin)
    area, sx, sy, sxx, syy, sxy = sums
    if not area > 0:
        return 0.0, np.zeros((2, 2))
    cx, cy = sx / area, sy / area
    covariance = np.array([[sxx / area - cx * cx, sxy / area - cx * cy], [sxy / area - cx * cy, syy / area - cy * cy]])
    return float(area), covariance


def _ring_integrals(xy: np.ndarray) -> np.ndarray:
    x, y, xn, yn = xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1]
    cross = x * yn - xn * y
    return np.array([cross.sum() / 2, ((x + xn) * cross).sum() / 6, ((y + yn) * cross).sum() / 6,
                     ((x * x + x * xn + xn * xn) * cross).sum() / 12, ((y * y + y * yn + yn * yn) * cross).sum() / 12,
                     ((x * yn + 2 * x * y + 2 * xn * yn + xn * y) * cross).sum() / 24])


@dataclass(frozen=True)
class ShadowDepth:
    """A pit's depth from its shadow; NaNs, and ``reason``, when there is none to read."""

    shadow_length_m: float  # the visible shadow along the sunlight, on the ground
    depth_m: float  # rim to the shadow's edge on the floor: the floor's depth if the walls are steep
    depth_is_minimum: bool  # the shadow reaches the far wall: the floor is at least this deep
    method: str  # how depth was had from the length (with or without the emission correction)
    emission_deg: float  # the emission angle used (0: straight down)
    parallax: float  # tan(emission) cos(sun-to-view azimuth) taken off tan(incidence); 0 without a phase angle
    reason: str = ""  # why there is no depth; "" when there is one


def view_parallax(incidence_deg: float, emission_deg: float | None, phase_deg: float | None) -> float:
    """``tan(e) cos(dphi)``: how far, per metre of depth, the floor of a pit appears shifted towards
    the sun in an orthorectified image (negative: away from it); dphi is the azimuth between the
    directions to the sun and to the spacecraft, had from the phase angle. 0 when e or g is unknown."""
    if emission_deg is None or phase_deg is None or not (math.isfinite(emission_deg) and math.isfinite(phase_deg)):
        return 0.0
    i, e, g = (math.radians(v) for v in (incidence_deg, emission_deg, phase_deg))
    if math.sin(i) <= 0 or math.cos(e) <= 0:
        return 0.0
    parallax = (math.cos(g) - math.cos(i) * math.cos(e)) / (math.sin(i) * math.cos(e))
    return float(np.clip(parallax, -math.tan(e), math.tan(e)))


def pit_depth(pixels: np.ndarray, mask: np.ndarray, viewing: Viewing | None, pixel_size_m: float) -> ShadowDepth:
    """:func:`shadow_depth` with a label's sun and view (None: the product has no sun geometry).
    The pixels must be in the label's image frame (a HiRISE RDR's own grid, or a GeoTIFF made from it)."""
    if viewing is None:
        return _no_depth("no sun geometry: the product's label has no VIEWING_PARAMETERS", 0.0, 0.0)
    return shadow_depth(pixels, mask, sunlight=viewing.sunlight(), pixel_size_m=pixel_size_m,
                        incidence_deg=viewing.incidence_deg, emission_deg=viewing.emission_deg, phase_deg=viewing.phase_deg)


def shadow_depth(pixels: np.ndarray, mask: np.ndarray, *, sunlight: tuple[float, float], pixel_size_m: float,
                 incidence_deg: float | None, emission_deg: float | None = 0.0, phase_deg: float | None = None) -> ShadowDepth:
    """Depth of a pit from the shadow its sun-side rim casts inside it.

    pixels: (H, W) brightness of a window around the pit, with a margin of lit terrain around it
        (float or integer; NaN where there is no data). mask: (H, W) bool, the pit.
    sunlight: (d_col, d_row), the way light travels across the window (``Viewing.sunlight()``).
    pixel_size_m: one pixel's side on the ground. Angles in degrees, as the label gives them.

    The shadow is the largest connected set of pit pixels under an Otsu threshold of the pit's own
    values (the split between shadow and sunlit floor), holes filled (boulders in it), provided it is
    darker than ``SHADOW_RATIO`` of the terrain around the pit; when the whole pit is that dark
    (a shadow filling it) the threshold is halfway between the pit and the terrain. Along each
    profile parallel to the sunlight through the pit's middle (bilinear samples, so edges fall
    between pixel centres) the shadow is the run starting at the sun-side rim; its length is the
    median over the profiles. Not the longest: that takes the worst of the noise and, seen
    off-nadir across the sunlight, of the rim's curvature (10 % too long at e = 15 degrees), while
    the profiles, all within the middle 30 % of the pit, cross chords of nearly the same length.
    ``depth_is_minimum`` is that median profile's: its shadow ends at the far rim, or the depth it
    gives would throw a shadow at least as long as its chord.
    """
    emission = 0.0 if emission_deg is None or not math.isfinite(emission_deg) else float(emission_deg)
    if incidence_deg is None or not math.isfinite(incidence_deg) or not 0.0 < incidence_deg < 90.0:
        return _no_depth("no sun geometry (incidence unknown, or the sun at or below the horizon)", emission, 0.0)
    parallax = view_parallax(incidence_deg, emission, phase_deg)
    values, mask = np.asarray(pixels, dtype=float), np.asarray(mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"pixels {values.shape} and mask {mask.shape} differ in shape")
    mask = mask & np.isfinite(values)
    if mask.sum() < MIN_SHADOW_PIXELS:
        return _no_depth("the pit has too few pixels with data", emission, parallax)
    shadow, why = shadow_pixels(values, mask)
    if shadow is None:
        return _no_depth(why, emission, parallax)
    run = _median_run(shadow, mask, sunlight)
    if run is None:
        return _no_depth("dark pixels in the pit, but none against its sun-side wall: not the rim's shadow", emission, parallax)
    tan_i = math.tan(math.radians(incidence_deg))
    visible = tan_i - parallax
    if visible < MIN_VISIBLE_FRACTION * tan_i:
        return _no_depth("the view hides the shadow (the spacecraft looks from the sun's side, lower than the sun)",
                         emission, parallax)
    depth_px = run.length / visible
    minimum = run.far_gap <= RIM_TOLERANCE_PX or depth_px * tan_i >= run.chord - RIM_TOLERANCE_PX
    return ShadowDepth(run.length * pixel_size_m, depth_px * pixel_size_m, bool(minimum),
                       UNCORRECTED if phase_deg is None and emission > 0 else CORRECTED, emission, parallax)


def _no_depth(reason: str, emission: float, parallax: float) -> ShadowDepth:
    return ShadowDepth(math.nan, math.nan, False, NO_DEPTH, emission, parallax, reason)


def shadow_pixels(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(H, W) bool shadow inside ``mask`` (see :func:`shadow_depth`), or None and why there is none."""
    from scipy import ndimage

    inside = values[mask]
    terrain = values[~mask & np.isfinite(values)]
    threshold = otsu_threshold(inside)
    dark, bright = inside[inside < threshold], inside[inside >= threshold]
    lit = float(np.median(terrain)) if terrain.size >= MIN_TERRAIN_PIXELS else float(bright.mean()) if bright.size else math.nan
    if not dark.size or not lit > 0 or dark.mean() >= SHADOW_RATIO * lit:
        return None, f"no shadow: nothing in the pit is darker than {SHADOW_RATIO:g} of the terrain around it"
    if not bright.size or bright.mean() < SHADOW_RATIO * lit:  # the whole pit is in shadow
        threshold = (float(np.median(inside)) + lit) / 2
    labels, count = ndimage.label(mask & (values < threshold), structure=np.ones((3, 3), bool))
    if not count:
        return None, "no shadow"
    sizes = np.bincount(labels.ravel())[1:]
    if sizes.max() < MIN_SHADOW_PIXELS:
        return None, f"no shadow: the dark patches in the pit are under {MIN_SHADOW_PIXELS} pixels"
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1) & mask, ""


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits ``values`` in two classes (Otsu 1979: most variance between them)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


@dataclass(frozen=True)
class _Run:
    length: float  # px along the sunlight
    chord: float  # px: the pit along that profile, rim to rim
    far_gap: float  # px from the shadow's end to the far rim


def _median_run(shadow: np.ndarray, mask: np.ndarray, sunlight: tuple[float, float]) -> _Run | None:
    """The median shadow run from the sun-side rim over the profiles along the sunlight through the
    pit's middle; None when no profile has one."""
    from scipy import ndimage

    d = np.asarray(sunlight, dtype=float)
    d = d / np.hypot(*d)
    across = np.array([-d[1], d[0]])
    rows, cols = np.nonzero(mask)
    centre = np.array([cols.mean(), rows.mean()])
    along_px = (cols - centre[0]) * d[0] + (rows - centre[1]) * d[1]
    across_px = (cols - centre[0]) * across[0] + (rows - centre[1]) * across[1]
    band = max(PROFILE_STEP, CENTRAL_BAND * (across_px.max() - across_px.min()) / 2)
    offsets = np.arange(-band, band + 1e-9, PROFILE_STEP)
    steps = np.arange(along_px.min() - 2, along_px.max() + 2 + 1e-9, PROFILE_STEP)
    x = centre[0] + steps[None, :] * d[0] + offsets[:, None] * across[0]
    y = centre[1] + steps[None, :] * d[1] + offsets[:, None] * across[1]
    in_pit = ndimage.map_coordinates(mask.astype(float), [y, x], order=1, cval=0.0) >= 0.5
    dark = (ndimage.map_coordinates(shadow.astype(float), [y, x], order=1, cval=0.0) >= 0.5) & in_pit
    runs = [run for p in range(len(offsets)) if (run := _profile_run(in_pit[p], dark[p])) is not None]
    return sorted(runs, key=lambda r: r.length)[len(runs) // 2] if runs else None


def _profile_run(in_pit: np.ndarray, dark: np.ndarray) -> _Run | None:
    inside, shade = np.flatnonzero(in_pit), np.flatnonzero(dark)
    if not inside.size or not shade.size:
        return None
    first, last = inside[0], inside[-1]
    chord = (last - first + 1) * PROFILE_STEP
    start = shade[0]
    if (start - first) * PROFILE_STEP > max(START_TOLERANCE_PX, START_TOLERANCE_FRACTION * chord):
        return None
    breaks = np.flatnonzero(np.diff(shade) > 1)
    end = shade[breaks[0]] if breaks.size else shade[-1]
    return _Run((end - start + 1) * PROFILE_STEP, chord, (last - end) * PROFILE_STEP)


def depth_columns(depth: ShadowDepth, diameter_m: float, viewing: Viewing | None) -> dict:
    """The per-pit depth columns of the issue: ``shadow_length_m``, ``depth_m``, ``depth_is_minimum``,
    ``depth_diameter``, ``incidence_deg``, ``sun_azimuth_deg`` (compass: clockwise from north),
    ``emission_deg`` (used), ``depth_method`` and ``depth_note`` (why empty)."""
    ratio = depth.depth_m / diameter_m if diameter_m and math.isfinite(diameter_m) and diameter_m > 0 else math.nan
    return {"shadow_length_m": depth.shadow_length_m, "depth_m": depth.depth_m, "depth_is_minimum": depth.depth_is_minimum,
            "depth_diameter": ratio, "incidence_deg": viewing.incidence_deg if viewing else math.nan,
            "sun_azimuth_deg": viewing.sun_compass_deg if viewing else math.nan,
            "emission_deg": viewing.emission_deg if viewing else math.nan, "depth_method": depth.method,
            "depth_note": depth.reason}


def window_around(bbox: tuple[int, int, int, int], width: int, height: int, margin: float = 0.5,
                  min_margin: int = 8) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1) of a pit's bounding box (PitPixels.bbox) grown by ``margin`` of its
    larger side (at least ``min_margin`` px), inside a width x height product: the lit terrain
    :func:`shadow_depth` compares the shadow with."""
    c0, r0, c1, r1 = bbox
    pad = max(min_margin, math.ceil(margin * max(c1 - c0, r1 - r0)))
    return max(0, c0 - pad), max(0, r0 - pad), min(width, c1 + pad), min(height, r1 + pad)
