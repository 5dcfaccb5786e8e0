"""A pit's measures in metres and degrees, from its outline in the product's CRS.

Area and perimeter are measured on a Lambert azimuthal equal-area projection centred on
the product, on the product's own body. Areas are true everywhere on it (HiRISE's
equirectangular is true to scale only along its standard parallel; polar products are
stereographic); lengths are true at the centre and off by far less than a pixel's worth
across a product a few kilometres wide. One projection per product: building one per pit
cost 90 ms each. Without a CRS there is nothing to measure in metres: the outline is in
pixels and the measures are left empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from al_loop.data.mars import east_longitude, equal_area_crs, reproject, to_lonlat

AREA_METHOD = "equal-area (Lambert azimuthal, centred on the product, on the product CRS's body)"


@dataclass
class PitPixels:
    """What the map knows of one pit: its outline (product coordinates) and its pixels' numbers."""

    polygon: object  # shapely Polygon
    n_pixels: int
    probability_sum: float
    max_probability: float
    bbox: tuple[int, int, int, int]  # col0, row0, col1, row1 (exclusive) in product pixels
    touches_edge: bool  # reaches the product's border or a part no tile covered: may be cut off

    @property
    def confidence(self) -> float:
        return self.probability_sum / max(1, self.n_pixels)
NO_CRS_METHOD = "none: the product has no CRS (outline in pixel coordinates)"


def product_area_crs(crs_wkt: str, transform: tuple, width: int, height: int) -> str:
    """The equal-area projection a product's pits are measured on: centred on the product."""
    a, b, c, d, e, f = transform
    lon, lat = to_lonlat(crs_wkt, c + a * width / 2 + b * height / 2, f + d * width / 2 + e * height / 2)
    return equal_area_crs(crs_wkt, float(lon), float(lat))


def measure(pit: PitPixels, crs_wkt: str | None, area_crs: str | None = None) -> dict:
    """The per-pit columns that depend on geometry (see the README's map section); ``area_crs``
    from :func:`product_area_crs` (centred on the pit when not given)."""
    centroid = pit.polygon.centroid
    row = {"centroid_x": centroid.x, "centroid_y": centroid.y, "n_pixels": pit.n_pixels}
    if crs_wkt is None:
        return {**row, "area_m2": math.nan, "perimeter_m": math.nan, "diameter_m": math.nan, "area_method": NO_CRS_METHOD,
                "centroid_lat": math.nan, "centroid_lon_e": math.nan}
    lon, lat = (float(v) for v in to_lonlat(crs_wkt, centroid.x, centroid.y))
    local = reproject(pit.polygon, crs_wkt, area_crs or equal_area_crs(crs_wkt, lon, lat))
    area = float(local.area)
    return {**row, "area_m2": area, "perimeter_m": float(local.length), "diameter_m": 2.0 * math.sqrt(area / math.pi),
            "area_method": AREA_METHOD, "centroid_lat": lat, "centroid_lon_e": float(east_longitude(lon))}


def lonlat_outline(pit: PitPixels, crs_wkt: str):
    """The outline in Mars planetocentric lon/lat (IAU_2015:49900), for catalogues across products."""
    from al_loop.data.mars import MARS_LONLAT

    return reproject(pit.polygon, crs_wkt, MARS_LONLAT)


def tiles_touched(pit: PitPixels, entry) -> int:
    """How many tiles' windows the pit's bounding box overlaps (it was seen by that many decoder passes)."""
    c0, r0, c1, r1 = pit.bbox
    col, row, width, height = entry.window_arrays
    return int(np.count_nonzero((col < c1) & (col + width > c0) & (row < r1) & (row + height > r0)))
