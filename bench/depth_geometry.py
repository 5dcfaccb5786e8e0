"""Depth and diameter errors on ray-cast pits over HiRISE's viewing geometry: the methods page's table.

Renders flat-floored, vertical-walled pits (al_loop.data.render) at 0.25 m/px over incidence,
emission (0-25 degrees) and the azimuth from the sun to the spacecraft (0: on the sun's side, 180:
opposite), with the shadow reaching part way across the floor (sunlit floor) or filling it, and
measures each as ``map`` and ``measure`` do (al_loop.science.morphometry on the pixels; the diameter
from the outline the map draws of the rim). Prints the table and writes docs/depth-geometry.json.

    python bench/depth_geometry.py [--json docs/depth-geometry.json]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALE = 0.25
SUN_AZIMUTH = 35.0
INCIDENCES = (40.0, 55.0, 70.0)
EMISSIONS = (0.0, 10.0, 20.0, 25.0)
SIDES = (0.0, 45.0, 90.0, 135.0, 180.0)
DIAMETERS_M = (10.0, 20.0, 40.0)
NOISE = 0.03  # Gaussian noise, a fraction of the plain's brightness (HiRISE RED at SNR ~100 has ~1 %)
REACHES = (0.3, 0.6, 0.85)  # the floor shadow's length over the diameter: some floor sunlit
FILLED = 1.4  # h tan(i) = 1.4 D: no floor sunlit
# Ground truth of "only a minimum is knowable": under 0.5 % of the outline shows sunlit floor (a lit
# strip a pixel or two wide at most); over 5 %, the depth is knowable; in between, either answer.
ONLY_MINIMUM, KNOWABLE = 0.005, 0.05


def measure_one(diameter_m: float, reach: float, incidence: float, emission: float, dphi: float, seed: int) -> dict:
    from al_loop.data.render import LIT_FLOOR, CylinderPit, Sun, render_scene, rim_mask, surfaces_of
    from al_loop.data.viewing import Viewing
    from al_loop.mapping.assemble import simplify_outline
    from al_loop.science.morphometry import pit_depth, shape_measures

    diameter_px = diameter_m / SCALE
    depth_px = reach * diameter_px / math.tan(math.radians(incidence))
    size = int(diameter_px + 40)
    pit = CylinderPit(size / 2 + 0.3, size / 2 - 0.2, diameter_px, depth_px)
    sun = Sun(incidence, SUN_AZIMUTH, emission, SUN_AZIMUTH + dphi)
    pixels = render_scene((size, size), [pit], sun, noise=NOISE, seed=seed)
    mask = rim_mask((size, size), pit)
    # the truth of what is knowable: how much sunlit floor the image shows (pixel centres)
    rows, cols = np.nonzero(mask)
    codes, _ = surfaces_of(np.stack([cols - pit.col, rows - pit.row], axis=-1).astype(float), diameter_px / 2,
                           depth_px, sun)
    lit_floor_fraction = float(np.mean(codes == LIT_FLOOR))
    viewing = Viewing(incidence, emission, SUN_AZIMUTH, 270.0, None, (SUN_AZIMUTH + dphi) % 360.0, SCALE)
    result = pit_depth(pixels, mask, viewing, SCALE)
    shape = shape_measures(simplify_outline(_outline(mask), SCALE))
    truth = depth_px * SCALE
    # what the shadow says read as if seen from straight down: the view's part of the error
    nadir = result.shadow_length_m / math.tan(math.radians(incidence))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in {"diameter_m": diameter_m, "reach": reach, "incidence": incidence, "emission": emission, "dphi": dphi,
            "depth_true_m": truth, "depth_m": result.depth_m, "depth_err_m": result.depth_err_m,
            "minimum": bool(result.depth_is_minimum), "method": result.method, "lit_floor_in_view": lit_floor_fraction,
            "depth_error_pct": 100 * (result.depth_m / truth - 1), "nadir_formula_error_pct": 100 * (nadir / truth - 1),
            "diameter_error_pct": 100 * (shape["diameter_m"] / diameter_m - 1),
            "feret_error_pct": 100 * (shape["feret_max_m"] / diameter_m - 1)}.items()}


def _outline(mask: np.ndarray):
    import shapely
    from affine import Affine
    from rasterio.features import shapes

    polygons = [shapely.geometry.shape(g) for g, _ in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                                              transform=Affine(SCALE, 0, 0, 0, -SCALE, 0))]
    return shapely.union_all(polygons)


def summarise(rows: list[dict]) -> dict:
    """Per emission and side: the sunlit-floor pits' depth errors (with and without the view's
    correction), the diameters' errors, and what became of the pits whose shadow fills the floor."""
    table = []
    for emission in EMISSIONS:
        for dphi in SIDES:
            cell = [r for r in rows if r["emission"] == emission and r["dphi"] == dphi]
            lit = [r for r in cell if r["lit_floor_in_view"] >= KNOWABLE]
            filled = [r for r in cell if r["lit_floor_in_view"] < ONLY_MINIMUM]
            measured = [r for r in lit if r["method"] == "shadow"]
            errors = np.array([r["depth_error_pct"] for r in measured])
            within = [abs(r["depth_m"] - r["depth_true_m"]) <= 2 * r["depth_err_m"] for r in measured]
            table.append({
                "emission": emission, "dphi": dphi, "sunlit_pits": len(lit), "measured": len(measured),
                "depth_error_mean_pct": float(errors.mean()) if errors.size else math.nan,
                "depth_error_max_abs_pct": float(np.abs(errors).max()) if errors.size else math.nan,
                "nadir_formula_max_abs_pct": float(max(abs(r["nadir_formula_error_pct"]) for r in lit)),
                "within_2_sigma": float(np.mean(within)) if within else math.nan,
                "knowable_but_minimum": sum(r["minimum"] for r in lit),
                "knowable_unresolved": sum(r["method"] == "unresolved" for r in lit),
                "diameter_error_max_abs_pct": float(max(abs(r["diameter_error_pct"]) for r in lit)),
                "filled_pits": len(filled), "filled_flagged_minimum": sum(r["minimum"] for r in filled),
                "filled_unresolved": sum(r["method"] == "unresolved" for r in filled),
                "minimum_bound_over_truth_max": float(max((r["depth_m"] / r["depth_true_m"] for r in cell
                                                           if r["minimum"]), default=math.nan)),
            })
    return {"rows": table}


def print_table(summary: dict) -> None:
    print("| e | dphi | knowable: measured of n | depth error mean / max abs (%) | nadir formula max abs (%) | "
          "within 2 sigma | knowable but minimum / unresolved | diameter max abs (%) | "
          "only a minimum: flagged / unresolved of n | minimum / truth max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in summary["rows"]:
        print(f"| {r['emission']:g} | {r['dphi']:g} | {r['measured']} of {r['sunlit_pits']} "
              f"| {r['depth_error_mean_pct']:+.1f} / {r['depth_error_max_abs_pct']:.1f} "
              f"| {r['nadir_formula_max_abs_pct']:.1f} | {100 * r['within_2_sigma']:.0f} % "
              f"| {r['knowable_but_minimum']} / {r['knowable_unresolved']} | {r['diameter_error_max_abs_pct']:.1f} "
              f"| {r['filled_flagged_minimum']} / {r['filled_unresolved']} of {r['filled_pits']} "
              f"| {r['minimum_bound_over_truth_max']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "depth-geometry.json")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    seed = 0
    for diameter in DIAMETERS_M:
        for incidence in INCIDENCES:
            for emission in EMISSIONS:
                for dphi in SIDES:
                    for reach in (*REACHES, FILLED):
                        seed += 1
                        rows.append(measure_one(diameter, reach, incidence, emission, dphi, seed))
    summary = summarise(rows)
    print_table(summary)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lit = [r for r in rows if r["lit_floor_in_view"] >= KNOWABLE]
    only_minimum = [r for r in rows if r["lit_floor_in_view"] < ONLY_MINIMUM]
    measured = [r for r in lit if r["method"] == "shadow"]
    overall = {"pits": len(rows), "knowable": len(lit), "measured": len(measured),
               "depth_error_max_abs_pct": max(abs(r["depth_error_pct"]) for r in measured),
               "depth_within_2_sigma": float(np.mean([abs(r["depth_m"] - r["depth_true_m"]) <= 2 * r["depth_err_m"]
                                                      for r in measured])),
               "nadir_formula_max_abs_pct": max(abs(r["nadir_formula_error_pct"]) for r in lit),
               "diameter_error_max_abs_pct": max(abs(r["diameter_error_pct"]) for r in rows),
               "feret_error_max_pct": max(r["feret_error_pct"] for r in rows),
               "knowable_but_minimum": sum(r["minimum"] for r in lit),
               "knowable_unresolved": sum(r["method"] == "unresolved" for r in lit),
               "only_minimum": len(only_minimum), "only_minimum_flagged": sum(r["minimum"] for r in only_minimum),
               "only_minimum_unresolved": sum(r["method"] == "unresolved" for r in only_minimum),
               "only_minimum_given_a_depth": sum(r["method"] == "shadow" for r in only_minimum),
               "between": len(rows) - len(lit) - len(only_minimum),
               "minimum_bound_over_truth_max": max(r["depth_m"] / r["depth_true_m"] for r in rows if r["minimum"])}
    print("overall:", json.dumps(overall))
    report = {"what": __doc__.splitlines()[0], "commit": commit, "platform": platform.platform(),
              "grid": {"scale_m": SCALE, "incidence_deg": INCIDENCES, "emission_deg": EMISSIONS,
                       "sun_to_spacecraft_azimuth_deg": SIDES, "diameter_m": DIAMETERS_M, "noise": NOISE,
                       "shadow_reach_over_D": REACHES, "filled_reach_over_D": FILLED,
                       "lit_floor_fraction_only_minimum_below": ONLY_MINIMUM, "lit_floor_fraction_knowable_from": KNOWABLE},
              "overall": overall, **summary, "pits": rows, "seconds": round(time.perf_counter() - started, 1)}
    args.json.write_text(json.dumps(report, default=float) + "\n")
    print(f"wrote {args.json} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
