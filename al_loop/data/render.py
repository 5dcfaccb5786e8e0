"""Ray-cast images of flat-floored, vertical-walled pits on a plain: ground truth for depth and size.

The scene is what a map-projected (orthorectified) HiRISE product shows of a cylindrical pit of
diameter D and depth h cut into a flat plain, lit by the sun from incidence i and image azimuth
a_sun, seen from emission e and image azimuth a_sc (azimuths as a HiRISE label gives them:
clockwise from the image's 3 o'clock, rows going down, *towards* the sun and the spacecraft).
The view is orthographic (the spacecraft is ~300 km up; the pit is metres across) and the
orthorectification projects onto the plain, so a point at depth z appears where its line of sight
crosses the plain: shifted by ``z tan(e)`` towards the spacecraft::

        spacecraft                          sun
            \\  e                        i  /
             \\                            /
      ________\\___________      _________/____________  plain (z = 0, the map's surface)
      |        \\   near  |      |  dark  /  lit far  |
      |  hidden \\  wall  |      |  wall / \\   wall   |
      |__________\\_______|      |______/___\\_________|  floor (z = h)
                  floor seen      shadow    lit floor
          at q + h tan(e) towards the spacecraft   shadow = h tan(i) from the sun-side wall

Each sample is followed down its line of sight to the first surface it meets (floor, or the wall
opposite the spacecraft), and that point is lit when the ray from it towards the sun leaves the
cylinder before rising above the rim. Brightness is Lambertian: ``albedo (cos(theta) + sky)``
with theta the angle between the facet's normal and the sun (a vertical wall facing the sun
squarely gets ``sin(i)``, more than the floor's ``cos(i)`` when i > 45 degrees), and shadow gets
the sky term alone. Each pixel averages ``supersample`` x ``supersample`` rays, as a detector
integrates over its footprint, so edges fall between pixel centres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Lambertian albedos and the diffuse sky light (a fraction of a flat, sunlit facet's cos(i) = 1):
# Mars's dusty sky lights shadows at a few per cent to a tenth of direct sunlight.
TERRAIN_ALBEDO = 0.25
FLOOR_ALBEDO = 0.22
WALL_ALBEDO = 0.25
SKY = 0.06


@dataclass(frozen=True)
class Sun:
    """The sun and the view, degrees; azimuths clockwise from the image's 3 o'clock, towards."""

    incidence_deg: float
    sun_azimuth_deg: float
    emission_deg: float = 0.0
    spacecraft_azimuth_deg: float = 0.0


@dataclass(frozen=True)
class CylinderPit:
    """A pit: centre (col, row) in pixels (pixel centres at integers), diameter and depth in pixels."""

    col: float
    row: float
    diameter_px: float
    depth_px: float


def exit_distance(points: np.ndarray, direction: np.ndarray, radius: float) -> np.ndarray:
    """(...,) horizontal distance from points (..., 2) inside a disc centred at 0 to its edge along
    the unit vector ``direction`` (2,); 0 for points on the edge heading out."""
    b = points @ direction
    c = (points**2).sum(-1) - radius**2
    return -b + np.sqrt(np.maximum(b * b - c, 0.0))


# What a line of sight meets (surfaces_of).
SHADOWED_FLOOR, LIT_FLOOR, SHADOWED_WALL, LIT_WALL = 0, 1, 2, 3


def surfaces_of(points: np.ndarray, pit_radius: float, depth: float, sun: Sun) -> tuple[np.ndarray, np.ndarray]:
    """What each image point (N, 2) (d_col, d_row from the pit's centre, in pixels, inside the rim)
    sees of one cylindrical pit: (N,) codes (SHADOWED_FLOOR, LIT_FLOOR, SHADOWED_WALL, LIT_WALL) and
    (N,) the cosine of the sun on it (0 in shadow)."""
    i, e = math.radians(sun.incidence_deg), math.radians(sun.emission_deg)
    to_sun = np.array([math.cos(math.radians(sun.sun_azimuth_deg)), math.sin(math.radians(sun.sun_azimuth_deg))])
    to_view = np.array([math.cos(math.radians(sun.spacecraft_azimuth_deg)),
                        math.sin(math.radians(sun.spacecraft_azimuth_deg))])
    tan_i, tan_e = math.tan(i), math.tan(e)
    # The line of sight goes down and away from the spacecraft: the floor at depth * tan(e) on,
    # unless the wall opposite the spacecraft is met first.
    to_wall = exit_distance(points, -to_view, pit_radius)
    on_floor = to_wall >= depth * tan_e
    hit = points - np.where(on_floor, depth * tan_e, to_wall)[:, None] * to_view
    hit_depth = np.where(on_floor, depth, to_wall / max(tan_e, 1e-12))
    facing = np.clip(-(hit @ to_sun) / pit_radius, 0.0, None)  # the wall's inward normal . the sun's azimuth
    lit = (exit_distance(hit, to_sun, pit_radius) >= hit_depth * tan_i - 1e-9) & (on_floor | (facing > 0))
    cosine = np.where(lit, np.where(on_floor, math.cos(i), math.sin(i) * facing), 0.0)
    codes = np.where(on_floor, np.where(lit, LIT_FLOOR, SHADOWED_FLOOR), np.where(lit, LIT_WALL, SHADOWED_WALL))
    return codes, cosine


def shade_pit(points: np.ndarray, pit_radius: float, depth: float, sun: Sun, *, floor_albedo: float = FLOOR_ALBEDO,
              wall_albedo: float = WALL_ALBEDO) -> np.ndarray:
    """Brightness (N,) of image points (N, 2) (d_col, d_row from the pit's centre, in pixels, all
    inside the rim) of one cylindrical pit: Lambertian, plus the sky."""
    codes, cosine = surfaces_of(points, pit_radius, depth, sun)
    albedo = np.where((codes == LIT_FLOOR) | (codes == SHADOWED_FLOOR), floor_albedo, wall_albedo)
    return albedo * (cosine + SKY)


def render_scene(shape: tuple[int, int], pits: list[CylinderPit], sun: Sun, *, noise: float = 0.01, seed: int = 0,
                 supersample: int = 3, terrain_albedo: float = TERRAIN_ALBEDO, floor_albedo: float = FLOOR_ALBEDO,
                 wall_albedo: float = WALL_ALBEDO) -> np.ndarray:
    """(H, W) float32 brightness (I/F-like) of a plain holding ``pits`` (not overlapping), with
    Gaussian noise of ``noise`` times the plain's brightness."""
    height, width = shape
    plain = terrain_albedo * (math.cos(math.radians(sun.incidence_deg)) + SKY)
    image = np.full(shape, plain, np.float64)
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    for pit in pits:
        radius = pit.diameter_px / 2
        c0, c1 = max(0, int(math.floor(pit.col - radius - 1))), min(width, int(math.ceil(pit.col + radius + 2)))
        r0, r1 = max(0, int(math.floor(pit.row - radius - 1))), min(height, int(math.ceil(pit.row + radius + 2)))
        if c0 >= c1 or r0 >= r1:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1].astype(float)
        x = cols[..., None, None] + sub[None, None, None, :] - pit.col
        y = rows[..., None, None] + sub[None, None, :, None] - pit.row
        x, y = np.broadcast_arrays(x, y)
        points = np.stack([x, y], axis=-1).reshape(-1, 2)
        values = np.full(len(points), plain)
        inside = (points**2).sum(-1) < radius**2
        values[inside] = shade_pit(points[inside], radius, pit.depth_px, sun, floor_albedo=floor_albedo,
                                   wall_albedo=wall_albedo)
        image[r0:r1, c0:c1] = values.reshape(r1 - r0, c1 - c0, -1).mean(-1)
    if noise > 0:
        image += np.random.default_rng(seed).normal(0.0, noise * plain, shape)
    return image.astype(np.float32)


def rim_mask(shape: tuple[int, int], pit: CylinderPit) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside the pit's rim (what a perfect outline covers)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    return (cols - pit.col) ** 2 + (rows - pit.row) ** 2 <= (pit.diameter_px / 2) ** 2


def to_dn(image: np.ndarray, scale: float = 800.0 / (TERRAIN_ALBEDO * 1.0)) -> np.ndarray:
    """(H, W) uint16 10-bit DN (1..1023, 0 left for null) of a rendered brightness: ``scale`` maps a
    sunlit plain at the sun overhead to 800."""
    return np.clip(np.round(image * scale) + 1, 1, 1023).astype(np.uint16)
