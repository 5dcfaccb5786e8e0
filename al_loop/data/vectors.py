"""Vector layers out: GeoPackage through pyogrio (GDAL, no geopandas), GeoJSON by hand.

A GeoPackage keeps any CRS as WKT, Mars included. GeoJSON cannot: GDAL relabels a custom
CRS as EPSG:4326 (Earth) and its RFC 7946 mode refuses it, so GeoJSON is only ever
written in Mars lon/lat, with the CRS named in the file.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from al_loop.data.files import atomic_write
from al_loop.data.mars import MARS_LONLAT


def write_layer(path: Path, layer: str, geometries: Sequence, columns: dict[str, Sequence], crs_wkt: str | None,
                geometry_type: str = "Polygon", metadata: Mapping[str, object] | None = None) -> None:
    """Add (or replace) ``layer`` in the GeoPackage at ``path``: shapely geometries and one array per
    column (a numpy masked array writes its masked values as NULL). ``metadata``: the layer's GDAL
    metadata items (``ogrinfo`` lists them, ``pyogrio.read_info(...)["layer_metadata"]`` reads
    them), each value written as text (floats in full precision); a None or NaN value is left out."""
    import pyogrio.raw
    import shapely

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(columns)
    arrays = [_column(columns[name]) for name in names]
    masks = [np.ma.getmaskarray(columns[name]) if np.ma.isMaskedArray(columns[name]) else None for name in names]
    wkb = shapely.to_wkb(np.asarray(list(geometries), dtype=object)) if len(geometries) else np.array([], dtype=object)
    pyogrio.raw.write(str(path), wkb, arrays, names, field_mask=masks, layer=layer, driver="GPKG", geometry_type=geometry_type,
                      crs=crs_wkt, append=False, promote_to_multi=geometry_type == "MultiPolygon",
                      layer_metadata=metadata_items(metadata or {}) or None)


def metadata_items(metadata: Mapping[str, object]) -> dict[str, str]:
    """Metadata values as the text GDAL stores: floats by ``repr`` (read back exactly), None and NaN left out."""
    items = {}
    for key, value in metadata.items():
        if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
            continue
        items[str(key)] = repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)
    return items


def _column(values: Sequence) -> np.ndarray:
    array = values.filled(0) if np.ma.isMaskedArray(values) else np.asarray(values)
    return array.astype(object) if array.dtype.kind in "UO" else array


def write_geojson(path: Path, geometries_lonlat: Sequence, columns: dict[str, Sequence]) -> None:
    """A FeatureCollection in Mars planetocentric lon/lat (IAU_2015:49900, lon first)."""
    import shapely

    features = []
    for i, geometry in enumerate(geometries_lonlat):
        properties = {name: _json_value(values[i]) for name, values in columns.items()}
        properties = {k: (None if v is np.ma.masked or (isinstance(v, float) and v != v) else v) for k, v in properties.items()}
        features.append({"type": "Feature", "geometry": json.loads(shapely.to_geojson(geometry)), "properties": properties})
    payload = {
        "type": "FeatureCollection",
        "name": path.stem,
        # The pre-RFC 7946 way to name a CRS: GIS software reads it, and nobody can mistake
        # these for Earth coordinates. Axis order as written: longitude, then latitude.
        "crs": {"type": "name", "properties": {"name": MARS_LONLAT}},
        "coordinate_order": "longitude (east, -180..180), planetocentric latitude",
        "features": features,
    }
    atomic_write(path, json.dumps(payload).encode())


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
