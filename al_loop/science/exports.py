"""A pit map in the forms planetary tools read: a CSV JMARS imports as a layer, a craterstats
``.diam`` file, and a size-frequency plot of the pits' diameters.

The input is any pit layer in Mars lon/lat with a diameter (``pits_lonlat`` of ``al-loop map``,
``diam_eq_m``): the map's own GeoPackage or one made elsewhere. Size-frequency figures need
the area that was searched: the union of the map's tile footprints (measured on an equal-area
projection of the product's body), or ``--area-km2`` for a layer that has none.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from al_loop.data.files import atomic_write
from al_loop.errors import UsageError

PIT_LAYER = "pits_lonlat"
DIAMETER_COLUMNS = ("diameter_m", "diam_eq_m")  # morphometry's, else the map's equivalent diameter


@dataclass
class PitTable:
    """Pits as exported: centroids in planetocentric lat / east lon, diameters in metres, and the
    layer's other columns."""

    lat: np.ndarray  # (N,) degrees
    lon_e: np.ndarray  # (N,) degrees east, 0..360
    diameter_m: np.ndarray  # (N,)
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.lat)


def read_pits(gpkg: Path, layer: str = PIT_LAYER) -> PitTable:
    """The pits of ``layer``: centroids from its geometry (lon/lat), diameters from its columns."""
    import pyogrio
    import pyogrio.raw
    import shapely

    layers = {name for name, _ in pyogrio.list_layers(gpkg)} if Path(gpkg).is_file() else set()
    if layer not in layers:
        raise UsageError(f"{gpkg}: no layer {layer!r} (layers: {', '.join(sorted(layers)) or 'none'})")
    meta, _, wkb, values = pyogrio.raw.read(gpkg, layer=layer)
    columns = dict(zip(meta["fields"], values, strict=False))
    name = next((c for c in DIAMETER_COLUMNS if c in columns), None)
    if name is None:
        raise UsageError(f"{gpkg}:{layer} has no diameter column ({' or '.join(DIAMETER_COLUMNS)})")
    centroids = shapely.centroid(shapely.from_wkb(wkb)) if len(wkb) else np.array([])
    lon = np.array([c.x for c in centroids], float)
    lat = np.array([c.y for c in centroids], float)
    return PitTable(lat, np.mod(lon, 360.0), np.asarray(columns[name], float), columns)


def mapped_area_km2(gpkg: Path) -> float | None:
    """The area the map searched: the union of each product's tile footprints (``tiles_*``
    layers), on an equal-area projection centred on it; None when the file has no footprints."""
    import pyogrio
    import pyogrio.raw
    import shapely

    from al_loop.data.mars import equal_area_crs, reproject, to_lonlat

    total, found = 0.0, False
    for name, _ in pyogrio.list_layers(gpkg):
        if not name.startswith("tiles_"):
            continue
        meta, _, wkb, _ = pyogrio.raw.read(gpkg, layer=name)
        if not len(wkb) or not meta.get("crs"):
            continue
        from pyproj import CRS

        crs_wkt = CRS.from_user_input(meta["crs"]).to_wkt()
        union = shapely.union_all(shapely.from_wkb(wkb))
        lon, lat = to_lonlat(crs_wkt, union.centroid.x, union.centroid.y)
        total += reproject(union, crs_wkt, equal_area_crs(crs_wkt, float(lon), float(lat))).area
        found = True
    return total / 1e6 if found else None


def write_jmars_csv(path: Path, pits: PitTable) -> Path:
    """One row a pit: ``latitude`` (planetocentric) and ``longitude`` (east, 0-360) first, as
    JMARS's custom layers read them, then every other column of the layer."""
    keep = [c for c in pits.columns if c not in ("centroid_lat", "centroid_lon_e")]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["latitude", "longitude", "diameter_m", *[c for c in keep if c not in DIAMETER_COLUMNS]])
    for i in range(len(pits)):
        others = [_cell(pits.columns[c][i]) for c in keep if c not in DIAMETER_COLUMNS]
        writer.writerow([f"{pits.lat[i]:.6f}", f"{pits.lon_e[i]:.6f}", f"{pits.diameter_m[i]:.2f}", *others])
    atomic_write(path, buffer.getvalue().encode())
    return path


def write_diam(path: Path, pits: PitTable, area_km2: float) -> Path:
    """A craterstats ``.diam`` file: the searched area in km^2 and one row a pit (diameter in km,
    fraction 1, east lon, lat), in the format craterstats documents since 2014."""
    lines = ["# pits mapped by al-loop (diameters: equivalent circles of the outlines)", "#", "# area, km^2",
             f"area = {area_km2:.6g}", "#", "#              km        -      deg  deg",
             "crater = {diameter, fraction, lon, lat"]
    lines += [f"{d / 1000:.6f}\t1\t{lon:.6f}\t{lat:.6f}" for d, lon, lat in zip(pits.diameter_m, pits.lon_e, pits.lat, strict=False)]
    atomic_write(path, ("\n".join([*lines, "}"]) + "\n").encode())
    return path


def size_frequency(diameters_m: np.ndarray, area_km2: float) -> dict[str, np.ndarray]:
    """Cumulative N(>=D) per km^2 at each pit's diameter, and the differential frequency per km^2
    per km in root-2 bins (the binning crater statistics use)."""
    d = np.sort(np.asarray(diameters_m, float))[::-1]
    cumulative = np.arange(1, len(d) + 1) / area_km2
    if not len(d):
        return {"d_m": d, "cumulative": cumulative, "bin_centre_m": d, "differential": d, "counts": d}
    steps = np.arange(math.floor(2 * math.log2(d.min())), math.ceil(2 * math.log2(d.max())) + 2)
    edges = 2.0 ** (steps / 2.0)  # root-2 bins: ..., 8, 11.3, 16, 22.6 m, ...
    counts, _ = np.histogram(d, edges)
    widths_km = np.diff(edges) / 1000
    centres = np.sqrt(edges[:-1] * edges[1:])
    used = counts > 0
    return {"d_m": d, "cumulative": cumulative, "bin_centre_m": centres[used],
            "differential": counts[used] / area_km2 / widths_km[used], "counts": counts[used]}


def plot_size_frequency(path: Path, pits: PitTable, area_km2: float, title: str = "") -> Path:
    """Cumulative and differential size-frequency of the pits' diameters, log-log, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sfd = size_frequency(pits.diameter_m, area_km2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.step(sfd["d_m"], sfd["cumulative"], where="post", color="black")
    left.set(xscale="log", yscale="log", xlabel="diameter D (m)", ylabel="cumulative N(≥D) per km²", title="cumulative")
    # Poisson: a bin of n pits is uncertain by sqrt(n), so by differential / sqrt(n)
    right.errorbar(sfd["bin_centre_m"], sfd["differential"], yerr=sfd["differential"] / np.sqrt(sfd["counts"]),
                   fmt="o", color="black", capsize=2)
    right.set(xscale="log", yscale="log", xlabel="diameter D (m, √2 bins)", ylabel="N per km² per km",
              title="differential")
    fig.suptitle(f"{title or Path(path).stem}: {len(pits)} pits over {area_km2:.3g} km²")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _cell(value):
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return ""
    return value.item() if isinstance(value, np.generic) else value
