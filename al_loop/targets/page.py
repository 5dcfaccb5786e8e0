"""``index.html``: the candidates to review by eye, one static page that opens from the disk.

No network: no CDN, no fonts, no scripts from elsewhere; chips are linked by relative paths
(``chips/<id>.png``) so the folder can be moved or zipped whole. The table sorts by any column on
a click of its header (a few lines of inline JavaScript; numbers sort as numbers, empty cells
last); the products' coverage records come first.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from al_loop.data.files import atomic_write
from al_loop.science.coverage_record import SMALLEST_DIAMETER_RULE

COLUMNS = (  # (header, row key, digits for numbers)
    ("chip", "chip", None), ("id", "id", None), ("score", "score", 2), ("priority", "priority_overall", 0),
    ("product", "product_id", None), ("lat", "lat", 5), ("lon E", "lon_e", 5), ("confidence", "confidence", 2),
    ("type", "type", None), ("diameter m", "diameter_m", 1), ("depth m", "depth", None), ("d/D", "d_over_D", 2),
    ("flags", "flags", None), ("catalogue", "cat_id", None), ("distance m", "cat_distance_m", 0),
    ("images", "n_images", 0), ("stereo", "stereo", None), ("DTM", "dtm", None), ("next image", "suggested_next", None),
)
SORT_JS = """
document.querySelectorAll('th[data-col]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var up = th.dataset.dir !== 'asc'; th.dataset.dir = up ? 'asc' : 'desc';
    var key = function (tr) { var v = tr.cells[col].dataset.sort; var n = parseFloat(v);
      return v === '' ? null : (isNaN(n) ? v : n); };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""
STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: middle; }
th[data-col] { cursor: pointer; background: #eee; user-select: none; }
th[data-dir=asc]::after { content: ' \\25B2'; } th[data-dir=desc]::after { content: ' \\25BC'; }
td img { width: 192px; height: 192px; image-rendering: pixelated; display: block; }
td:last-child { min-width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.why { color: #555; font-size: 12px; }
td.unknown { background: #f4f4f4; }
"""


def _cell(value, digits) -> tuple[str, str]:
    """(shown text, sort key) of one value."""
    if isinstance(value, bool):
        return ("yes" if value else "", "1" if value else "")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return "", ""
        return (f"{value:.{digits}f}" if digits is not None else str(value)), repr(float(value))
    return str(value or ""), str(value or "")


def candidate_rows(candidates: list) -> str:
    lines = []
    for candidate in candidates:
        row = candidate.row()
        depth = candidate.depth_m
        row["depth"] = "" if not math.isfinite(depth) else (
            f"{depth:.1f} &plusmn; {candidate.depth_err_m:.1f}" if math.isfinite(candidate.depth_err_m) else f"{depth:.1f}")
        cells = []
        for _, key, digits in COLUMNS:
            if key == "chip":
                src, name = html.escape(row["chip"]), html.escape(row["id"])
                image = f'<img src="{src}" alt="chip of {name}">' if src else "no chip"
                cells.append(f'<td data-sort="">{image}</td>')
            elif key == "depth":
                cells.append(f'<td class="num" data-sort="{depth if math.isfinite(depth) else ""}">{row["depth"]}</td>')
            else:
                shown, sort = _cell(row[key], digits)
                numeric = ' class="num"' if isinstance(row[key], (int, float)) and not isinstance(row[key], bool) else ""
                cells.append(f'<td{numeric} data-sort="{html.escape(sort)}">{html.escape(shown)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines)


PRODUCT_COLUMNS = (  # (header, CoverageRecord.summary() key, digits, scale) of the "Products searched" table
    ("product", "product_id", None, 1.0), ("valid area km&sup2;", "valid_area_m2", 3, 1e-6),
    ("incidence", "incidence_deg", 1, 1.0), ("emission", "emission_deg", 1, 1.0), ("phase", "phase_deg", 1, 1.0),
    ("Ls", "solar_longitude_deg", 1, 1.0), ("scale m/px", "map_scale_m", 2, 1.0),
    ("smallest D m", "smallest_diameter_m", 1, 1.0), ("catalogue in footprint", "catalogue_in_footprint", 0, 1.0),
    ("found", "catalogue_found", 0, 1.0), ("recall %", "recall", 0, 100.0), ("candidates", "pits", 0, 1.0),
)


def product_rows(records: list) -> str:
    """One row per coverage record (:class:`al_loop.science.coverage_record.CoverageRecord`): an unknown
    value is an empty cell whose tooltip is the reason, and the last cell lists every reason."""
    lines = []
    for record in records:
        values, why = record.summary(), record.why_unknown()
        cells = []
        for _, key, digits, scale in PRODUCT_COLUMNS:
            value = values[key]
            if value is None:
                cells.append(f'<td class="unknown" title="{html.escape(why.get(key, "unknown"))}"></td>')
            elif isinstance(value, str):
                cells.append(f"<td>{html.escape(value)}</td>")
            else:
                cells.append(f'<td class="num">{_num(value * scale, digits)}</td>')
        notes = "; ".join(f"{_FIELD_NAMES.get(k, k)}: {v}" for k, v in why.items())
        cells.append(f'<td class="why">{html.escape(notes)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines)


_FIELD_NAMES = {key: name.replace("&sup2;", "2") for name, key, _, _ in PRODUCT_COLUMNS}


def _num(value: float, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def write_page(path: Path, report, request) -> Path:
    """The page for ``report`` (a CandidatesReport) made from ``request``; written whole or not at all."""
    headers = "".join(f'<th data-col="{i}">{html.escape(name)}</th>' for i, (name, _, _) in enumerate(COLUMNS))
    product_headers = "".join(f"<th>{h}</th>" for h, _, _, _ in PRODUCT_COLUMNS) + "<th>not known</th>"
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
    left_out = (f"<p>{report.catalogued_left_out} catalogued pit(s) left out (<code>al-loop candidates ... --all</code> keeps them).</p>"
                if report.catalogued_left_out else "")
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pit candidates: {html.escape(Path(request.pits).name)}</title>
<style>{STYLE}</style></head><body>
<h1>Pit candidates</h1>
<p>From <code>{html.escape(str(request.pits))}</code>: {len(report.candidates)} candidate(s), best score first.
Click a column's header to sort by it.</p>{left_out}
<h2>Products searched</h2>
<table id="products"><thead><tr>{product_headers}</tr></thead><tbody>
{product_rows(report.products)}
</tbody></table>
<p class="why">Smallest D: {html.escape(SMALLEST_DIAMETER_RULE)}. Recall: the catalogue entries inside the valid
pixels that a pit of the layer matched, over all entries inside. An empty cell is not known: the last column says why.</p>
<h2>Candidates</h2>
<table id="candidates"><thead><tr>{headers}</tr></thead><tbody>
{candidate_rows(report.candidates)}
</tbody></table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<script>{SORT_JS}</script>
</body></html>
"""
    atomic_write(path, body.encode())
    return path
