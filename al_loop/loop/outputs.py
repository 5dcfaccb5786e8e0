"""What a workspace has produced outside Label Studio: maps and candidate lists, one JSON line
each in ``<workspace>/outputs.jsonl``, so that the report can show and link them.

A record: ``kind`` ("map" or "candidates"), ``title``, ``files`` (paths written), ``counts``
(a few numbers worth a glance), ``quicklook`` (a PNG, optional) and ``at`` (a timestamp).
Appending a line is atomic enough for one writer; a damaged line is skipped with its number
named by :func:`recorded_outputs`' caller through ``problems``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

FILE = "outputs.jsonl"


def record_output(root: Path, kind: str, title: str, files: list[Path], counts: dict | None = None,
                  quicklook: Path | None = None) -> None:
    """Append one output record to the workspace at ``root`` (which must exist)."""
    record = {"kind": kind, "title": title, "files": [str(Path(f).resolve()) for f in files],
              "counts": counts or {}, "quicklook": str(Path(quicklook).resolve()) if quicklook else None,
              "at": time.time()}
    with open(Path(root) / FILE, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def recorded_outputs(root: Path, problems: list[str] | None = None) -> list[dict]:
    """Every output recorded in the workspace at ``root``, oldest first; lines that do not parse
    are left out and named in ``problems`` when given."""
    path = Path(root) / FILE
    if not path.is_file():
        return []
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            if isinstance(record, dict) and "kind" in record:
                found.append(record)
                continue
        except json.JSONDecodeError:
            pass
        if problems is not None and line.strip():
            problems.append(f"{path}:{number}: not an output record")
    return found
