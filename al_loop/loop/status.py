"""Where a workspace's loop stands, as one record: what ``al-loop status`` prints and ``--json`` dumps.

:func:`loop_status` gathers it from the workspace (task counts, rounds, awaited tasks, the
learning curve), its decoder store and the settings; :meth:`LoopStatus.as_dict` is the JSON
schema of ``al-loop status --json``. :func:`decoder_file` says what a decoder file is
(``al-loop status --decoder``). Nothing here prints, and nothing loads torch unless there is a
decoder to read: ``al-loop status`` on a fresh workspace stays quick.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from al_loop.errors import AlLoopError
from al_loop.loop.workspace import Workspace
from al_loop.settings import Settings

# Curve columns that say what a round ran, not how it scored.
_NOT_METRICS = ("model_version", "strategy", "settings")
_OBJECTS = "labelled_objects["  # round metric labelled_objects[<type>]: pits of that type in the training tiles


@dataclass(frozen=True)
class EngineChoice:
    """The engine and precision the workspace's encoder runs on here, and why (None: no engine)."""

    runtime: str | None
    precision: str | None
    reason: str


@dataclass(frozen=True)
class LoopStatus:
    """A workspace's state. ``counts`` are tasks by role and state (:meth:`Workspace.counts`);
    ``rounds`` one record per round; ``awaited`` task ids pushed last round with no answer yet;
    ``last_metrics`` the last evaluated round's curve row; ``decoders`` every decoder version
    (``latest`` marks the one in use) and ``decoder_problem`` what keeps the one in use from
    loading (None: fine, or none yet); ``labelled_objects`` the last round's training pits per
    type (not part of the JSON)."""

    project: int
    label_studio: str
    settings: dict[str, Any]
    counts: dict[str, int]
    rounds: list[dict]
    awaited: list[int]
    last_metrics: dict[str, Any]
    decoders: list[dict]
    decoder_problem: str | None
    engine: EngineChoice
    stopping: dict[str, Any] = field(default_factory=dict)  # the stopping rule: agreements per round, fired, message
    team: dict[str, Any] = field(default_factory=dict)  # who answered what, and a team's agreement (team_of)
    labelled_objects: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``al-loop status --json`` (its keys and their order are the schema)."""
        out = asdict(self)
        del out["labelled_objects"]
        return out


def engine_choice(settings: Settings) -> EngineChoice:
    """The engine and precision ``settings``' encoder runs on here, and why; never measures."""
    from al_loop.models.encoders import resolve_engine

    if settings.encoder == "filterbank":
        return EngineChoice(None, None, "none: the filter bank runs on scipy, not on an engine")
    try:
        engine = resolve_engine(settings.encoder, settings.checkpoint, settings.precision, settings.runtime)
    except AlLoopError as exc:
        return EngineChoice(None, None, f"unknown: {exc}")
    return EngineChoice(engine.runtime, engine.precision, engine.reason)


def decoder_versions(root: Path) -> tuple[str | None, list[dict]]:
    """What the backend would report as degraded about the workspace's decoder (None: fine or none
    yet), and every decoder version with what it was trained on and its evaluation."""
    if not (root / "decoders").is_dir():
        return None, []  # nothing trained yet: no need to load torch
    from al_loop.training.store import DecoderStore

    store = DecoderStore(root)
    return store.problem(), store.records()


def loop_status(workspace: Workspace, settings: Settings) -> LoopStatus:
    """The state of ``workspace`` under ``settings`` (a :class:`~al_loop.errors.WorkspaceError`
    when there is no workspace there)."""
    config = workspace.config()
    counts, rounds, awaited, curve = workspace.counts(), workspace.rounds(), workspace.awaited(), workspace.curve()
    last_metrics = {k: v for k, v in curve[-1].items() if k not in _NOT_METRICS} if curve else {}
    problem, decoders = decoder_versions(workspace.root)
    engine = engine_choice(settings)
    latest = workspace.round_metrics(rounds[-1]["round"]) if rounds else {}
    objects = {k[len(_OBJECTS):-1]: v for k, v in latest.items() if k.startswith(_OBJECTS)}
    return LoopStatus(config.project, config.label_studio_url, settings.kept(), counts, rounds, awaited, last_metrics,
                      decoders, problem, engine, stopping_of(workspace, settings), team_of(workspace, settings), objects)


def stopping_of(workspace: Workspace, settings: Settings) -> dict[str, Any]:
    """The stopping rule over the workspace's rounds: each round's agreement with the decoder
    before (``history``: round, labelled tiles, agreement), whether it fired, and its line."""
    from al_loop.query.stopping import check_stopping

    check = check_stopping(workspace.agreements(), settings.stop_threshold, settings.stop_window)
    return {"measure": check.measure, "threshold": check.threshold, "window": check.window,
            "history": [list(h) for h in check.history], "fired": check.fired, "line": check.describe()}


def team_of(workspace: Workspace, settings: Settings) -> dict[str, Any]:
    """Who answered what, as of the last ``next-batch``: ``annotators`` wanted per task; per expert
    (``experts``) the last round's tasks ``done`` and ``awaited`` from them, tiles answered in all,
    seconds per tile and agreement with the consensus; the team's agreement per round
    (``rounds``, keyed by round); the tasks ``in_review`` (no reviewer's answer yet)."""
    from al_loop.loop.team import PENDING, annotator_figures

    rows, records = workspace.answer_rows(), workspace.team_records()
    last = workspace.last_round()
    pushed = [r["task_id"] for r in workspace.pushed(last["round"])] if last else []
    answered: dict[int, set[str]] = {}
    for row in rows:
        answered.setdefault(row["task_id"], set()).add(row["email"])
    experts = []
    for figures in annotator_figures(rows, records):
        mine = figures["annotator"]
        done = [t for t in pushed if mine in answered.get(t, set())]
        awaited = [t for t in pushed if mine not in answered.get(t, set()) and len(answered.get(t, ())) < settings.annotators]
        experts.append({**figures, "done": done, "awaited": awaited})
    return {"annotators": settings.annotators, "review": settings.review, "experts": experts,
            "rounds": {str(k): v for k, v in workspace.team_rounds().items()},
            "in_review": sorted(t for t, r in records.items() if r["review"] == PENDING)}


def decoder_file(path: Path) -> dict[str, Any]:
    """What a decoder file is: ``file``, ``types`` (its K) and its recorded metadata (encoder and
    weights, type names, tiles, epochs, held-out fit, normalisation, training pit sizes)."""
    from al_loop.models.decoder import load_decoder

    decoder, meta = load_decoder(path)
    # A decoder card (al_loop.models.card) shows itself under the keys decoder files used before it.
    meta = meta.as_dict() if hasattr(meta, "as_dict") else meta
    return {"file": str(path), "types": decoder.types, **meta}
