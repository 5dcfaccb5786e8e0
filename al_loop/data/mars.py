"""Mars coordinates: the product's own CRS, the IAU 2015 lon/lat sphere for catalogues, and
areas measured on an equal-area projection of the product's own body.

PROJ knows the IAU codes (``IAU_2015:49900``: the Mars 2015 sphere, planetocentric
lon/lat). Its official axis order is lat, lon: every transformer here is built with
``always_xy=True`` so code reads (lon, lat). Longitudes come out in -180..180; catalogues
of Mars use 0..360 east (:func:`east_longitude`). ``to_epsg()`` is None for every Mars CRS,
so CRSs travel as WKT.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

MARS_LONLAT = "IAU_2015:49900"


@lru_cache(maxsize=16)
def _transformer(src_wkt: str, dst: str):
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(src_wkt), CRS.from_user_input(dst), always_xy=True)


def to_lonlat(crs_wkt: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Product coordinates -> planetocentric (lon -180..180, lat) on the IAU 2015 Mars sphere."""
    return _transformer(crs_wkt, MARS_LONLAT).transform(np.asarray(x, float), np.asarray(y, float))


def from_lonlat(crs_wkt: str, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Planetocentric (lon, lat) on the IAU 2015 Mars sphere -> product coordinates."""
    return _transformer(MARS_LONLAT, crs_wkt).transform(np.asarray(lon, float), np.asarray(lat, float))


def east_longitude(lon):
    """-180..180 -> 0..360 east, as Mars catalogues give it."""
    return np.mod(np.asarray(lon, float), 360.0)


def lonlat_wkt() -> str:
    from pyproj import CRS

    return CRS.from_user_input(MARS_LONLAT).to_wkt()


def equal_area_crs(crs_wkt: str, lon: float, lat: float) -> str:
    """A Lambert azimuthal equal-area projection centred on (lon, lat), on the product CRS's own
    ellipsoid: areas there are true wherever the pit is (equirectangular or polar stereographic)."""
    from pyproj import CRS

    ellipsoid = CRS.from_wkt(crs_wkt).ellipsoid
    a, b = ellipsoid.semi_major_metre, ellipsoid.semi_minor_metre
    return CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +a={a} +b={b} +units=m +no_defs").to_wkt()


def reproject(geometry, src_wkt: str, dst: str):
    """A shapely geometry in another CRS (``dst``: WKT or an authority code)."""
    import shapely

    transformer = _transformer(src_wkt, dst)
    return shapely.transform(geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


MARS_RADIUS_M = 3_396_190.0  # IAU 2015 mean equatorial radius; Mars ellipsoids differ by under 20 km
MARS_TOLERANCE_M = 50_000.0


def not_on_mars(crs_wkt: str) -> str | None:
    """Why a product's CRS cannot place it on Mars (None: it can). An Earth CRS (UTM, WGS 84)
    would be tiled and measured as if on Mars and fail in PROJ at the first lon/lat, so it is
    named up front: its body's radius, and the fix."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError, ProjError

    try:
        crs = CRS.from_wkt(crs_wkt)
    except CRSError as exc:
        return f"its CRS cannot be read by PROJ ({exc})"
    radius = crs.ellipsoid.semi_major_metre if crs.ellipsoid is not None else None
    if radius is None or abs(radius - MARS_RADIUS_M) > MARS_TOLERANCE_M:
        body = "no body" if radius is None else f"a body of radius {radius / 1000:.0f} km"
        return (f"its CRS {crs.name!r} is on {body}, not Mars ({MARS_RADIUS_M / 1000:.0f} km): al-loop maps Mars "
                "products; reproject it to a Mars CRS (e.g. gdalwarp -t_srs IAU_2015:49910) or use the product's "
                "own label")
    try:
        _transformer(crs_wkt, MARS_LONLAT).transform(0.0, 0.0, errcheck=True)
    except ProjError as exc:
        return f"PROJ cannot relate its CRS {crs.name!r} to Mars lon/lat ({exc})"
    return None
