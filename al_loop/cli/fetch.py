"""``al-loop fetch``: download HiRISE products by ID from the PDS archive, or (``--index``) the
archive's cumulative indexes that ``al-loop candidates`` reads for existing coverage."""
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
    fetch.add_argument("--out", type=Path, help="folder to put OUT/<ID>_RED/<ID>_RED.{JP2,LBL} in (with --index: "
                       "the index folder, default ~/.cache/al-loop/hirise-index)")
    fetch.add_argument("--index", action="store_true",
                       help="download the archive's cumulative indexes instead of products: INDEX/RDRCUMINDEX and "
                       "INDEX/DTMCUMINDEX (.LBL + .TAB, about 90 MB), resumable and checked like products, and parse "
                       "them once; `al-loop candidates` looks for them in the default folder")
    fetch.add_argument("--base-url", help="the archive's root (default $AL_LOOP_PDS_URL, else the HiRISE "
                       "PDS archive at the University of Arizona)")
    fetch.add_argument("--parallel", type=int, default=3, help="products downloaded at once (default 3)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")


def _base_url(args) -> str:
    from al_loop.data import archive
    from al_loop.settings import from_environment

    return args.base_url or from_environment("pds_url") or archive.PDS_BASE_URL


def _fetch_index(args) -> int:
    from al_loop.data import hirise_index

    if args.ids or args.id_file:
        raise UsageError("--index downloads the archive's index, not products: give no product IDs with it")
    files = hirise_index.fetch_index(_base_url(args), args.out or hirise_index.DEFAULT_INDEX_DIR,
                                     progress=not args.quiet)
    folder = files[0].parent
    rdr, dtm = hirise_index.load_rdr_index(folder), hirise_index.load_dtm_index(folder)  # parsed once, cached
    print(f"{folder}: {len(rdr)} RED products, {len(dtm)} DTMs")
    return 0


def run(args) -> int:
    from al_loop.data import archive

    if args.index:
        return _fetch_index(args)
    ids = list(args.ids) + (archive.read_id_file(args.id_file) if args.id_file else [])
    if not ids:
        raise UsageError("no product ID: give IDs, or --from FILE (or --index for the archive's index)")
    if args.out is None:
        raise UsageError("--out: the folder to put the products in")
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    base = _base_url(args)
    report = archive.fetch_products(ids, args.out, base, args.parallel, progress=not args.quiet)
    for failure in report.failures:
        print(f"al-loop: error: {failure}", file=sys.stderr)
    for name, paths in report.products.items():
        label = next((p for p in paths if p.suffix.upper() == ".LBL"), paths[0])
        print(f"{name}: {label}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) already whole, not downloaded again")
    return 1 if report.failures else 0
