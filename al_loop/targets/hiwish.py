"""Candidates as HiRISE target suggestions, one CSV row each, to copy into HiWish.

HiWish (the public suggestion site of the HiRISE team) takes suggestions one at a time through
its web form; it has no upload. This file is what a user copies from, field by field:
``CENTER_LATITUDE`` and ``CENTER_LONGITUDE`` (planetocentric, east 0..360), ``PRIORITY_OVERALL``
(1 = most wanted .. 5, from the candidate's score), ``DESCRIPTION`` (at most
``DESCRIPTION_CHARS`` characters), ``SCIENCE_RATIONALE`` (size, depth, catalogue status and what
image is missing), ``PRIMARY_SCIENCE_THEME`` and ``SUGGESTED_GEOMETRY`` (the coverage rule's next
image: stereo partner geometry, an incidence limit, full resolution), plus the candidate's id.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

DESCRIPTION_CHARS = 75
# Pits and skylights on Mars are read as lava-tube or collapse features: HiRISE's volcanic theme.
SCIENCE_THEME = "Volcanic Processes"
COLUMNS = ("CANDIDATE_ID", "CENTER_LATITUDE", "CENTER_LONGITUDE", "PRIORITY_OVERALL", "DESCRIPTION",
           "SCIENCE_RATIONALE", "PRIMARY_SCIENCE_THEME", "SUGGESTED_GEOMETRY")


def description(candidate) -> str:
    """A one-line title of at most ``DESCRIPTION_CHARS`` characters."""
    status = "Catalogued" if candidate.catalogued else "Uncatalogued"
    size = f" ~{candidate.diameter_m:.0f} m" if math.isfinite(candidate.diameter_m) else ""
    ratio = f", d/D {candidate.d_over_D:.2f}" if math.isfinite(candidate.d_over_D) else ""
    ns = "N" if candidate.lat >= 0 else "S"
    text = f"{status} {candidate.type}{size}{ratio} at {abs(candidate.lat):.4f}{ns} {candidate.lon_e % 360.0:.4f}E"
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS - 1] + "~"


def rationale(candidate) -> str:
    """Why image it: size, depth, catalogue status, what the archive lacks there."""
    parts = [f"A {candidate.type} found by an automated map of {candidate.product_id or 'a HiRISE product'}"
             f" (confidence {candidate.confidence:.2f})." if math.isfinite(candidate.confidence) else
             f"A {candidate.type} found by an automated map of {candidate.product_id or 'a HiRISE product'}."]
    if math.isfinite(candidate.diameter_m):
        parts.append(f"Diameter about {candidate.diameter_m:.0f} m.")
    if math.isfinite(candidate.depth_m):
        err = f" +/- {candidate.depth_err_m:.1f}" if math.isfinite(candidate.depth_err_m) else ""
        minimum = " (a lower bound: the shadow covers the floor)" if "depth_is_minimum" in candidate.flags else ""
        parts.append(f"Apparent depth from its shadow {candidate.depth_m:.1f}{err} m{minimum}.")
    parts.append(f"Catalogued as {candidate.cat_id}." if candidate.catalogued else "Not in the catalogue compared.")
    coverage = candidate.coverage
    if coverage is not None:
        stereo = {"dtm": f"a DTM exists ({', '.join(coverage.dtm)})", "pair": "a stereo pair exists"}.get(
            coverage.stereo, "no stereo pair")
        parts.append(f"HiRISE images over it: {len(coverage.observations)}; {stereo}.")
        if coverage.suggestion:
            parts.append(f"Wanted: {coverage.suggestion}.")
    return " ".join(parts)


def geometry(candidate) -> str:
    coverage = candidate.coverage
    if coverage is None:
        return "no coverage looked up (run with --index)"
    return coverage.suggestion or "none missing: covered, in stereo and lit"


def write_hiwish(path: Path, candidates: list) -> Path:
    """One row per candidate, in the order given (best first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for c in candidates:
            writer.writerow([c.id, f"{c.lat:.5f}", f"{c.lon_e % 360.0:.5f}", c.priority_overall, description(c),
                             rationale(c), SCIENCE_THEME, geometry(c)])
    return path
