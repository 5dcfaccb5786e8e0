"""`al-loop measure` over a 200-pit product: wall time (the issue's bound: 60 s on 2 cores) and accuracy.

Builds a HiRISE-style product (lossless JP2 + PDS3 label, 0.25 m/px, ESP_013951_1955_RED's sun and
view: al_loop.data.sample_products.SAMPLE_VIEWING) of ray-cast pits 10-40 m across on a plain
(al_loop.data.render), with their outlines (circles, as an expert draws them) as GeoJSON in Mars
lon/lat, then runs `al-loop measure` on them in this process, limited to ``--cores`` CPUs, and
reports the time and the depths' and diameters' errors against the rendered truth.

    python bench/measure_product.py [--pits 200] [--cores 2] [--out /tmp/measure-bench] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCALE = 0.25
CELL = 200  # px per pit: the largest pit (160 px) and lit terrain around it
LAT, LON = -8.8, 239.3


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def build(folder: Path, pits: int, seed: int = 0):
    """The product's label, the outlines' GeoJSON, and the truth per pit (diameter, depth, lit floor?)."""
    import numpy as np
    import shapely

    from al_loop.data import sample_products as sp
    from al_loop.data.mars import lonlat_wkt, reproject
    from al_loop.data.render import CylinderPit, Sun, render_scene, to_dn
    from al_loop.data.vectors import write_geojson

    rng = np.random.default_rng(seed)
    columns = 20
    rows = math.ceil(pits / columns)
    shape = (rows * CELL, columns * CELL)
    view = sp.SAMPLE_VIEWING
    tan_i = math.tan(math.radians(view["incidence"]))
    truth, scene = [], []
    for n in range(pits):
        r, c = divmod(n, columns)
        diameter = float(rng.uniform(40, 160))
        reach = float(rng.choice([0.3, 0.5, 0.7, 1.4]))  # shadow over the diameter; 1.4: it fills the floor
        pit = CylinderPit(c * CELL + CELL / 2 + rng.uniform(-5, 5), r * CELL + CELL / 2 + rng.uniform(-5, 5), diameter,
                          reach * diameter / tan_i)
        scene.append(pit)
        truth.append({"diameter_m": diameter * SCALE, "depth_m": pit.depth_px * SCALE, "filled": reach > 1})
    sun = Sun(view["incidence"], view["sun_azimuth"], view["emission"], view["spacecraft_azimuth"])
    image = render_scene(shape, scene, sun, noise=0.02, seed=seed)
    label = sp.write_hirise_rdr(to_dn(image), folder / "product", "ESP_013951_1955_RED", LAT, LON, SCALE, viewing=view)
    x0, y0 = sp.corner_for(LAT, shape[1], shape[0], SCALE)
    wkt = sp.equirectangular_wkt(LAT, LON)
    circles = [shapely.Point(x0 + (p.col + 0.5) * SCALE, y0 - (p.row + 0.5) * SCALE).buffer(p.diameter_px / 2 * SCALE, 32)
               for p in scene]
    outlines = folder / "outlines.geojson"
    write_geojson(outlines, [reproject(g, wkt, lonlat_wkt()) for g in circles], {"truth_id": list(range(pits))})
    return label, outlines, truth, shape


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pits", type=int, default=200)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/measure-bench"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cores)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GDAL_NUM_THREADS"):
        os.environ[name] = str(args.cores)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    label, outlines, truth, shape = build(args.out, args.pits)
    built = time.perf_counter() - started

    import numpy as np
    import pyogrio.raw

    from al_loop.cli import main as cli

    out = args.out / "measured.gpkg"
    started = time.perf_counter()
    code = cli(["measure", str(outlines), str(label), "--out", str(out)])
    seconds = time.perf_counter() - started
    if code != 0:
        print(f"measure failed with {code}")
        return code
    meta, _, _, values = pyogrio.raw.read(out, layer="measured")
    rows = dict(zip(meta["fields"], values, strict=True))
    depth, minimum, method = rows["depth_m"], rows["depth_is_minimum"], rows["depth_method"]
    ids = rows["truth_id"].astype(int)
    true_depth = np.array([truth[i]["depth_m"] for i in ids])
    true_diameter = np.array([truth[i]["diameter_m"] for i in ids])
    filled = np.array([truth[i]["filled"] for i in ids])
    measured = (method == "shadow") & ~filled
    figures = {
        "cpu": cpu_model(), "cores": len(cores), "pits": args.pits, "product_px": list(shape),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "build_s": round(built, 1), "measure_s": round(seconds, 1),
        "sunlit_floor_pits": int((~filled).sum()), "measured": int(measured.sum()),
        "depth_error_median_abs_pct": float(np.median(np.abs(depth[measured] / true_depth[measured] - 1)) * 100),
        "depth_error_max_abs_pct": float(np.max(np.abs(depth[measured] / true_depth[measured] - 1)) * 100),
        "filled_pits": int(filled.sum()), "filled_flagged_minimum": int((minimum & filled).sum()),
        "sunlit_flagged_minimum": int((minimum & ~filled).sum()),
        "minimum_over_truth_max": float(np.max(depth[minimum] / true_depth[minimum])) if minimum.any() else None,
        "diameter_error_max_abs_pct": float(np.max(np.abs(rows["diameter_m"] / true_diameter - 1)) * 100),
    }
    print(json.dumps(figures, indent=1))
    print(f"{cpu_model()}, {len(cores)} cores: measure of {args.pits} pits on a {shape[1]} x {shape[0]} px product "
          f"in {seconds:.1f} s (bound 60 s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
