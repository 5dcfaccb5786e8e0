"""``al-loop candidates``: from a pit map to a target list (candidates with image chips, existing
HiRISE coverage, a review page and HiWish rows). The work is :mod:`al_loop.targets`'s."""
from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "candidates", help="from a pit map to a target list: candidates with chips, HiRISE coverage, a page, HiWish rows",
        description="Reads any polygon layer in any CRS (the map's pits_lonlat, measure's or compare's output, your "
        "outlines), matches it with --catalogue as compare does and keeps the pits not in it (--all keeps every pit "
        "and says which are catalogued), scores them (confidence, not catalogued, d/D, type), looks up what HiRISE "
        "already took over each (--index: footprints, stereo pairs, DTMs, the next image wanted), cuts a chip of "
        "each from its --product and writes OUT/candidates.gpkg (Mars lon/lat), candidates.csv, chips/ and "
        "index.html (a sortable page that opens from the disk).",
    )
    p.add_argument("pits", type=Path, metavar="PITS", help="a vector file of pits (GeoPackage, GeoJSON, ...)")
    p.add_argument("--layer", help="the layer to read (default: pits_lonlat, else the file's one pit layer)")
    p.add_argument("--product", type=Path, action="append", default=[], metavar="LBL",
                   help="a product the pits were mapped on (.LBL, GeoTIFF, ...), for chips and its coverage record; "
                   "repeat for several")
    p.add_argument("--catalogue", type=Path, metavar="CSV", help="MGC3 or any lat/lon CSV: catalogued pits are left out")
    p.add_argument("--radius-m", type=float, help="match pits and catalogue entries within this distance (default: "
                   "compare's rule, from the pit's size over the catalogue's position error)")
    p.add_argument("--all", action="store_true", help="keep catalogued pits too, naming their entry")
    p.add_argument("--index", type=Path, metavar="DIR", help="a folder with the HiRISE cumulative indexes (default: "
                   "~/.cache/al-loop/hirise-index once `al-loop fetch --index` filled it; without one, no coverage)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the candidates, chips and page")
    p.add_argument("--hiwish", type=Path, metavar="FILE.csv", help="also write one HiRISE target suggestion per "
                   "candidate, to copy into HiWish (it takes suggestions one at a time)")
    p.add_argument("--workspace", type=Path, help="record the list in this workspace, so that `al-loop report` "
                   "links it")


def run(args) -> int:
    from al_loop.data.hirise_index import resolve_index_dir
    from al_loop.targets.candidates import CandidatesRequest, find_candidates

    index = resolve_index_dir(args.index)
    report = find_candidates(CandidatesRequest(
        pits=args.pits, out=args.out, layer=args.layer, products=args.product, catalogue=args.catalogue,
        index=index, hiwish=args.hiwish, keep_all=args.all, radius_m=args.radius_m))
    for warning in report.warnings:
        print(f"al-loop: warning: {warning}", file=sys.stderr)
    left = f"; {report.catalogued_left_out} catalogued pit(s) left out (--all keeps them)" if report.catalogued_left_out else ""
    print(f"{len(report.candidates)} candidate(s){left}")
    if index is None:
        print("no HiRISE index: coverage left empty (run `al-loop fetch --index`, or give --index DIR)")
    for path in report.outputs:
        print(path)
    if args.workspace:
        _record(args.workspace, args.out, report)
    return 0


def _record(workspace: Path, out: Path, report) -> None:
    from al_loop.errors import WorkspaceError
    from al_loop.loop.outputs import record_output
    from al_loop.loop.workspace import Workspace

    if not Workspace(workspace).exists():
        raise WorkspaceError(f"{workspace} is not an al-loop workspace: nothing recorded (the outputs are written)")
    record_output(workspace, "candidates", str(out), list(report.outputs),
                  {"candidates": len(report.candidates), "catalogued left out": report.catalogued_left_out})
