"""The report page: ``index.html`` and its figures in one folder, from a workspace.

Every number on the page comes from the same record ``al-loop status --json`` prints
(:func:`al_loop.loop.status.loop_status`), or from the workspace's curve and rounds; the status
record is also embedded in the page (``<script id="status">``), so a reader's tool and a test
can hold the two together. Text is escaped; nothing is fetched from the internet.
"""
from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from pathlib import Path

from al_loop.loop.outputs import recorded_outputs
from al_loop.loop.status import LoopStatus, loop_status
from al_loop.loop.workspace import Workspace
from al_loop.report import plots
from al_loop.settings import Settings

TABLE_METRICS = (("miou", "mIoU"), ("micro_f1", "micro F1"), ("object_recall", "object recall"),
                 ("object_precision", "object precision"), ("object_f1", "object F1"))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #ddd}
.note{color:#666;font-size:.9em}.stop{background:#fff4d6;padding:.6em;border-left:4px solid #e0a100}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _cell(value, key: str | None = None, left: bool = False) -> str:
    attrs = (f' data-status="{_e(key)}"' if key else "") + (' class="l"' if left else "")
    return f"<td{attrs}>{_e(value)}</td>"


def _table(head: Iterable[str], rows: Iterable[str]) -> str:
    return "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _summary(status: LoopStatus) -> str:
    c = status.counts
    rows = [
        ("validation tiles labelled", f"{c['validation_labelled']} of {c['validation']}", None),
        ("pool: labelled", c["labelled"], "counts.labelled"),
        ("pool: unlabelled", c["unlabelled"], "counts.unlabelled"),
        ("pool: skipped", c["skipped"], "counts.skipped"),
        ("rounds", len(status.rounds), "rounds.length"),
        ("tasks awaited (as of the last next-batch)", len(status.awaited), "awaited.length"),
        ("encoder", status.settings.get("encoder"), "settings.encoder"),
        ("strategy", status.settings.get("strategy"), "settings.strategy"),
        ("engine", f"{status.engine.runtime} {status.engine.precision}: {status.engine.reason}" if status.engine.runtime
         else status.engine.reason, None),
    ]
    body = "".join(f"<tr><th class='l'>{_e(name)}</th>{_cell(value, key, left=True)}</tr>" for name, value, key in rows)
    return f"<table>{body}</table>"


def _curve_section(rows: list[dict], folder: Path) -> str:
    if not rows:
        return "<p>No evaluated round yet: label the validation tiles and run <code>al-loop next-batch</code>.</p>"
    image = plots.learning_curve(rows, folder / "curve.png")
    head = ["round", "labelled", "scored on (n/N)", *[name for _, name in TABLE_METRICS]]
    body = []
    for r in rows:
        scored = f"{r['validation_scored']}/{r['validation_of']}" if r.get("validation_scored") is not None else "?"
        marks = (" partial" if r.get("partial") else "") + (" (set changed)" if r.get("changed") else "")
        body.append("<tr>" + _cell(r["round"]) + _cell(r["labelled"]) + _cell(scored + marks)
                    + "".join(_cell(_num(r.get(k)), f"curve.{r['round']}.{k}") for k, _ in TABLE_METRICS) + "</tr>")
    return (f"<img src='{image.name}' alt='learning curve'>" + _table(head, body)
            + "<p class='note'>Scored on the validation tiles held out by observation (near-duplicates "
              "grouped before the split); a partial point had not all of them labelled yet.</p>")


def _types_section(status: LoopStatus, folder: Path) -> str:
    from al_loop.evaluation.metrics import per_type_key, type_names_in

    metrics = status.last_metrics
    names = type_names_in(metrics) if metrics else []
    if not names:
        return ""
    recall = [metrics[per_type_key("object_recall", n)] for n in names]
    precision = [metrics[per_type_key("object_precision", n)] for n in names]
    image = plots.type_recall(names, recall, precision, folder / "types.png")
    body = [f"<tr>{_cell(n, left=True)}{_cell(_num(r))}{_cell(_num(p))}"
            f"{_cell(_num(status.labelled_objects.get(n), 0))}</tr>" for n, r, p in zip(names, recall, precision, strict=True)]
    return ("<h2>Pit types</h2>" + f"<img src='{image.name}' alt='per-type recall'>"
            + _table(["type", "object recall", "object precision", "labelled pits"], body))


def _rounds_section(workspace: Workspace, status: LoopStatus, folder: Path) -> str:
    pushed: dict[int, list[dict]] = {}
    for row in workspace.pushed():
        pushed.setdefault(row["round"], []).append(row)
    stop = status.stopping
    agreement = {n: v for n, _, v in stop["history"]}
    body, scores = [], []
    for r in status.rounds:
        chosen = [t["score"] for t in pushed.get(r["round"], []) if t["score"] is not None]
        scores.append((r["round"], chosen))
        spread = f"{min(chosen):.3f} to {max(chosen):.3f}" if chosen else "-"
        expected = _expected(pushed.get(r["round"], []))
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
        body.append("<tr>" + _cell(r["round"]) + _cell(r["strategy"], left=True) + _cell(len(pushed.get(r["round"], [])))
                    + _cell(r["labelled"]) + _cell(spread) + _cell(expected, f"expected.{r['round']}", left=True) + _cell(_num(agreement.get(r["round"])), f"agreement.{r['round']}")
                    + _cell(when, left=True) + _cell("yes" if r["finished_at"] else "interrupted", left=True) + "</tr>")
    image = plots.round_scores(scores, folder / "rounds.png") if any(s for _, s in scores) else None
    head = ["round", "strategy", "tasks pushed", "trained on", "scores of the batch", "pits the decoder expects",
            "agreement with the decoder before",
            "started", "finished"]
    stop_line = f"<p class='{'stop' if stop['fired'] else 'note'}'>{_e(stop['line'])}</p>"
    return _table(head, body) + stop_line + (f"<img src='{image.name}' alt='batch scores per round'>" if image else "")


def _team_section(status: LoopStatus) -> str:
    """Who labelled what (tiles, time, agreement with the consensus) and a team's agreement per round."""
    team = status.team
    if not team.get("experts"):
        return "<p>No answer recorded yet: <code>al-loop next-batch</code> records who answered what.</p>"
    body = ["<tr>" + _cell(e["annotator"], left=True) + _cell(e["tiles"], "tiles." + e["annotator"]) + _cell(f"{len(e['done'])} done, "
            f"{len(e['awaited'])} awaited", left=True) + _cell("not recorded" if e["seconds_per_tile"] is None
            else f"{e['seconds_per_tile']:.0f}") + _cell(_num(e["iou_with_consensus"], 2), "iou." + e["annotator"])
            + _cell(e["missed"]) + _cell(e["extra"]) + "</tr>" for e in team["experts"]]
    html = _table(["expert", "tiles answered", "last round", "seconds a tile (median)", "IoU with the consensus",
                   "pits missed", "pits extra"], body)
    if team.get("rounds"):
        rows = ["<tr>" + _cell(n) + _cell(r["tasks"]) + _cell(_num(r["mask_iou"], 2), f"team_iou.{n}")
                + _cell(_num(r["type_kappa"], 2), f"team_kappa.{n}") + _cell(f"{r['pits_by_one']} of {r['pits']}")
                + _cell(f"{r['review']} ({r['reviewed']} reviewed)") + "</tr>" for n, r in team["rounds"].items()]
        html += ("<p>The team's agreement on each round's tasks: pits matched one to one at IoU &ge; 0.5; "
                 "type agreement is Cohen's kappa over the matched pits.</p>"
                 + _table(["round", "tasks", "mask IoU", "type kappa", "pits drawn by one expert", "to review"], rows))
    if team.get("in_review"):
        html += (f"<p class='stop'>In the Review tab, awaiting a reviewer's answer: {_e(team['in_review'])}</p>")
    return html


def _expected(tasks: list[dict]) -> str:
    """The pits per type the decoder's predictions put on a batch ("-": round 0, or not recorded)."""
    known = [json.loads(t["expected"]) for t in tasks if t.get("expected") is not None]
    if not known:
        return "-"
    total: dict[str, int] = {}
    for counts in known:
        for name, n in counts.items():
            total[name] = total.get(name, 0) + n
    shown = ", ".join(f"{name} {n}" for name, n in sorted(total.items())) or "none"
    return shown + ("" if len(known) == len(tasks) else f" (on {len(known)} of {len(tasks)} tasks)")


def _decoders_section(status: LoopStatus) -> str:
    if status.decoder_problem:
        return f"<p class='stop'>The decoder in use cannot be loaded: {_e(status.decoder_problem)}</p>"
    if not status.decoders:
        return "<p>No decoder trained yet.</p>"
    body = []
    for d in status.decoders:
        trained = "?" if d.get("trained_on") is None else len(d["trained_on"])
        validated = len(d.get("validated_on") or [])
        engine = " ".join(str(x) for x in (d.get("runtime"), d.get("precision")) if x) or "-"
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(d["saved_at"])) if d.get("saved_at") else "-"
        body.append("<tr>" + _cell(d.get("version"), left=True) + _cell(d.get("encoder") or "?", left=True)
                    + _cell(engine, left=True) + _cell(d.get("epochs") or "-") + _cell(trained) + _cell(validated)
                    + _cell(saved, left=True) + _cell("in use" if d.get("latest") else "", left=True) + "</tr>")
    return _table(["version", "encoder", "engine", "epochs", "trained on (tiles)", "validated on (tiles)", "saved", ""],
                  body)


def _outputs_section(root: Path, folder: Path) -> str:
    outputs = recorded_outputs(root)
    if not outputs:
        return ("<p>No map recorded yet: <code>al-loop map ... --workspace</code> records its outputs here, "
                "and <code>al-loop candidates</code> its target list.</p>")
    parts = []
    for item in outputs:
        links = " ".join(f"<a href='{_e(Path(p).resolve().as_uri())}'>{_e(Path(p).name)}</a>"
                         for p in item.get("files", []) if Path(p).exists())
        counts = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (item.get("counts") or {}).items())
        parts.append(f"<h3>{_e(item['kind'])}: {_e(item.get('title', ''))}</h3><p>{counts}</p><p>{links}</p>")
        quicklook = item.get("quicklook")
        if quicklook and Path(quicklook).is_file():
            copy = folder / f"{item['kind']}-{len(parts)}{Path(quicklook).suffix}"
            copy.write_bytes(Path(quicklook).read_bytes())  # beside the page: it opens from any folder
            parts.append(f"<img src='{copy.name}' alt='{_e(item['kind'])} quicklook'>")
    return "".join(parts)


def write_report(workspace: Workspace, settings: Settings, out: Path | None = None) -> Path:
    """Write the report of ``workspace`` into ``out`` (default ``<workspace>/report``); returns
    the path of its ``index.html``."""
    status = loop_status(workspace, settings)
    folder = Path(out) if out else workspace.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    sections = [
        ("Where the loop stands", _summary(status)),
        ("Learning curve", _curve_section(workspace.curve(), folder)),
        ("Rounds", _rounds_section(workspace, status, folder)),
        ("Who labelled what", _team_section(status)),
        ("Decoders", _decoders_section(status)),
        ("Maps and candidates", _outputs_section(workspace.root, folder)),
    ]
    types = _types_section(status, folder)
    body = "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections[:2]) + types \
        + "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections[2:])
    data = json.dumps(status.as_dict(), default=str).replace("</", "<\\/")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>al-loop report: project {status.project}</title>"
            f"<style>{STYLE}</style></head><body><h1>Mars pits: project {_e(status.project)}</h1>"
            f"<p class='note'>Workspace {_e(workspace.root)}, Label Studio {_e(status.label_studio)}; written "
            f"{time.strftime('%Y-%m-%d %H:%M')} by <code>al-loop report</code>.</p>{body}"
            f"<script type='application/json' id='status'>{data}</script></body></html>")
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
