"""A pit map in the forms planetary tools read: a CSV JMARS imports as a layer, a craterstats
``.diam`` file, and a size-frequency plot with its table.

**The layer.** Any pit layer :mod:`al_loop.science.pit_layer` reads: ``pits_lonlat`` of ``al-loop
map``, ``measured`` of ``al-loop measure`` (in the product's projected CRS: reprojected, so it
gives the same latitudes and longitudes as its lon/lat twin), a GeoJSON. A layer without a CRS,
or in one not on Mars, is refused, as is a layer with no pits or no diameter column.

**The searched area** (for ``.diam`` and the size-frequency densities): the map's
``valid_<product>`` layers, the valid pixels its kept tiles cover (``valid_area_m2``, measured on an
equal-area projection); a map made before those layers falls back on the union of its tile
outlines, which takes in the null border of tiles kept up to 95 % null (a warning says so);
``area_km2`` replaces either.

**Size-frequency** (:func:`size_frequency`), in the conventions of the Crater Analysis Techniques
Working Group (1979): sqrt(2) bins anchored at 1 km (edges 1000 * 2^(k/2) m, a bin holding
low <= D < high), the density of a bin n / A per km^2, and asymmetric Poisson 1-sigma limits: the
exact chi-square limits Gehrels (1986) tabulates, lower 0.5 * chi2(0.1587; 2n) and upper
0.5 * chi2(0.8413; 2n + 2) (n = 0: 0 and 1.841; n = 1: 0.173 and 3.300). The completeness limit is
the smallest diameter the product resolves, ``COMPLETE_PIXELS`` pixels across (10 pixels: a pit
must span a few pixels of shadow and a few of floor and rim to be outlined and measured at all);
bins whose lower edge is below it are drawn hollow and flagged in the table. The plot shows
the cumulative N(>=D) and the differential frequency per km^2 per km. Fitting isochrons and
model ages is craterstats' job: the ``.diam`` file is its input. (craterstats 3.2.1, the last
release for Python 3.11, no longer imports with SciPy >= 1.14 and draws symmetric sqrt(n) bars;
later releases need Python 3.12; so the binning and the bars are written here, on SciPy.)
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.files import atomic_write
from al_loop.errors import UsageError
from al_loop.science.pit_layer import DIAMETER_COLUMNS, PitLayer, list_layers, read_pit_layer

PIT_LAYER = "pits_lonlat"
COMPLETE_PIXELS = 10.0  # the completeness limit: a pit this many pixels across is the smallest counted whole
SIGMA_CL = 0.8413447460685429  # the one-sided confidence of 1 sigma (Gehrels 1986, S = 1)
SFD_COLUMNS = ("D_low_m", "D_high_m", "n", "density_per_km2", "err_low", "err_high")


# ---- reading -----------------------------------------------------------------------------------------------------


def read_pits(gpkg: Path, layer: str | None = PIT_LAYER) -> PitLayer:
    """The pits of ``layer`` in Mars lon/lat with their diameters; a :class:`UsageError` for a
    layer without a CRS, pits or a diameter column (what export cannot do without)."""
    pits = read_pit_layer(gpkg, layer)
    if pits.diameter_column is None:
        raise UsageError(f"{gpkg}: layer {pits.layer} has no diameter column ({' or '.join(DIAMETER_COLUMNS)})")
    if not len(pits):
        raise UsageError(f"{gpkg}: layer {pits.layer} holds no pits: nothing to export")
    return pits


@dataclass(frozen=True)
class SearchedArea:
    """The area a map searched, where it came from, and the products' pixel size (NaN: unknown)."""

    area_km2: float
    source: str
    pixel_m: float = math.nan
    warnings: tuple[str, ...] = ()


def searched_area(gpkg: Path) -> SearchedArea | None:
    """The map's ``valid_<product>`` layers (their ``valid_area_m2``), else its ``tiles_<product>``
    outlines on an equal-area projection; None when the file has neither."""
    import pyogrio.raw

    layers = list_layers(gpkg)
    valid = [name for name in layers if name.startswith("valid_")]
    if valid:
        total, pixels = 0.0, []
        for name in valid:
            meta, _, _, values = pyogrio.raw.read(str(gpkg), layer=name, read_geometry=False)
            columns = dict(zip(meta["fields"], values, strict=False))
            total += float(np.nansum(np.asarray(columns["valid_area_m2"], float)))
            pixels += list(np.asarray(columns.get("pixel_m", [np.nan]), float))
        pixel = float(np.nanmax(pixels)) if np.isfinite(pixels).any() else math.nan
        return SearchedArea(total / 1e6, f"valid pixels ({', '.join(valid)})", pixel)
    tiles = [name for name in layers if name.startswith("tiles_")]
    if not tiles:
        return None
    return SearchedArea(_union_area_m2(gpkg, tiles) / 1e6, f"tile outlines ({', '.join(tiles)})", math.nan,
                        (f"{gpkg}: no valid_<product> layer (a map made before they were written): the area is the "
                         "union of the tile outlines, null borders included; map again or give the area",))


def _union_area_m2(gpkg: Path, layers: list[str]) -> float:
    """The union of each layer's outlines, on an equal-area projection centred on it."""
    import pyogrio.raw
    import shapely
    from pyproj import CRS

    from al_loop.data.mars import equal_area_crs, reproject, to_lonlat

    total = 0.0
    for name in layers:
        meta, _, wkb, _ = pyogrio.raw.read(str(gpkg), layer=name)
        if not len(wkb) or not meta.get("crs"):
            continue
        crs_wkt = CRS.from_user_input(meta["crs"]).to_wkt()
        union = shapely.union_all(shapely.from_wkb(wkb))
        lon, lat = to_lonlat(crs_wkt, union.centroid.x, union.centroid.y)
        total += reproject(union, crs_wkt, equal_area_crs(crs_wkt, float(lon), float(lat))).area
    return total


def mapped_area_km2(gpkg: Path) -> float | None:
    """The searched area in km^2 (:func:`searched_area`), None when the file has no footprints."""
    area = searched_area(gpkg)
    return None if area is None else area.area_km2


# ---- size-frequency (pure) ---------------------------------------------------------------------------------------


def root2_edges(diameters_m: np.ndarray) -> np.ndarray:
    """(K+1,) the CATWG sqrt(2) bin edges in metres, 1000 * 2^(k/2), that hold every diameter
    (each in low <= D < high); empty for no diameters."""
    d = np.asarray(diameters_m, float)
    d = d[np.isfinite(d) & (d > 0)]
    if not len(d):
        return np.zeros(0)
    # a diameter on an edge belongs to the bin above it; the 1e-9 keeps 2*log2 of an edge from rounding below k
    k = np.floor(2.0 * np.log2(d / 1000.0) + 1e-9).astype(int)
    return 1000.0 * 2.0 ** (np.arange(k.min(), k.max() + 2) / 2.0)


def poisson_limits(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each like ``n``: the exact 1-sigma Poisson confidence limits of counts ``n``
    (Gehrels 1986, eqs. 5-6 at S = 1): 0.5 chi2(0.1587; 2n), 0 for n = 0, and 0.5 chi2(0.8413; 2n + 2)."""
    from scipy.stats import chi2

    n = np.asarray(n, float)
    lower = np.where(n > 0, 0.5 * chi2.ppf(1.0 - SIGMA_CL, np.maximum(2.0 * n, 1e-300)), 0.0)
    return lower, 0.5 * chi2.ppf(SIGMA_CL, 2.0 * n + 2.0)


def completeness_m(pixel_m: float) -> float:
    """The smallest diameter a product of ``pixel_m`` metres per pixel resolves: ``COMPLETE_PIXELS`` across."""
    return COMPLETE_PIXELS * pixel_m


@dataclass(frozen=True)
class SizeFrequency:
    """Binned counts of K sqrt(2) bins and the cumulative curve of N pits over ``area_km2``."""

    d_low_m: np.ndarray  # (K,)
    d_high_m: np.ndarray  # (K,)
    n: np.ndarray  # (K,) int64
    area_km2: float
    completeness_m: float  # NaN: unknown
    d_m: np.ndarray  # (N,) the diameters, largest first
    cumulative: np.ndarray  # (N,) N(>=D) per km^2 at each

    @property
    def density_per_km2(self) -> np.ndarray:
        return self.n / self.area_km2

    @property
    def errors(self) -> tuple[np.ndarray, np.ndarray]:
        """(below, above) the density, per km^2, from the Poisson limits of each bin's count."""
        lower, upper = poisson_limits(self.n)
        return (self.n - lower) / self.area_km2, (upper - self.n) / self.area_km2

    @property
    def complete(self) -> np.ndarray:
        """(K,) bool: bins wholly above the completeness limit (all of them when it is unknown)."""
        return ~(self.d_low_m < self.completeness_m)

    @property
    def centre_m(self) -> np.ndarray:
        return np.sqrt(self.d_low_m * self.d_high_m)

    @property
    def differential(self) -> np.ndarray:
        """(K,) N per km^2 per km of diameter."""
        return self.density_per_km2 / ((self.d_high_m - self.d_low_m) / 1000.0)


def size_frequency(diameters_m: np.ndarray, area_km2: float, pixel_m: float = math.nan) -> SizeFrequency:
    """Root-2 binned counts and the cumulative curve of ``diameters_m`` (N,) over ``area_km2``,
    with the completeness limit of a product of ``pixel_m`` metres per pixel."""
    d = np.asarray(diameters_m, float)
    d = np.sort(d[np.isfinite(d) & (d > 0)])[::-1]
    edges = root2_edges(d)
    counts = np.histogram(d, edges)[0].astype(np.int64) if len(edges) else np.zeros(0, np.int64)
    return SizeFrequency(edges[:-1], edges[1:], counts, float(area_km2), completeness_m(pixel_m), d,
                         np.arange(1, len(d) + 1) / area_km2)


# ---- writing -----------------------------------------------------------------------------------------------------


def write_jmars_csv(path: Path, pits: PitLayer) -> Path:
    """One row a pit: ``latitude`` (planetocentric) and ``longitude`` (east, 0-360) first, as
    JMARS's custom layers read them, then ``diameter_m`` and every other column of the layer."""
    keep = [c for c in pits.columns if c not in ("centroid_lat", "centroid_lon_e", *DIAMETER_COLUMNS)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["latitude", "longitude", "diameter_m", *keep])
    for i in range(len(pits)):
        writer.writerow([f"{pits.lat[i]:.6f}", f"{pits.lon_e[i]:.6f}", _cell(round(float(pits.diameter_m[i]), 2)),
                         *[_cell(pits.columns[c][i]) for c in keep]])
    atomic_write(path, buffer.getvalue().encode())
    return path


def write_diam(path: Path, pits: PitLayer, area_km2: float) -> Path:
    """A craterstats ``.diam`` file: the searched area in km^2 and one row a pit (diameter in km,
    fraction 1, east lon, lat), in the format craterstats documents since 2014."""
    lines = ["# pits mapped by al-loop (diameters: equivalent circles of the outlines)", "#", "# area, km^2",
             f"area = {area_km2:.6g}", "#", "#              km        -      deg  deg",
             "crater = {diameter, fraction, lon, lat"]
    lines += [f"{d / 1000:.6f}\t1\t{lon:.6f}\t{lat:.6f}" for d, lon, lat in zip(pits.diameter_m, pits.lon_e, pits.lat, strict=True)
              if math.isfinite(d)]
    atomic_write(path, ("\n".join([*lines, "}"]) + "\n").encode())
    return path


def write_sfd_table(path: Path, sfd: SizeFrequency) -> Path:
    """The binned size-frequency as CSV: ``D_low_m, D_high_m, n, density_per_km2, err_low,
    err_high`` (errors per km^2 below and above the density), and ``complete``."""
    low, high = sfd.errors
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*SFD_COLUMNS, "complete"])
    for row in zip(sfd.d_low_m, sfd.d_high_m, sfd.n, sfd.density_per_km2, low, high, sfd.complete, strict=True):
        writer.writerow([f"{row[0]:.4f}", f"{row[1]:.4f}", int(row[2]), *(f"{v:.6g}" for v in row[3:6]), bool(row[6])])
    atomic_write(path, buffer.getvalue().encode())
    return path


def plot_size_frequency(path: Path, sfd: SizeFrequency | PitLayer, area_km2: float | None = None, title: str = "") -> Path:
    """Cumulative and differential size-frequency, log-log, side by side: asymmetric Poisson bars,
    bins below the completeness limit hollow, the limit a dashed line. (A :class:`PitLayer` and
    ``area_km2`` is the call the CLI made before :func:`write_exports`: binned here, no limit.)"""
    import matplotlib

    if isinstance(sfd, PitLayer):
        sfd = size_frequency(sfd.diameter_m, float(area_km2))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.step(sfd.d_m, sfd.cumulative, where="post", color="black")
    left.set(xscale="log", yscale="log", xlabel="diameter D (m)", ylabel="cumulative N(≥D) per km²", title="cumulative")
    used = sfd.n > 0
    width_km = (sfd.d_high_m - sfd.d_low_m) / 1000.0
    low, high = (e / width_km for e in sfd.errors)
    for complete, face in ((True, "black"), (False, "white")):
        pick = used & (sfd.complete == complete)
        if pick.any():
            right.errorbar(sfd.centre_m[pick], sfd.differential[pick], yerr=[low[pick], high[pick]], fmt="o", color="black",
                           mfc=face, capsize=2, label="complete" if complete else "below the completeness limit")
    right.set(xscale="log", yscale="log", xlabel="diameter D (m, √2 bins from 1 km)", ylabel="N per km² per km",
              title="differential (1σ Poisson limits)")
    if math.isfinite(sfd.completeness_m):
        for ax in (left, right):
            ax.axvline(sfd.completeness_m, color="grey", linestyle="--", linewidth=1)
        right.text(sfd.completeness_m, 0.02, f" {COMPLETE_PIXELS:g} px: {sfd.completeness_m:.3g} m", color="grey",
                   transform=right.get_xaxis_transform(), fontsize=8)
    if used.any():
        right.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{title or Path(path).stem}: {len(sfd.d_m)} pits over {sfd.area_km2:.3g} km²")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class ExportResult:
    """What :func:`write_exports` wrote and from what area."""

    written: list[Path] = field(default_factory=list)
    area: SearchedArea | None = None
    warnings: list[str] = field(default_factory=list)


def write_exports(gpkg: Path, layer: str | None = PIT_LAYER, *, jmars: Path | None = None, diam: Path | None = None,
                  sfd: Path | None = None, area_km2: float | None = None, pixel_m: float | None = None) -> ExportResult:
    """Every export asked for, from one pit layer: ``jmars`` (CSV), ``diam`` (craterstats) and
    ``sfd`` (PNG, with its table as a CSV of the same stem). The searched area is ``area_km2`` or
    the map's (:func:`searched_area`); ``pixel_m`` (else the map's) sets the completeness limit.
    Everything is checked before anything is written."""
    if area_km2 is not None and not (math.isfinite(area_km2) and area_km2 > 0):
        raise UsageError(f"the searched area must be above 0 km2, got {area_km2}", param="area_km2")
    pits = read_pits(Path(gpkg), layer)
    result = ExportResult(warnings=list(pits.warnings))
    if diam or sfd:
        found = searched_area(Path(gpkg)) if area_km2 is None or pixel_m is None else None
        if area_km2 is not None:
            found = SearchedArea(float(area_km2), "--area-km2", found.pixel_m if found else math.nan)
        if found is None or not found.area_km2 > 0:
            raise UsageError(f"{gpkg} holds no footprints (valid_<product> or tiles_<product> layers) to measure the "
                             "searched area: give --area-km2")
        result.area, result.warnings = found, result.warnings + list(found.warnings)
    if jmars:
        result.written.append(write_jmars_csv(Path(jmars), pits))
    if diam:
        result.written.append(write_diam(Path(diam), pits, result.area.area_km2))
    if sfd:
        scale = pixel_m if pixel_m is not None else result.area.pixel_m
        table = size_frequency(pits.diameter_m, result.area.area_km2, scale)
        result.written.append(plot_size_frequency(Path(sfd), table, title=Path(gpkg).stem))
        result.written.append(write_sfd_table(Path(sfd).with_suffix(".csv"), table))
    return result


def _cell(value):
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return ""
    return value.item() if isinstance(value, np.generic) else value
