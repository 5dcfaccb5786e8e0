"""Measure a layer of pit outlines on a HiRISE product and compare it with a catalogue.

Start here to put your own outlines (an expert's polygons, a map's pits) next to a catalogue
such as MGC3: every outline is measured on the product (diameter, axes, axis ratio, solidity and,
from the sun's angle, the depth of the shadow inside it), then each pit is matched to a
catalogue entry within a radius on the Mars sphere, or counted new; catalogue entries inside
the product with no pit near them are missed.

Here the product, its pits' outlines and the catalogue are generated (nothing to download):

    python examples/measure_and_compare.py [WORK_FOLDER]
"""
from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import al_loop


def main(work: Path) -> int:
    sample = al_loop.write_sample_product(work / "sample", columns=2, rows=2, side=256)  # a product and its pits
    outlines, product = sample["boxes"], sample["product"]

    # 1. Measure every outline on the product (in its projection, sun and view from its label).
    measured = al_loop.measure_layer(outlines, product, work / "measured.gpkg")
    depths = [row["depth_m"] for row in measured.rows if row["depth_m"] == row["depth_m"]]  # NaN: no shadow
    print(f"measured {len(measured.rows)} outlines; {len(depths)} have a depth from their shadow")

    # 2. A catalogue CSV of lat/lon entries: here every other pit, and one entry where there is none.
    catalogue = work / "catalogue.csv"
    write_catalogue(catalogue, centres(outlines)[::2], extra=centres(outlines)[0] + np.array([0.0, 0.004]))

    # 3. Compare: matched, new (in the layer, not in the catalogue) and missed (the other way round).
    report = al_loop.compare_map(outlines, catalogue, work / "compared.gpkg", radius_m=50.0, products=[product])
    counts = report.summary()["counts"]
    print(f"compared with {catalogue.name}: {counts}")
    return 0 if counts["matched"] >= 1 else 1


def centres(geojson: Path) -> np.ndarray:
    """(N, 2) lat, lon of each outline's vertex mean (the outlines are small: near enough its centre)."""
    features = json.loads(geojson.read_text())["features"]
    return np.array([np.mean(f["geometry"]["coordinates"][0], axis=0)[::-1] for f in features])


def write_catalogue(path: Path, lat_lon: np.ndarray, extra: np.ndarray) -> None:
    """A plain catalogue: one line per entry with its id, lat and lon (planetocentric, east)."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "lat", "lon"])
        for i, (lat, lon) in enumerate(lat_lon):
            out.writerow([f"CAT{i:03d}", f"{lat:.6f}", f"{lon:.6f}"])
        out.writerow(["CAT_EMPTY", f"{extra[0]:.6f}", f"{extra[1]:.6f}"])


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="al-loop-example-"))
    sys.exit(main(folder))
