"""A pit's shape from its outline and its depth from the shadow inside it, in metres.

Pure numbers: the caller projects the outline and reads the pixels; nothing here opens a file.
docs/guide/methods.md has the formulas with a diagram, the limits and the error table measured on
ray-cast pits (bench/depth_geometry.py).

Shape (:func:`shape_measures`) is measured on the outline in an equal-area projection centred on
the product (``science.measure.product_area_crs``: metres on the body, north up at the centre).
``diameter_m`` is the diameter of the circle of the same area (the same in the map: one
diameter everywhere); the longest distance across the outline is ``feret_max_m``. The axes are
those of the ellipse with the same second moments of area (what ``skimage.measure.regionprops``
calls ``major_axis_length``): exact for an ellipse, computed from the whole area, so a spur or a
pixel step on the outline moves them little. ``axis_ratio`` is minor / major (1 for a disc) and
``solidity`` the area over its convex hull's (1 for a convex outline; merged or lobate pits less).

Depth (:func:`shadow_depth`) is read from the shadow the sun-side rim casts on the floor, as PITS
(Le Corre et al. 2023, RAS Techniques and Instruments) does, under the view the label gives. On a
map-projected product (projected onto a surface that does not know the pit), distances at the
rim's level are ground distances, and a point at depth z appears shifted by ``z tan(e)`` towards
the spacecraft (e the emission). Along a profile in the direction the light travels (x) at an
offset u across it, with ``x_in(u)``/``x_out(u)`` where the profile enters and leaves the outline:

* the floor's outline is the rim's (vertical walls), seen shifted by ``h p``, ``p = tan(e) v``
  (v the unit vector towards the spacecraft; ``p_x``, ``p_u`` its parts along and across);
* the floor's shadow runs ``h tan(i)`` from the floor's sun-side edge, which is seen at
  ``x_in(u - h p_u) + h p_x``;
* the dark run the image shows starts at the rim, ``x_in(u)``: on the sun's side of the view the
  near wall hides the start of the shadow, on the other side the shadowed sun-side wall shows.

So the run is ``L = x_in(u - h p_u) - x_in(u) + h (tan(i) + p_x)``, solved for h per profile (a
fixed point: the first term is 0 on the line through the middle of the rim and the seen floor,
and small elsewhere), then the median over the profiles through the pit's middle. For a circle on
its centre line this is ``h = L / (tan(i) - tan(e) cos(dphi))``, dphi the azimuth from the sun to
the spacecraft: PITS's correction without its foreshortening factor (1 on an orthoimage).

What follows the dark run decides what is knowable. The geometry says where the lit floor can be
seen, from the run's end to ``min(x_out(u - h p_u) + h p_x, x_out(u))``; beyond it (on the sun's
side of the view) the lit wall facing the sun. When that stretch of lit floor is under
``MIN_LIT_FLOOR_PX`` the shadow covers all the floor in view: the bright thing after it is wall,
and only a minimum is known: ``h >= chord / tan(i)``, the depth at which the shadow reaches the far
wall (``depth_is_minimum``). The edge between dark and lit is placed where the profile crosses
halfway between the shadow's level (read at the sun-side rim, where the geometry puts shadow) and
the level of what lies just beyond the edge (lit floor or lit wall: its own level, so a dark floor
is not taken for shadow), between samples. When the view hides the shadow (the spacecraft on the
sun's side and nearly as low as the sun), or the profiles disagree, ``method`` is
``UNRESOLVED`` and there is no number.

``depth_err_m`` is one standard error, propagated from the edges' localisation (``EDGE_SIGMA_PX`` at
each end of the run), the spread of the profiles, and the angles' uncertainty (``ANGLE_SIGMA_DEG``
for i and e, ``AZIMUTH_SIGMA_DEG`` for the sun-to-view azimuth; when the label gives no emission,
``NADIR_EMISSION_SIGMA_DEG`` for an assumed nadir view; without the spacecraft's azimuth, half the
difference between the two sides the phase angle allows). The depth is the *apparent* one: rim to
the shadow's edge on the floor, the floor's depth if the walls are vertical and the floor flat.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from al_loop.data.viewing import NADIR_ASSUMED, Viewing, image_direction

# The shadow's darkness: its level under this fraction of the lit terrain around the pit. A shadow
# is lit by the sky alone, far darker than sunlit ground; a floor of other dust or sand that is not
# in shadow rarely differs from the ground around it by a factor of two.
SHADOW_RATIO = 0.5
MIN_PIT_PIXELS = 12
MIN_TERRAIN_PIXELS = 20
# Profiles along the sunlight: every PROFILE_STEP px across the pit's middle CENTRAL_BAND (a
# fraction of its half-width across the sunlight: chords there are >= 95 % of the widest one),
# sampled every PROFILE_STEP px along.
CENTRAL_BAND = 0.3
PROFILE_STEP = 0.5
MIN_PROFILES = 3
# Where the shadow's level is read: this far in from the sun-side rim.
RIM_DEPTH_PX = 1.5
# The first guess at the shadow's edge: this far from the shadow's level to the lit terrain's.
FIRST_EDGE_FRACTION = 0.3
# Less lit floor than this after the shadow, and what is lit is wall: the shadow fills the floor.
MIN_LIT_FLOOR_PX = 1.5
# The view must leave this fraction of the shadow's length visible ((tan i + p_x) / tan i).
MIN_VISIBLE_FRACTION = 0.15
# Profiles whose depths spread more than this (interquartile range / median) have no common edge.
MAX_PROFILE_SPREAD = 0.5
# One standard error: of an edge between pixel centres (the rim's from the outline, the shadow's
# from the halfway crossing), of the label's angles (given for the product's centre; the local
# ground tilts them), of the sun-to-view azimuth, and of an emission the label does not give
# (HiRISE rolls up to 30 degrees; most images are within 10 of nadir).
EDGE_SIGMA_PX = 0.5
ANGLE_SIGMA_DEG = 0.5
AZIMUTH_SIGMA_DEG = 2.0
NADIR_EMISSION_SIGMA_DEG = 10.0
# Below this axis ratio the outline has no orientation worth a number.
AXIS_RATIO_FOR_AZIMUTH = 1.02

# depth_method: how the depth was had, or why there is none.
SHADOW = "shadow"  # the shadow ends on sunlit floor: depth_m is the apparent depth
SHADOW_MINIMUM = "shadow-fills-floor"  # no lit floor in view: depth_m is a minimum
UNRESOLVED = "unresolved"  # shadow, lit floor and lit wall cannot be told apart here: no number
NO_SHADOW = "no-shadow"
NO_GEOMETRY = "no-geometry"

SHAPE_KEYS = ("area_m2", "diameter_m", "feret_max_m", "major_axis_m", "minor_axis_m", "axis_ratio", "solidity",
              "axis_azimuth_deg")


def shape_measures(polygon) -> dict:
    """Shape of a pit outline in an equal-area CRS in metres, north up (+y): ``area_m2``,
    ``diameter_m`` (of the circle of the same area), ``feret_max_m`` (the longest distance across),
    ``major_axis_m`` and ``minor_axis_m`` (full axes of the ellipse with the same second moments),
    ``axis_ratio`` (minor / major), ``solidity`` (area / convex hull's area) and
    ``axis_azimuth_deg`` (the major axis, degrees clockwise from north in 0..180; NaN when the axes
    differ by under 2 %). Polygons or multipolygons; holes count against the area. All NaN for an
    empty outline."""
    area, covariance = _second_moments(polygon)
    if not area > 0:
        return dict.fromkeys(SHAPE_KEYS, math.nan)
    values, vectors = np.linalg.eigh(covariance)
    minor, major = (4.0 * math.sqrt(max(v, 0.0)) for v in values)
    east, north = vectors[:, 1]
    azimuth = math.degrees(math.atan2(east, north)) % 180.0 if major >= AXIS_RATIO_FOR_AZIMUTH * minor else math.nan
    hull = polygon.convex_hull
    corners = np.asarray(hull.exterior.coords)[:, :2] if hull.geom_type == "Polygon" else np.zeros((1, 2))
    feret = float(np.sqrt(((corners[:, None, :] - corners[None, :, :]) ** 2).sum(-1)).max())
    return {"area_m2": area, "diameter_m": 2.0 * math.sqrt(area / math.pi), "feret_max_m": feret,
            "major_axis_m": major, "minor_axis_m": minor, "axis_ratio": minor / major if major > 0 else math.nan,
            "solidity": area / hull.area if hull.area > 0 else math.nan, "axis_azimuth_deg": azimuth}


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

    shadow_length_m: float  # the dark run from the sun-side rim along the sunlight, as seen (median profile)
    depth_m: float  # apparent depth: rim to the shadow's edge on the floor (a minimum when depth_is_minimum)
    depth_err_m: float  # one standard error of depth_m (see the module's docstring)
    depth_is_minimum: bool  # the shadow covers all the floor in view: the floor is at least this deep
    method: str  # SHADOW, SHADOW_MINIMUM, UNRESOLVED, NO_SHADOW or NO_GEOMETRY
    emission_deg: float  # the emission used (0: straight down)
    reason: str = ""  # why there is no number, or what was assumed; "" otherwise


def pit_depth(pixels: np.ndarray, mask: np.ndarray, viewing: Viewing | None, pixel_size_m: float) -> ShadowDepth:
    """:func:`shadow_depth` with a label's sun and view (None: the product has no sun geometry).
    The pixels must be in the label's image frame (a HiRISE RDR's own grid, or a GeoTIFF made from it)."""
    if viewing is None:
        return _no_depth(NO_GEOMETRY, "no sun geometry: the product's label has no VIEWING_PARAMETERS", 0.0)
    return shadow_depth(pixels, mask, viewing, pixel_size_m)


@dataclass(frozen=True)
class _Profiles:
    """Samples along the sunlight (x) on lines across it (u), in pixels from the pit's centroid."""

    offsets: np.ndarray  # (P,) u of each profile
    x_in: np.ndarray  # (P,) where each enters the outline (sun side), NaN when it misses
    x_out: np.ndarray  # (P,) where it leaves
    steps: np.ndarray  # (S,) x of the samples
    values: np.ndarray  # (P, S) brightness, NaN outside the data
    inside: np.ndarray  # (P, S) bool, in the outline

    def entry(self, u: float) -> float:
        return float(np.interp(u, self.offsets, self.x_in))

    def exit(self, u: float) -> float:
        return float(np.interp(u, self.offsets, self.x_out))


def shadow_depth(pixels: np.ndarray, mask: np.ndarray, viewing: Viewing, pixel_size_m: float) -> ShadowDepth:
    """Apparent depth of a pit from the shadow its sun-side rim casts inside it (module docstring).

    pixels: (H, W) brightness of a window around the pit, with a margin of lit terrain around it
        (float or integer; NaN where there is no data). mask: (H, W) bool, the pit's outline.
    viewing: the label's sun and view, in the window's pixel frame. pixel_size_m: one pixel's side
        on the ground (the label's MAP_SCALE or the raster's transform).
    """
    emission = float(viewing.emission_deg)
    incidence = viewing.incidence_deg
    if incidence is None or not math.isfinite(incidence) or not 0.0 < incidence < 90.0:
        return _no_depth(NO_GEOMETRY, "no sun geometry (incidence unknown, or the sun at or below the horizon)",
                         emission)
    values, mask = np.asarray(pixels, dtype=float), np.asarray(mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"pixels {values.shape} and mask {mask.shape} differ in shape")
    mask = mask & np.isfinite(values)
    if mask.sum() < MIN_PIT_PIXELS:
        return _no_depth(UNRESOLVED, "the pit has too few pixels with data", emission)
    terrain = values[~mask & np.isfinite(values)]
    lit_level = float(np.median(terrain)) if terrain.size >= MIN_TERRAIN_PIXELS else math.nan
    light = np.asarray(viewing.sunlight(), dtype=float)
    profiles = _profiles(values, mask, light)
    runs, dark = _dark_runs(profiles, lit_level)
    if runs is None:
        return _no_depth(NO_SHADOW, dark, emission)
    candidates = [_solve(profiles, runs, viewing, light, dphi) for dphi in viewing.sun_view_azimuths()]
    return _combine(candidates, viewing, pixel_size_m)


def _profiles(values: np.ndarray, mask: np.ndarray, light: np.ndarray) -> _Profiles:
    """Bilinear samples along the sunlight on lines across the whole pit, every PROFILE_STEP px."""
    from scipy import ndimage

    across = np.array([-light[1], light[0]])
    rows, cols = np.nonzero(mask)
    centre = np.array([cols.mean(), rows.mean()])
    along_px = (cols - centre[0]) * light[0] + (rows - centre[1]) * light[1]
    across_px = (cols - centre[0]) * across[0] + (rows - centre[1]) * across[1]
    offsets = np.arange(across_px.min() - 1, across_px.max() + 1 + 1e-9, PROFILE_STEP)
    steps = np.arange(along_px.min() - 2, along_px.max() + 2 + 1e-9, PROFILE_STEP)
    x = centre[0] + steps[None, :] * light[0] + offsets[:, None] * across[0]
    y = centre[1] + steps[None, :] * light[1] + offsets[:, None] * across[1]
    cover = ndimage.map_coordinates(mask.astype(float), [y, x], order=1, cval=0.0)
    filled = np.where(np.isfinite(values), values, np.nanmedian(values))
    sampled = ndimage.map_coordinates(filled, [y, x], order=1, cval=np.nan)
    known = ndimage.map_coordinates(np.isfinite(values).astype(float), [y, x], order=1, cval=0.0) > 0.99
    x_in, x_out = np.full(len(offsets), np.nan), np.full(len(offsets), np.nan)
    for p in range(len(offsets)):
        x_in[p], x_out[p] = _crossings(steps, cover[p])
    return _Profiles(offsets, x_in, x_out, steps, np.where(known, sampled, np.nan), cover >= 0.5)


def _crossings(steps: np.ndarray, cover: np.ndarray) -> tuple[float, float]:
    """Where a profile's mask coverage first rises through 0.5 and last falls through it (between samples)."""
    inside = np.flatnonzero(cover >= 0.5)
    if not inside.size:
        return math.nan, math.nan
    first, last = inside[0], inside[-1]
    start = _between(steps, cover, first - 1, first, 0.5) if first > 0 else steps[first]
    end = _between(steps, cover, last, last + 1, 0.5) if last + 1 < len(steps) else steps[last]
    return start, end


def _between(steps: np.ndarray, values: np.ndarray, a: int, b: int, level: float) -> float:
    va, vb = values[a], values[b]
    t = 0.5 if vb == va else min(1.0, max(0.0, (level - va) / (vb - va)))
    return float(steps[a] + t * (steps[b] - steps[a]))


@dataclass(frozen=True)
class _Run:
    offset: float  # u, px
    start: float  # x where the dark run starts: the sun-side rim
    end: float  # x where it ends: the halfway crossing to what is lit beyond, or the far rim
    rim_out: float  # x of the far rim


def _dark_runs(profiles: _Profiles, lit_level: float) -> tuple[list[_Run] | None, str]:
    """The dark run from the sun-side rim on each central profile, or None and why there is none.

    The shadow's level is read where the geometry puts shadow whenever there is any: just inside
    the sun-side rim. Each profile's edge is first sought FIRST_EDGE_FRACTION of the way from the
    shadow to the lit terrain, then placed halfway between the shadow and the level just beyond.
    """
    half_width = (np.nanmax(profiles.offsets) - np.nanmin(profiles.offsets)) / 2
    centre = (np.nanmax(profiles.offsets) + np.nanmin(profiles.offsets)) / 2
    band = np.flatnonzero((np.abs(profiles.offsets - centre) <= max(PROFILE_STEP, CENTRAL_BAND * half_width))
                          & np.isfinite(profiles.x_in))
    near_rim = [profiles.values[p][(profiles.steps >= profiles.x_in[p]) & (profiles.steps <= profiles.x_in[p] + RIM_DEPTH_PX)
                                   & profiles.inside[p]] for p in band]
    near_rim = np.concatenate(near_rim) if near_rim else np.array([])
    near_rim = near_rim[np.isfinite(near_rim)]
    inside = np.concatenate([profiles.values[p][profiles.inside[p]] for p in band]) if band.size else np.array([])
    inside = inside[np.isfinite(inside)]
    if near_rim.size < 2 or inside.size < MIN_PIT_PIXELS:
        return None, "no profile along the sunlight crosses the pit with data"
    shadow = float(np.median(near_rim))
    reference = lit_level if math.isfinite(lit_level) else float(np.percentile(inside, 90))
    if not shadow < SHADOW_RATIO * reference:
        return None, (f"no shadow at the sun-side rim: nothing there is darker than {SHADOW_RATIO:g} of the "
                      "terrain around the pit")
    # The first guess at the edge: well above the shadow, below any sunlit floor. The terrain is as
    # flat as the floor, so lit floor is as bright unless its albedo is far lower (a lit wall facing
    # the sun can be much brighter: a threshold halfway to it would take the lit floor for shadow).
    lit = shadow + FIRST_EDGE_FRACTION * ((lit_level if math.isfinite(lit_level) else float(np.percentile(inside, 90)))
                                         - shadow)
    # nothing lit anywhere in the pit (a pixel's blend with the terrain at the rim aside): shadow to the far rim
    away_from_rim = ((profiles.steps[None, :] > profiles.x_in[:, None] + 1.0)
                     & (profiles.steps[None, :] < profiles.x_out[:, None] - 1.0))
    lit_samples = int(np.sum(away_from_rim & (profiles.values > lit)))
    all_dark = lit_samples * PROFILE_STEP**2 < MIN_LIT_FLOOR_PX**2
    # every profile across the pit: the seen floor's middle is off the rim's when the view is oblique
    every = np.flatnonzero(np.isfinite(profiles.x_in) & np.isfinite(profiles.x_out))
    ends = profiles.x_out[every] if all_dark else _run_ends(profiles, every, shadow, lit)
    runs = [_Run(float(profiles.offsets[p]), float(profiles.x_in[p]), float(end), float(profiles.x_out[p]))
            for p, end in zip(every, ends, strict=True)]
    if sum(abs(r.offset - centre) <= CENTRAL_BAND * half_width for r in runs) < MIN_PROFILES:
        return None, "too few profiles along the sunlight cross the pit"
    return runs, ""


def _run_ends(profiles: _Profiles, rows: np.ndarray, shadow: float, first_guess: float) -> np.ndarray:
    """(len(rows),) x where each profile's dark run from the sun-side rim ends: its first crossing of
    the first guess, then of the level halfway between the shadow and what lies just beyond (1-3 px
    on), between samples; the far rim where it never crosses. All profiles at once."""
    steps = profiles.steps
    values, inside = profiles.values[rows], profiles.inside[rows]
    rim_out = profiles.x_out[rows]
    # the first pixel inside the rim mixes terrain into what bilinear samples read: the edge is sought beyond
    within = inside & (steps[None, :] >= profiles.x_in[rows][:, None] + 1.0)
    threshold = np.full(len(rows), first_guess)
    index = np.arange(len(rows))
    end = rim_out
    for step in range(2):
        above = within & (values > threshold[:, None])
        crossed = above.any(axis=1)
        k = np.argmax(above, axis=1)
        before = np.maximum(k - 1, 0)
        low, high = values[index, before], values[index, k]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(high == low, 0.5, (threshold - low) / (high - low)), 0.0, 1.0)
        at = steps[before] + t * (steps[k] - steps[before])
        at = np.where(np.isfinite(at) & (k > 0), at, steps[k])
        end = np.where(crossed, at, rim_out)
        if step:
            break
        near = inside & (steps[None, :] >= end[:, None] + 1.0) & (steps[None, :] <= end[:, None] + 3.0)
        beyond = np.where(near, values, np.nan)
        counted = np.isfinite(beyond).any(axis=1)
        level = np.full(len(rows), np.nan)
        if counted.any():
            level[counted] = np.nanmedian(beyond[counted], axis=1)
        threshold = np.where(crossed & counted & (level > shadow), (shadow + level) / 2, threshold)
    return np.minimum(end, rim_out)


@dataclass(frozen=True)
class _Solution:
    depth_px: float  # median over the profiles (a minimum when minimum)
    spread_px: float  # 1.4826 MAD of the profiles' depths
    n: int
    minimum: bool
    hidden: bool  # the view hides the shadow
    visible_slope: float  # tan(i) + p_x
    dphi_deg: float
    run_px: float  # median dark run


def _solve(profiles: _Profiles, runs: list[_Run], viewing: Viewing, light: np.ndarray, dphi: float) -> _Solution:
    """Depth per profile under one sun-to-view azimuth (module docstring), and their median."""
    tan_i = math.tan(math.radians(viewing.incidence_deg))
    view = np.asarray(image_direction(viewing.sun_azimuth_deg + dphi)) * math.tan(math.radians(viewing.emission_deg))
    p_x, p_u = float(view @ light), float(view @ np.array([-light[1], light[0]]))
    slope = tan_i + p_x
    if slope < MIN_VISIBLE_FRACTION * tan_i:
        return _Solution(math.nan, math.nan, len(runs), False, True, slope, dphi,
                         float(np.median([r.end - r.start for r in runs])))
    offsets = np.array([r.offset for r in runs])
    low, high = offsets.min(), offsets.max()
    half = CENTRAL_BAND * (high - low) / 2
    first = _band_solution(profiles, [r for r in runs if abs(r.offset - (low + high) / 2) <= half], tan_i, p_x, p_u,
                           slope, dphi)
    # The seen floor is the rim's disc and the floor's, shifted by h p: its longest chords lie halfway.
    middle = min(max((low + high) / 2 + first.depth_px * p_u / 2, low + half), high - half)
    band = [r for r in runs if abs(r.offset - middle) <= half]
    return _band_solution(profiles, band, tan_i, p_x, p_u, slope, dphi) if len(band) >= MIN_PROFILES else first


def _band_solution(profiles: _Profiles, runs: list[_Run], tan_i: float, p_x: float, p_u: float, slope: float,
                   dphi: float) -> _Solution:
    lengths = np.array([r.end - r.start for r in runs])
    depths, minima = [], []
    for run in runs:
        h = (run.end - run.start) / slope
        for _ in range(4):  # the floor's outline is the rim's, seen shifted by h p
            h = max(0.0, (run.end - run.start - (profiles.entry(run.offset - h * p_u) - run.start)) / slope)
        floor_out = profiles.exit(run.offset - h * p_u)
        lit_floor = min(floor_out + h * p_x, run.rim_out) - run.end
        if lit_floor < MIN_LIT_FLOOR_PX:  # the shadow covers the floor in view: what is lit beyond is wall
            depths.append(_least_filling_depth(profiles, run, p_x, p_u, tan_i))
            minima.append(True)
        else:
            depths.append(h)
            minima.append(False)
    depths, minima = np.array(depths), np.array(minima)
    minimum = bool(minima.sum() * 2 > len(minima))
    chosen = depths[minima] if minimum else depths[~minima]
    spread = 1.4826 * float(np.median(np.abs(chosen - np.median(chosen))))
    return _Solution(float(np.median(chosen)), spread, len(chosen), minimum, False, slope, dphi,
                     float(np.median(lengths)))


def _least_filling_depth(profiles: _Profiles, run: _Run, p_x: float, p_u: float, tan_i: float) -> float:
    """The least depth h whose shadow covers all the floor seen on a profile (a lower bound): the
    floor line under it, ``u - h p_u``, seen from ``x_in(u - h p_u) + h p_x`` to the nearer of its far
    edge ``x_out(u - h p_u) + h p_x`` (beyond it the lit wall, when the spacecraft is on the sun's
    side) and the far rim (beyond which the near wall hides the floor, when it is on the other side);
    its shadow reaches ``x_in(u - h p_u) + h (tan(i) + p_x)``. Bisection on h."""
    def covered(h: float) -> bool:
        u = run.offset - h * p_u
        if not profiles.offsets.min() <= u <= profiles.offsets.max():
            return True  # that floor line is not in view at all
        floor_in, floor_out = profiles.entry(u), profiles.exit(u)
        if not (math.isfinite(floor_in) and math.isfinite(floor_out)):
            return True
        return floor_in + h * (tan_i + p_x) >= min(floor_out + h * p_x, run.rim_out) - MIN_LIT_FLOOR_PX

    low, high = 0.0, max(run.rim_out - run.start, PROFILE_STEP) / max(tan_i + p_x, 1e-6)
    if not covered(high):
        return high
    for _ in range(16):  # to 1/65536 of the first bracket: well under the edges' own 0.5 px
        mid = (low + high) / 2
        low, high = (low, mid) if covered(mid) else (mid, high)
    return high


def _combine(candidates: list[_Solution], viewing: Viewing, pixel_size_m: float) -> ShadowDepth:
    """One depth from the sun-to-view azimuths allowed (one, or the phase angle's two sides)."""
    emission = float(viewing.emission_deg)
    note = viewing.assumed
    if any(c.hidden for c in candidates):
        return _no_depth(UNRESOLVED, "the view hides the shadow: the spacecraft looks from the sun's side, "
                         "nearly as low as the sun", emission)
    if len({c.minimum for c in candidates}) > 1:
        return _no_depth(UNRESOLVED, "which side of the sun line the spacecraft is on decides whether lit floor "
                         "shows (the label has no SUB_SPACECRAFT_AZIMUTH)", emission)
    depths = np.array([c.depth_px for c in candidates])
    depth = float(depths.mean())
    if not depth > 0:
        return _no_depth(UNRESOLVED, "the dark run is no longer than the rim's own edge", emission)
    spread = max(c.spread_px for c in candidates)
    # Lower bounds differ from profile to profile by the floor's chords: only depths must agree
    # (beyond what the edges' own localisation allows).
    if (not candidates[0].minimum and spread > MAX_PROFILE_SPREAD * depth
            and spread * candidates[0].visible_slope > 4 * EDGE_SIGMA_PX):
        return _no_depth(UNRESOLVED, "the profiles along the sunlight disagree: no common shadow edge", emission)
    minimum = candidates[0].minimum
    err_px = _error_px(candidates, depth, viewing, minimum)
    length = float(np.median([c.run_px for c in candidates]))
    return ShadowDepth(length * pixel_size_m, depth * pixel_size_m, err_px * pixel_size_m, minimum,
                       SHADOW_MINIMUM if minimum else SHADOW, emission, note)


def _error_px(candidates: list[_Solution], depth: float, viewing: Viewing, minimum: bool) -> float:
    """One standard error of the depth, in pixels: edges, profile spread, angles (module docstring)."""
    i, e = math.radians(viewing.incidence_deg), math.radians(viewing.emission_deg)
    tan_i = math.tan(i)
    terms = []
    for c in candidates:
        dphi = math.radians(c.dphi_deg)
        slope = tan_i if minimum else c.visible_slope  # a minimum is chord / tan(i): no view term
        edges = math.sqrt(2.0) * EDGE_SIGMA_PX / slope
        statistical = c.spread_px * math.sqrt(math.pi / 2 / max(c.n, 1))
        d_slope = [math.radians(ANGLE_SIGMA_DEG) / math.cos(i) ** 2]
        if not minimum:
            d_slope += [math.radians(ANGLE_SIGMA_DEG) * math.cos(dphi) / math.cos(e) ** 2,
                        math.radians(AZIMUTH_SIGMA_DEG) * math.tan(e) * math.sin(dphi)]
            if viewing.assumed == NADIR_ASSUMED:  # the view is unknown: up to its full parallax either way
                d_slope.append(math.tan(math.radians(NADIR_EMISSION_SIGMA_DEG)))
        angles = depth * math.hypot(*d_slope) / slope
        terms.append(math.sqrt(edges**2 + statistical**2 + angles**2))
    sides = (max(c.depth_px for c in candidates) - min(c.depth_px for c in candidates)) / 2
    return math.hypot(max(terms), sides)


def _no_depth(method: str, reason: str, emission: float) -> ShadowDepth:
    return ShadowDepth(math.nan, math.nan, math.nan, False, method, emission, reason)


def depth_columns(depth: ShadowDepth, diameter_m: float, viewing: Viewing | None) -> dict:
    """The per-pit depth columns: ``shadow_length_m``, ``depth_m`` (apparent, from the shadow),
    ``depth_err_m``, ``depth_is_minimum``, ``d_over_D``, ``depth_method``, ``depth_note`` (why empty, or
    what was assumed), ``incidence_deg``, ``emission_deg``, ``sun_azimuth_deg`` and
    ``spacecraft_azimuth_deg`` (compass: clockwise from north; NaN when the label has no spacecraft
    azimuth)."""
    ratio = depth.depth_m / diameter_m if diameter_m and math.isfinite(diameter_m) and diameter_m > 0 else math.nan
    spacecraft = math.nan
    if viewing is not None and viewing.spacecraft_azimuth_deg is not None:
        spacecraft = (viewing.spacecraft_azimuth_deg - viewing.north_azimuth_deg) % 360.0
    return {"shadow_length_m": depth.shadow_length_m, "depth_m": depth.depth_m, "depth_err_m": depth.depth_err_m,
            "depth_is_minimum": depth.depth_is_minimum, "d_over_D": ratio, "depth_method": depth.method,
            "depth_note": depth.reason, "incidence_deg": viewing.incidence_deg if viewing else math.nan,
            "emission_deg": viewing.emission_deg if viewing else math.nan,
            "sun_azimuth_deg": viewing.sun_compass_deg if viewing else math.nan, "spacecraft_azimuth_deg": spacecraft}


def window_around(bbox: tuple[int, int, int, int], width: int, height: int, margin: float = 0.5,
                  min_margin: int = 8) -> tuple[int, int, int, int]:
    """(col0, row0, col1, row1) of a pit's bounding box (PitPixels.bbox) grown by ``margin`` of its
    larger side (at least ``min_margin`` px), inside a width x height product: the lit terrain
    :func:`shadow_depth` compares the shadow with."""
    c0, r0, c1, r1 = bbox
    pad = max(min_margin, math.ceil(margin * max(c1 - c0, r1 - r0)))
    return max(0, c0 - pad), max(0, r0 - pad), min(width, c1 + pad), min(height, r1 + pad)
