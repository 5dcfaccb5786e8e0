"""``al-loop fetch``: download HiRISE products by ID from the PDS archive."""
from __future__ import annotations

import sys
from pathlib import Path

from al_loop.errors import UsageError


def add_parser(sub) -> None:
    fetch = sub.add_parser(
        "fetch", help="download HiRISE products by ID from the PDS archive (resumable, checked, a few at a time)",
        description="A HiRISE RDR ID (ESP_012600_1655, PSP_..., optionally _RED or _COLOR; RED by default) is read "
        "from RDR/{ESP|PSP}/ORB_xxxx00_xxxx99/ID/ID_RED.{JP2,LBL} under the archive. Each file lands under a "
        "temporary name, resumes after a dropped connection (HTTP Range), is checked against the server's size "
        "and renamed only when whole; files already whole are skipped. A product that fails is named; the others "
        "complete (exit 1).",
    )
    fetch.add_argument("ids", nargs="*", metavar="PRODUCT_ID", help="HiRISE product IDs")
    fetch.add_argument("--from", dest="id_file", type=Path, metavar="FILE", help="a file of IDs, one a line (# comments)")
    fetch.add_argument("--out", type=Path, required=True, help="folder to put OUT/<ID>_RED/<ID>_RED.{JP2,LBL} in")
    fetch.add_argument("--base-url", help="the archive's root (default $AL_LOOP_PDS_URL, else the HiRISE "
                       "PDS archive at the University of Arizona)")
    fetch.add_argument("--parallel", type=int, default=3, help="products downloaded at once (default 3)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from al_loop.data import archive
    from al_loop.settings import from_environment

    ids = list(args.ids) + (archive.read_id_file(args.id_file) if args.id_file else [])
    if not ids:
        raise UsageError("no product ID: give IDs, or --from FILE")
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    base = args.base_url or from_environment("pds_url") or archive.PDS_BASE_URL
    report = archive.fetch_products(ids, args.out, base, args.parallel, progress=not args.quiet)
    for failure in report.failures:
        print(f"al-loop: error: {failure}", file=sys.stderr)
    for name, paths in report.products.items():
        label = next((p for p in paths if p.suffix.upper() == ".LBL"), paths[0])
        print(f"{name}: {label}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) already whole, not downloaded again")
    return 1 if report.failures else 0
