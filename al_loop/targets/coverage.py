"""What HiRISE has already imaged over a point, from the archive's cumulative index, and what
image would help next.

**Covers.** An observation covers a point when the point lies inside the quadrilateral of its
four corners (``CORNER1..4_LATITUDE/LONGITUDE``; only ``_RED`` products are read). Footprints
are thin strips turned by the orbit's inclination, so the min/max latitude/longitude box holds
far more than the strip: it only pre-selects. The test is made on the gnomonic projection
centred on the point (unit vectors on the sphere, divided by their component along the point's
direction): great circles become straight lines, so the quadrilateral's edges stay straight, and
longitudes never enter as numbers to subtract, so the 0/360 seam and the poles need no care.
The corners are put in angular order around their mean first (the index's corner order is not
relied on). A point on an edge counts as inside.

**Stereo.** Two covering observations form a stereo pair when

* a DTM of the index lists both (``LEFT_OBSERVATION_ID``, ``RIGHT_OBSERVATION_ID``): ``stereo =
  "dtm"`` and ``dtm`` names the DTM's product ID; else
* at least one of the two is flagged ``STEREO_FLAG = YES`` (taken as intended for a pair) and
  their *convergence angle* at the point is 10-60 degrees: ``stereo = "pair"``. The convergence
  is the angle between the two directions from the ground to the spacecraft. Each is the unit
  vector (east, north, up) = (sin e sin a, sin e cos a, cos e), with ``e`` the index's
  ``EMISSION_ANGLE`` and ``a`` the look azimuth: the compass bearing from the point to the
  image's sub-spacecraft point (``SUB_SPACECRAFT_LATITUDE/LONGITUDE``). An index without the
  sub-spacecraft point leaves the convergence unknown and pairs to the DTM index alone.

**Next image** (:func:`suggest_next`), from what is missing, in this order:

1. nothing covers the point: "first HiRISE image";
2. no DTM and no pair: "stereo partner", with the geometry that would pair with the
   lowest-incidence image: emission ``max(5, 20 - e)`` degrees looking from the opposite side
   (a convergence near 20 degrees, what HiRISE stereo pairs usually have);
3. the floor of a pit is never sunlit: "lower incidence for the floor". A pit of depth ``d`` and
   diameter ``D`` has half its floor lit while ``d tan(i) <= D / 2``, so the wanted incidence is
   ``i <= atan(D / (2 d))`` (45 degrees when the depth is unknown); asked for when every
   covering image is above it;
4. the pit spans fewer than ``MIN_PIXELS_ACROSS`` pixels in the sharpest covering image:
   "full-resolution image".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.hirise_index import DtmIndex, RdrIndex, load_dtm_index, load_rdr_index

CONVERGENCE_DEG = (10.0, 60.0)  # a stereo pair's convergence angle at the point
PARTNER_CONVERGENCE_DEG = 20.0  # what a suggested partner aims for
FLOOR_LIT_SHARE = 0.5  # share of a pit's floor that should be sunlit
UNKNOWN_DEPTH_INCIDENCE_DEG = 45.0
MIN_PIXELS_ACROSS = 10.0  # a pit spanning fewer pixels than this is asked for at full resolution
FULL_RESOLUTION_M = 0.25
PRESELECT_MARGIN_RAD = 1e-6  # rounding slack around each footprint's circumscribed cap


@dataclass(frozen=True)
class Observation:
    """One covering ``_RED`` image, its geometry at the point as the index gives it (degrees)."""

    observation_id: str
    product_id: str
    start_time: str
    solar_longitude: float
    incidence: float
    emission: float
    phase: float
    map_scale: float  # metres per pixel
    stereo_flag: bool
    look_azimuth: float  # compass bearing from the point to the sub-spacecraft point (NaN: unknown)

    @property
    def date(self) -> str:
        return self.start_time[:10]


@dataclass(frozen=True)
class StereoPair:
    left: str  # observation IDs
    right: str
    convergence_deg: float  # NaN when only the DTM index says they pair
    dtm: str | None  # the DTM's product ID when one exists


@dataclass
class Coverage:
    """Everything the index says about one point; empty when no footprint holds it."""

    observations: list[Observation] = field(default_factory=list)
    pairs: list[StereoPair] = field(default_factory=list)
    suggestion: str = ""

    @property
    def stereo(self) -> str:
        """``"dtm"`` (a DTM exists), ``"pair"`` (a pair by the rule above) or ``""``."""
        if any(p.dtm for p in self.pairs):
            return "dtm"
        return "pair" if self.pairs else ""

    @property
    def dtm(self) -> list[str]:
        return sorted({p.dtm for p in self.pairs if p.dtm})

    def columns(self) -> dict:
        """The flat columns of a candidate's row (lists joined with ``;`` in the order of the images)."""
        obs = sorted(self.observations, key=lambda o: o.start_time)
        best = min(obs, key=lambda o: o.incidence, default=None)
        return {
            "n_images": len(obs),
            "images": ";".join(o.observation_id for o in obs),
            "image_dates": ";".join(o.date for o in obs),
            "image_ls": ";".join(_fmt(o.solar_longitude, 1) for o in obs),
            "image_incidence": ";".join(_fmt(o.incidence, 1) for o in obs),
            "image_emission": ";".join(_fmt(o.emission, 1) for o in obs),
            "image_scale_m": ";".join(_fmt(o.map_scale, 2) for o in obs),
            "min_incidence_deg": best.incidence if best else math.nan,
            "stereo": self.stereo,
            "stereo_pairs": ";".join(f"{p.left}+{p.right}" for p in self.pairs),
            "dtm": ";".join(self.dtm),
            "suggested_next": self.suggestion,
        }


def _fmt(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


# ---- geometry (pure) -------------------------------------------------------------------------------------------


def unit_vectors(lat, lon) -> np.ndarray:
    """(..., 3) unit vectors of points in degrees (any longitude convention)."""
    phi, lam = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def footprint_caps(corner_lat: np.ndarray, corner_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each footprint's circumscribed cap: centre (N, 3) unit vectors and cos of its angular radius
    (N,); a footprint with a missing corner gets cos 2 (a cap nothing is inside)."""
    corners = unit_vectors(corner_lat, corner_lon)  # (N, 4, 3)
    centre = corners.sum(axis=1)
    centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-300)
    cos_r = np.einsum("nkd,nd->nk", corners, centre).min(axis=1)
    cos_r = np.cos(np.arccos(np.clip(cos_r, -1.0, 1.0)) + PRESELECT_MARGIN_RAD)
    return centre, np.where(np.isfinite(cos_r), cos_r, 2.0)


def inside_quads(point: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(K,) bool: is the unit vector ``point`` (3,) inside each quadrilateral of unit-vector
    ``corners`` (K, 4, 3)? Tested on the gnomonic plane at the point (see the module docstring);
    corners on the far hemisphere never hold it."""
    east = np.cross([0.0, 0.0, 1.0], point)
    east = east / np.linalg.norm(east) if np.linalg.norm(east) > 1e-12 else np.array([0.0, 1.0, 0.0])
    north = np.cross(point, east)
    depth = corners @ point  # (K, 4)
    ahead = (depth > 0).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.stack([corners @ east, corners @ north], axis=-1) / depth[..., None]  # (K, 4, 2)
    centre = xy.mean(axis=1, keepdims=True)
    order = np.argsort(np.arctan2(xy[..., 1] - centre[..., 1], xy[..., 0] - centre[..., 0]), axis=1)
    ring = np.take_along_axis(xy, order[..., None], axis=1)
    edge = np.roll(ring, -1, axis=1) - ring
    cross = edge[..., 0] * (-ring[..., 1]) - edge[..., 1] * (-ring[..., 0])  # edge x (origin - vertex)
    return ahead & (cross >= -1e-15).all(axis=1) & np.isfinite(xy).all(axis=(1, 2))


def bearing_deg(lat1: float, lon1: float, lat2, lon2) -> np.ndarray:
    """Compass bearing (degrees clockwise from north) from point 1 to each point 2 on the sphere."""
    p1, p2 = math.radians(lat1), np.radians(np.asarray(lat2, float))
    dlon = np.radians(np.asarray(lon2, float) - lon1)
    y = np.sin(dlon) * np.cos(p2)
    x = math.cos(p1) * np.sin(p2) - math.sin(p1) * np.cos(p2) * np.cos(dlon)
    return np.degrees(np.arctan2(y, x)) % 360.0


def look_vector(emission_deg: float, azimuth_deg: float) -> np.ndarray:
    """(east, north, up) unit vector from the ground towards the spacecraft."""
    e, a = math.radians(emission_deg), math.radians(azimuth_deg)
    return np.array([math.sin(e) * math.sin(a), math.sin(e) * math.cos(a), math.cos(e)])


def convergence_deg(a: Observation, b: Observation) -> float:
    """The angle between two images' directions to the spacecraft at the point; NaN when a look
    azimuth is unknown (an emission under 0.5 degrees needs none: its direction is the vertical)."""
    azimuths = [o.look_azimuth if math.isfinite(o.look_azimuth) or o.emission >= 0.5 else 0.0 for o in (a, b)]
    if not all(math.isfinite(v) for v in (*azimuths, a.emission, b.emission)):
        return math.nan
    va, vb = look_vector(a.emission, azimuths[0]), look_vector(b.emission, azimuths[1])
    return math.degrees(math.acos(max(-1.0, min(1.0, float(va @ vb)))))


def stereo_pairs(observations: list[Observation], dtms: DtmIndex) -> list[StereoPair]:
    """Every pair among the covering images: those a DTM lists, else those the flag-and-convergence
    rule accepts (module docstring)."""
    ids = {o.observation_id for o in observations}
    pairs, paired = [], set()
    for product, left, right in zip(dtms.product_id, dtms.left, dtms.right, strict=True):
        if left in ids and right in ids:
            pairs.append(StereoPair(str(left), str(right), math.nan, str(product)))
            paired.add(frozenset((left, right)))
    for i, a in enumerate(observations):
        for b in observations[i + 1:]:
            if frozenset((a.observation_id, b.observation_id)) in paired or not (a.stereo_flag or b.stereo_flag):
                continue
            angle = convergence_deg(a, b)
            if CONVERGENCE_DEG[0] <= angle <= CONVERGENCE_DEG[1]:
                pairs.append(StereoPair(a.observation_id, b.observation_id, angle, None))
    return pairs


def floor_incidence_deg(diameter_m: float, depth_m: float) -> float:
    """The largest incidence at which ``FLOOR_LIT_SHARE`` of a pit's floor is sunlit."""
    if not (math.isfinite(diameter_m) and math.isfinite(depth_m)) or depth_m <= 0 or diameter_m <= 0:
        return UNKNOWN_DEPTH_INCIDENCE_DEG
    return math.degrees(math.atan((1.0 - FLOOR_LIT_SHARE) * diameter_m / depth_m))


def suggest_next(coverage: Coverage, diameter_m: float = math.nan, depth_m: float = math.nan) -> str:
    """The next image(s) that would help, by the rule of the module docstring ("" when none)."""
    obs = coverage.observations
    if not obs:
        return "first HiRISE image (no image covers it)"
    wants = []
    if not coverage.pairs:
        base = min(obs, key=lambda o: o.incidence if math.isfinite(o.incidence) else 1e9)
        emission = max(5.0, PARTNER_CONVERGENCE_DEG - (base.emission if math.isfinite(base.emission) else 0.0))
        side = f" from the {_compass((base.look_azimuth + 180.0) % 360.0)}" if math.isfinite(base.look_azimuth) else ""
        wants.append(f"stereo partner for {base.observation_id} (emission ~{emission:.0f} deg{side})")
    lowest = min((o.incidence for o in obs if math.isfinite(o.incidence)), default=math.nan)
    limit = floor_incidence_deg(diameter_m, depth_m)
    if math.isfinite(lowest) and lowest > limit:
        wants.append(f"lower incidence for the floor (i <= {limit:.0f} deg; lowest so far {lowest:.0f})")
    sharpest = min((o.map_scale for o in obs if math.isfinite(o.map_scale)), default=math.nan)
    if math.isfinite(diameter_m) and math.isfinite(sharpest) and diameter_m / sharpest < MIN_PIXELS_ACROSS \
            and sharpest > FULL_RESOLUTION_M * 1.01:
        wants.append(f"full-resolution image ({FULL_RESOLUTION_M} m/px; {diameter_m / sharpest:.0f} px across at best)")
    return "; ".join(wants)


def _compass(bearing: float) -> str:
    names = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")
    return names[int(((bearing % 360.0) + 22.5) // 45.0) % 8]


# ---- the index, queried --------------------------------------------------------------------------------------


class CoverageIndex:
    """The RDR and DTM indexes with each footprint's cap computed once; :meth:`at` answers a point
    in milliseconds (a dot product with every cap, the exact test on the few it leaves)."""

    def __init__(self, rdr: RdrIndex, dtm: DtmIndex):
        self.rdr, self.dtm = rdr, dtm
        self._corners = unit_vectors(rdr.corner_lat, rdr.corner_lon)  # (N, 4, 3)
        self._centre, self._cos_r = footprint_caps(rdr.corner_lat, rdr.corner_lon)

    @classmethod
    def from_folder(cls, folder: str | Path) -> CoverageIndex:
        """From a folder holding the four index files (``al-loop fetch --index``); a DatasetError that
        says to run it when one is missing or truncated."""
        return cls(load_rdr_index(folder), load_dtm_index(folder))

    def covering(self, lat: float, lon_e: float) -> np.ndarray:
        """(K,) row indices of the ``_RED`` images whose footprint holds the point."""
        point = unit_vectors(lat, lon_e)
        near = np.flatnonzero(self._centre @ point >= self._cos_r)
        if not len(near):
            return near
        return near[inside_quads(point, self._corners[near])]

    def at(self, lat: float, lon_e: float, diameter_m: float = math.nan, depth_m: float = math.nan) -> Coverage:
        """The point's coverage, stereo pairs and suggested next image (empty coverage outside every footprint)."""
        rows = self.covering(lat, lon_e)
        r = self.rdr
        looks = bearing_deg(lat, lon_e, r.sub_spacecraft[rows, 0], r.sub_spacecraft[rows, 1]) if len(rows) else []
        observations = [Observation(str(r.observation_id[i]), str(r.product_id[i]), str(r.start_time[i]),
                                    float(r.solar_longitude[i]), float(r.incidence[i]), float(r.emission[i]),
                                    float(r.phase[i]), float(r.map_scale[i]), bool(r.stereo_flag[i]), float(look))
                        for i, look in zip(rows, looks, strict=True)]
        coverage = Coverage(observations, stereo_pairs(observations, self.dtm))
        coverage.suggestion = suggest_next(coverage, diameter_m, depth_m)
        return coverage
