"""The loop's workspace: ``config.yaml`` and a SQLite database of everything that happened.

The database holds the project binding, every task with its role (validation or
pool) and state, every round (time, strategy, size, labelled count, decoder
checkpoint, model_version, Data Manager tab), the tasks pushed in each round with
their scores, and the metrics per round (with the stopping rule's measure: ``stop_kappa``
and ``stop_object_f1``, the agreement with the round before's decoder). Each state change is one transaction, so a
crash leaves the previous state or the next one, never half of one. All SQL lives
here, behind named methods: the loop asks questions and records events.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from al_loop.errors import WorkspaceError

STOP_PREFIX = "stop_"  # metrics named so are the stopping rule's measure, not an evaluation

SCHEMA_VERSION = 2
# Columns added after a version: (table, column, type); an older database gains them on its next write.
ADDED_COLUMNS = (("rounds", "settings", "TEXT"), ("rounds", "validation", "TEXT"), ("round_tasks", "expected", "TEXT"))
# Tables added after a version; an older database gains them on its next write. ``answers``: every
# submitted answer as of the last pull (who answered what, how long it took, and the first round
# that trained on it); ``team_tasks``: the team's agreement and review on each task two or more
# experts answered (al_loop.loop.team's records, JSON).
ADDED_TABLES = (
    "CREATE TABLE IF NOT EXISTS answers (annotation_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, "
    "user INTEGER NOT NULL, email TEXT NOT NULL, lead_time REAL, trained_round INTEGER)",
    "CREATE TABLE IF NOT EXISTS team_tasks (task_id INTEGER PRIMARY KEY, record TEXT NOT NULL)",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY,
    image TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('validation', 'pool', 'buffer')),
    state TEXT NOT NULL DEFAULT 'unlabelled' CHECK (state IN ('unlabelled', 'labelled', 'skipped', 'deleted')),
    sha256 TEXT,
    height INTEGER,
    width INTEGER
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    strategy TEXT NOT NULL,
    size INTEGER NOT NULL,
    labelled INTEGER NOT NULL,
    decoder TEXT,
    model_version TEXT NOT NULL,
    view_id INTEGER,
    settings TEXT,
    validation TEXT
);
CREATE TABLE IF NOT EXISTS round_tasks (
    round INTEGER NOT NULL REFERENCES rounds(round),
    task_id INTEGER NOT NULL REFERENCES tasks(task_id),
    rank INTEGER NOT NULL,
    score REAL,
    prediction_id INTEGER,
    expected TEXT,
    PRIMARY KEY (round, task_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL REFERENCES rounds(round),
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (round, name)
);
""" + "".join(f"{sql};\n" for sql in ADDED_TABLES)


# Settings that config.yaml held at its top level before it had a ``settings`` section.
_OLD_TOP_LEVEL = ("encoder", "model", "checkpoint", "precision")


@dataclass
class WorkspaceConfig:
    """The binding to Label Studio, and the loop's settings as ``init`` and ``--save`` left them
    (names of :data:`al_loop.settings.KEPT`; the resolver reads them as its workspace layer)."""

    label_studio_url: str
    project: int
    images: str | None = None  # the directory imported through a local-files storage
    storage: int | None = None
    backend_url: str | None = None
    ml_backend: int | None = None
    title: str = ""
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, data: dict) -> WorkspaceConfig:
        data = dict(data)
        settings = {k: data.pop(k) for k in _OLD_TOP_LEVEL if k in data}
        settings.update(data.pop("settings", None) or {})
        return cls(**data, settings=settings)


def saved_settings(root: str | Path) -> dict:
    """The settings a workspace keeps ({} where there is no workspace): the resolver's workspace layer."""
    workspace = Workspace(root)
    return workspace.config().settings if workspace.exists() else {}


def find_workspace(here: Path, default: Path) -> Path | None:
    """The workspace a command means when none is named: ``default`` where it exists, else the
    folder ``here`` or the nearest folder above it that is one (a command run from inside a
    workspace); None when there is neither."""
    if Workspace(default).exists():
        return None  # the default is there: nothing to find
    for folder in (here, *here.parents):
        if Workspace(folder).exists():
            return folder
    return None


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def db_path(self) -> Path:
        return self.root / "state.sqlite"

    def exists(self) -> bool:
        return self.config_path.is_file() and self.db_path.is_file()

    def config(self) -> WorkspaceConfig:
        if not self.exists():
            raise WorkspaceError(f"{self.root} is not an al-loop workspace; run `al-loop init` first")
        try:
            return WorkspaceConfig.from_yaml(yaml.safe_load(self.config_path.read_text()))
        except (yaml.YAMLError, TypeError, AttributeError, ValueError) as exc:  # garbage, or not the fields init writes
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkspaceError(f"{self.config_path} is damaged ({reason}): restore it, or edit it back to the "
                                 "label_studio_url, project and settings that init wrote") from None

    def save_settings(self, values: dict) -> None:
        """Keep ``values`` (setting -> value) for the commands and rounds after this one."""
        config = self.config()
        config.settings = {**config.settings, **values}
        _write_yaml(self.config_path, asdict(config))

    def create(self, config: WorkspaceConfig, tasks: list[tuple[int, str, str]]) -> None:
        """Write the config and the task table in one go; ``tasks`` are (task_id, image URL, role)."""
        if self.exists():
            raise WorkspaceError(f"{self.root} already holds a workspace (project {self.config().project}); use another",
                                 param="workspace")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp_db = self.db_path.with_suffix(".sqlite.tmp")
        tmp_db.unlink(missing_ok=True)
        with sqlite3.connect(tmp_db) as db:
            db.executescript(SCHEMA)
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.executemany("INSERT INTO tasks (task_id, image, role) VALUES (?, ?, ?)", tasks)
        db.close()
        # The database lands first; the config last: a workspace exists only when both do.
        tmp_db.replace(self.db_path)
        _write_yaml(self.config_path, asdict(config))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One state change: committed whole, or rolled back whole."""
        if not self.exists():
            raise WorkspaceError(f"{self.root} is not an al-loop workspace; run `al-loop init` first")
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        try:
            db.execute("BEGIN IMMEDIATE")
            _add_missing_columns(db)
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """A read: no write lock, so `status` never waits behind a running `next-batch`."""
        if not self.exists():
            raise WorkspaceError(f"{self.root} is not an al-loop workspace; run `al-loop init` first")
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return list(db.execute(sql, params))
        finally:
            db.close()

    # -- questions ----------------------------------------------------------------------

    def tasks(self) -> list[dict]:
        """Every task row (task_id, image, role, state, sha256, height, width), by id."""
        return [dict(r) for r in self.read("SELECT * FROM tasks ORDER BY task_id")]

    def task_states(self) -> dict[int, str]:
        return {r["task_id"]: r["state"] for r in self.read("SELECT task_id, state FROM tasks")}

    def rounds(self) -> list[dict]:
        """Every round, in order, with the settings it ran with (a dict; {} for rounds older than that record)."""
        return [_round_row(r) for r in self.read("SELECT * FROM rounds ORDER BY round")]

    def round(self, number: int) -> dict:
        return _round_row(self.read("SELECT * FROM rounds WHERE round = ?", (number,))[0])

    def last_round(self) -> dict | None:
        rows = self.read("SELECT * FROM rounds ORDER BY round DESC LIMIT 1")
        return _round_row(rows[0]) if rows else None

    def unfinished_round(self) -> dict | None:
        """A round whose plan is recorded but whose push did not finish."""
        rows = self.read("SELECT * FROM rounds WHERE finished_at IS NULL ORDER BY round LIMIT 1")
        return _round_row(rows[0]) if rows else None

    def pushed(self, number: int | None = None) -> list[dict]:
        """The tasks of a round (every round's when None) in rank order, with their tile and the pits
        per type its prediction holds (``expected``: JSON, None where not known)."""
        where, params = ("WHERE rt.round = ?", (number,)) if number is not None else ("", ())
        return [dict(r) for r in self.read(
            # rt.*: a database an older al-loop wrote lacks the later columns until its next write
            "SELECT rt.*, t.image, t.sha256, t.height, t.width "
            f"FROM round_tasks rt JOIN tasks t USING (task_id) {where} ORDER BY rt.round, rt.rank", params)]

    def round_metrics(self, number: int) -> dict[str, float]:
        return {r["name"]: r["value"] for r in self.read("SELECT name, value FROM metrics WHERE round = ?", (number,))}

    def agreements(self) -> list[dict]:
        """Every round with a decoder, in order: round, labelled, and the stopping rule's measure as
        ``stopping`` ({"kappa", "object_f1"}; None where there was no decoder before to compare with):
        what :func:`al_loop.query.stopping.check_stopping` reads."""
        found: dict[int, dict] = {}
        for row in self.read(f"SELECT round, name, value FROM metrics WHERE name LIKE '{STOP_PREFIX}%'"):
            found.setdefault(row["round"], {})[row["name"][len(STOP_PREFIX):]] = row["value"]
        return [{"round": r["round"], "labelled": r["labelled"], "decoder": r["decoder"], "stopping": found.get(r["round"])}
                for r in self.rounds() if r["decoder"]]

    def answer_rows(self) -> list[dict]:
        """Every submitted answer as of the last pull: annotation_id, task_id, user, email, lead_time,
        trained_round (the first round whose decoder learned from it; None: none yet)."""
        if not self._has("answers"):
            return []
        return [dict(r) for r in self.read("SELECT * FROM answers ORDER BY task_id, annotation_id")]

    def team_records(self) -> dict[int, dict]:
        """The team's record of every task two or more experts answered (see :mod:`al_loop.loop.team`)."""
        if not self._has("team_tasks"):
            return {}
        return {r["task_id"]: json.loads(r["record"]) for r in self.read("SELECT * FROM team_tasks ORDER BY task_id")}

    def team_rounds(self) -> dict[int, dict]:
        """Per round, the team's agreement on the tasks it pushed (pooled: :func:`pooled_agreement`),
        with ``review``: how many of them went to review and ``reviewed``: how many a reviewer answered."""
        from al_loop.evaluation.agreement import pooled_agreement

        records, by_round = self.team_records(), {}
        for row in self.pushed():
            if row["task_id"] in records:
                by_round.setdefault(row["round"], []).append(records[row["task_id"]])
        return {number: {**pooled_agreement([r["agreement"] for r in found]),
                         "review": sum(r["review"] is not None for r in found),
                         "reviewed": sum(r["review"] == "reviewed" for r in found)}
                for number, found in sorted(by_round.items())}

    def _has(self, table: str) -> bool:
        return bool(self.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))

    # -- events -------------------------------------------------------------------------

    def record_states(self, update: StateUpdate) -> None:
        """Task states as Label Studio holds them now, and tasks new in it (one transaction)."""
        with self.transaction() as db:
            _write_states(db, update)

    def record_plan(self, plan: RoundPlan) -> None:
        """A planned round, whole: task states, tile hashes, the round, its tasks and metrics."""
        with self.transaction() as db:
            _write_states(db, plan.states)
            db.executemany("UPDATE tasks SET sha256 = ?, height = ?, width = ? WHERE task_id = ?",
                           [(sha, h, w, task_id) for task_id, (sha, h, w) in plan.tiles.items()])
            db.execute(
                "INSERT INTO rounds (round, started_at, strategy, size, labelled, decoder, model_version, settings, "
                "validation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (plan.number, now(), plan.strategy, plan.size, plan.labelled, plan.decoder, plan.model_version,
                 json.dumps(plan.settings), json.dumps(plan.validation)),
            )
            db.executemany("INSERT INTO round_tasks (round, task_id, rank, score) VALUES (?, ?, ?, ?)",
                           [(plan.number, t, i, s) for i, (t, s) in enumerate(plan.chosen)])
            db.executemany("INSERT INTO metrics (round, name, value) VALUES (?, ?, ?)",
                           [(plan.number, k, float(v)) for k, v in plan.metrics.items()])
            if plan.answers is not None:
                _write_answers(db, plan.answers, plan.number)

    def record_answers(self, answers: AnswerRecord) -> None:
        """Who answered what and the team's records, as pulled now, outside a round (one transaction)."""
        with self.transaction() as db:
            _write_answers(db, answers, None)

    def record_prediction(self, number: int, task_id: int, prediction_id: int, expected: dict | None = None) -> None:
        """The prediction pushed for a task, and the pits per type it holds (``expected``; None: not known)."""
        with self.transaction() as db:
            db.execute("UPDATE round_tasks SET prediction_id = ?, expected = ? WHERE round = ? AND task_id = ?",
                       (prediction_id, None if expected is None else json.dumps(dict(expected)), number, task_id))

    def finish_round(self, number: int, view_id: int | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE rounds SET view_id = ?, finished_at = ? WHERE round = ?", (view_id, now(), number))

    def counts(self) -> dict[str, int]:
        """Tasks by role and state: validation, validation_labelled, pool, labelled, unlabelled, skipped,
        deleted (of the pool), and buffer (tiles touching a validation tile: never trained on or scored)."""
        rows = self.read("SELECT role, state, COUNT(*) AS n FROM tasks GROUP BY role, state")
        counts = dict.fromkeys(("validation", "validation_labelled", "pool", "labelled", "unlabelled", "skipped", "deleted",
                                "buffer"), 0)
        for row in rows:
            role, state, n = row["role"], row["state"], row["n"]
            counts[role] += n
            if role == "validation" and state == "labelled":
                counts["validation_labelled"] += n
            elif role == "pool":
                counts[state] += n
        return counts

    def awaited(self) -> list[int]:
        """Tasks pushed in the last round that hold no answer yet (as of the last pull)."""
        rows = self.read(
            "SELECT rt.task_id FROM round_tasks rt JOIN tasks t USING (task_id) "
            "WHERE rt.round = (SELECT MAX(round) FROM rounds) AND t.state = 'unlabelled' ORDER BY rt.task_id"
        )
        return [r["task_id"] for r in rows]

    def curve(self) -> list[dict]:
        """One row per round that was evaluated: round, labelled tiles, model_version, every metric,
        and what it was scored on: ``validation_scored`` of ``validation_of`` live validation tiles,
        ``partial`` (not all of them were labelled), ``changed`` (not the previous point's set)."""
        rounds = [_round_row(r) for r in self.read("SELECT * FROM rounds WHERE finished_at IS NOT NULL ORDER BY round")]
        metrics: dict[int, dict[str, float]] = {}
        for row in self.read("SELECT round, name, value FROM metrics"):
            metrics.setdefault(row["round"], {})[row["name"]] = row["value"]
        rows, previous = [], None
        for r in (r for r in rounds if _evaluated(metrics.get(r["round"], {}))):
            scored = (r["validation"] or {}).get("scored")
            of = (r["validation"] or {}).get("of")
            rows.append({"round": r["round"], "labelled": r["labelled"], "model_version": r["model_version"],
                         "strategy": r["strategy"], **metrics[r["round"]], "validation_scored": _count(scored),
                         "validation_of": of, "partial": scored is not None and of is not None and len(scored) < of,
                         "changed": previous is not None and scored is not None and sorted(scored) != previous})
            previous = sorted(scored) if scored is not None else previous
        return rows


def _count(ids: list | None) -> int | None:
    return None if ids is None else len(ids)


def _evaluated(metrics: dict[str, float]) -> bool:
    # A round also records what it trained on (labelled pits per type) and how much its decoder
    # agrees with the last one (the stopping rule's stop_*) with no validation tile to evaluate
    # on: that alone is not a point of the curve.
    return any(not name.startswith(("labelled_objects[", STOP_PREFIX)) for name in metrics)


def now() -> float:
    return time.time()


def _round_row(row: sqlite3.Row) -> dict:
    values = dict(row)
    values["settings"] = json.loads(values.get("settings") or "{}")
    values["validation"] = json.loads(values.get("validation") or "null")  # None: recorded before it was kept
    return values


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database written by an older al-loop up to :data:`SCHEMA_VERSION` (tables and columns only added)."""
    for sql in ADDED_TABLES:
        db.execute(sql)
    for table, column, kind in ADDED_COLUMNS:
        if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _write_yaml(path: Path, data: dict) -> None:
    """Write whole or not at all: a reader never sees half a config."""
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


@dataclass
class StateUpdate:
    """Task states after a pull: ``states`` task id -> state, ``joined`` new task id -> image URL."""

    states: dict[int, str]
    joined: dict[int, str] = field(default_factory=dict)


@dataclass
class RoundPlan:
    """What a round decided, recorded in one transaction before anything is pushed."""

    number: int
    strategy: str
    size: int
    labelled: int  # training tiles the decoder saw
    decoder: str | None  # decoder file in the store, None for round 0
    states: StateUpdate
    tiles: dict[int, tuple[str, int, int]]  # task id -> (sha256, height, width)
    chosen: list[tuple[int, float | None]]  # (task id, score), best first
    metrics: dict[str, float]
    settings: dict = field(default_factory=dict)  # the kept settings the round ran with
    # the validation tasks it was scored on, and how many validation tasks were live then
    validation: dict = field(default_factory=lambda: {"scored": [], "of": 0})
    answers: AnswerRecord | None = None  # who answered what, and the team's records

    @property
    def model_version(self) -> str:
        return f"round-{self.number}"


@dataclass
class AnswerRecord:
    """A pull's answers: ``rows`` (annotation_id, task_id, user, email, lead_time) of every submitted
    answer, the team's ``records`` by task, and the ``trained`` annotation ids the round learned from."""

    rows: list[tuple[int, int, int, str, float | None]]
    records: dict[int, dict] | None = None  # None: the team's records stay as they are
    trained: set[int] = field(default_factory=set)


def _write_states(db: sqlite3.Connection, update: StateUpdate) -> None:
    db.executemany("INSERT INTO tasks (task_id, image, role) VALUES (?, ?, 'pool')", list(update.joined.items()))
    db.executemany("UPDATE tasks SET state = ? WHERE task_id = ?", [(s, t) for t, s in update.states.items()])


def _write_answers(db: sqlite3.Connection, answers: AnswerRecord, number: int | None) -> None:
    """Replace the answers with those pulled now (keeping the round that first trained on each) and
    the team's records of the tasks it answered."""
    trained = {r[0]: r[1] for r in db.execute("SELECT annotation_id, trained_round FROM answers")}
    db.execute("DELETE FROM answers")
    db.executemany("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)", [
        (*row, trained.get(row[0]) if trained.get(row[0]) is not None or row[0] not in answers.trained else number)
        for row in answers.rows])
    if answers.records is None:
        return
    db.execute("DELETE FROM team_tasks")  # recomputed whole at each pull (an earlier review is carried in the records)
    db.executemany("INSERT INTO team_tasks (task_id, record) VALUES (?, ?)",
                   [(t, json.dumps(r)) for t, r in answers.records.items()])
