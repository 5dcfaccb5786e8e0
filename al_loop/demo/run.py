"""``al-loop demo``: the whole loop on one machine, with a simulated expert.

It starts a private Label Studio (SQLite or PostgreSQL, its own data dir, user and token) and the ML
backend on loopback, writes generated Mars-like tiles (or takes ``--images``), runs
``init`` and rounds of ``next-batch`` while a simulated expert answers each pushed
batch through the Label Studio API, and leaves the last round's batch unanswered, with
its pre-annotations, for a person to open in the browser.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from al_loop.data.synthetic import write_yolo_dataset
from al_loop.demo import DATABASES
from al_loop.demo.expert import HABITS, SimulatedExpert, dataset_boxes
from al_loop.demo.servers import BackendServer, LabelStudioServer, PostgresServer
from al_loop.errors import LoopError
from al_loop.evaluation.metrics import ROUND_LINE
from al_loop.loop.init import init_workspace
from al_loop.loop.next_batch import RoundReport, next_batch, record_answers_now
from al_loop.loop.workspace import Workspace
from al_loop.report import write_report
from al_loop.settings import resolve
from al_loop.studio.client import check_project, connect
from al_loop.studio.label_config import parse_label_config

MARKER = ".al-loop-demo"  # only a folder holding this is ever wiped by a new demo
SAMPLE_TILES = (32, 8, 512)  # train, valid, side: a few seconds per round on 2 cores


@dataclass
class DemoOptions:
    root: Path
    rounds: int = 3
    size: int = 5
    images: Path | None = None
    model: str = "vit_b"  # without its weights, boxes become their inscribed ellipses
    checkpoint: str | None = None
    encoder: str = "filterbank"
    port: int = 8080
    epochs: int = 100
    cache_dir: Path | None = None
    progress: bool = True
    database: str = "sqlite"  # or "postgresql": Label Studio on a private PostgreSQL server
    annotators: int = 1  # 2 or more: a simulated team, each expert with a habit of its own


@dataclass
class DemoRun:
    label_studio: LabelStudioServer
    backend: BackendServer
    workspace: Workspace
    project: int
    reports: list[RoundReport] = field(default_factory=list)
    simulated: bool = True  # False when the tiles come without expert boxes
    report: Path | None = None  # the progress page, rewritten after each round
    team: dict[int, dict] = field(default_factory=dict)  # per round, the team's agreement on its batch
    annotators: int = 1

    def summary(self) -> dict:
        """The run as ``demo --json`` writes it: the database and each round's figures."""
        return {"database": self.label_studio.database, "project": self.project,
                "workspace": str(self.workspace.root), "report": str(self.report) if self.report else None,
                "rounds": [self._round(r) for r in self.reports]}

    def _round(self, report: RoundReport) -> dict:
        row = {"round": report.round, "labelled": report.labelled, "strategy": report.strategy,
               "metrics": report.metrics, "pushed": len(report.chosen)}
        if self.annotators > 1:  # the team's agreement on the round's batch (None: nothing to compare)
            row["agreement"] = self.team.get(report.round)
        return row

    def stop(self) -> None:
        self.backend.stop()
        self.label_studio.stop()
        if self.label_studio.postgres:
            self.label_studio.postgres.stop()


def prepare_root(root: Path) -> None:
    """A fresh demo folder; a previous demo's folder is replaced, anything else is refused."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise LoopError(f"{root} exists and is not an al-loop demo folder; pick another", param="demo_dir")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by `al-loop demo`; the next demo replaces this folder\n")


def run_demo(options: DemoOptions, say: Callable[[str], None] = print) -> DemoRun:
    """Everything up to the last round; the servers are left running (call ``DemoRun.stop``)."""
    root = options.root.resolve()
    prepare_root(root)
    images, document_root, boxes = _tiles(options, root / "files", say)
    cache_dir = options.cache_dir or root / "embeddings"
    label_studio = LabelStudioServer(root / "label-studio", document_root, port=options.port,
                                     postgres=_database(options.database, say))
    backend = BackendServer(root / "workspace", cache_dir, model=options.model, checkpoint=options.checkpoint,
                            local_root=document_root, extra_env={"AL_LOOP_ENCODER": options.encoder})
    say(f"starting Label Studio on port {options.port} (about 30 s) and the ML backend ...")
    if note := _engine_note(options.model, options.checkpoint):  # the backend's SAM, whatever the encoder
        say(note)
    waiting = _Ticker(say)
    try:
        label_studio.start(progress=lambda s: waiting(f"Label Studio starting ({s:.0f} s)"))
        backend.start(progress=lambda s: waiting(f"ML backend starting ({s:.0f} s)"))
        workspace = Workspace(root / "workspace")
        settings = resolve({"encoder": options.encoder, "model": options.model, "checkpoint": options.checkpoint,
                            "cache_dir": str(cache_dir), "batch_size": options.size, "epochs": options.epochs,
                            "workspace": str(workspace.root), "annotators": options.annotators}, environ={})
        report = init_workspace(
            workspace, label_studio.url, label_studio.token, images=images, title="Mars pits demo",
            backend_url=backend.url, settings=settings.to_keep(),
        )
        say(f"project {report.project}: {report.tasks} tasks, {len(report.validation)} for validation, ML backend connected")
        run = DemoRun(label_studio, backend, workspace, report.project, simulated=bool(boxes),
                      annotators=options.annotators)
        _rounds(run, settings, _experts(label_studio, report.project, boxes, options.annotators, say), options, say)
        return run
    except BaseException:
        backend.stop()
        label_studio.stop()
        if label_studio.postgres:
            label_studio.postgres.stop()
        raise


def _tiles(options: DemoOptions, files: Path, say: Callable[[str], None]) -> tuple[Path, Path, dict]:
    """The tiles to label, Label Studio's local-files document root, and the simulated expert's
    boxes by file name ({}: tiles without boxes, for a person to label)."""
    if options.images is not None:
        images = options.images.resolve()
        return images, images.parent, dataset_boxes(images) if (images / "data.yaml").is_file() else {}
    train, valid, side = SAMPLE_TILES
    images = write_yolo_dataset(files / "sample", train=train, valid=valid, seed=0, size=side)
    say(f"sample: {train + valid} generated {side}x{side} tiles with pits and skylights in {images}")
    return images, files, dataset_boxes(images)


def _rounds(run: DemoRun, settings, experts: list[SimulatedExpert], options: DemoOptions,
            say: Callable[[str], None]) -> None:
    """Round 0 and ``options.rounds`` more, the simulated experts answering each batch."""
    workspace, token = run.workspace, run.label_studio.token
    for number in range(options.rounds + 1):
        result = next_batch(workspace, token, settings, progress=options.progress)
        run.reports.append(result)
        _say_team(run, workspace.team_rounds(), result.round - 1, say)
        run.report = write_report(workspace, settings)
        say(_round_line(result) + f"\n  report: {run.report}")
        # The last batch waits for a person, with its pre-annotations; a team answers it too, so
        # that its agreement is measured (its disputes are in the Review tab).
        if not run.simulated or (number == options.rounds and len(experts) < 2):
            return
        _answer(experts, workspace.pushed(result.round), result.round, say)
    _say_team(run, record_answers_now(workspace, token, settings), run.reports[-1].round, say)
    run.report = write_report(workspace, settings)


def _experts(label_studio: LabelStudioServer, project: int, boxes: dict, annotators: int,
             say: Callable[[str], None]) -> list[SimulatedExpert]:
    """The simulated expert, or a team of ``annotators``: the first is Label Studio's first user, the
    others users added to it, each answering with its own token and a habit of its own."""
    members = [(label_studio.username, label_studio.token)]
    for k in range(2, annotators + 1):
        member = label_studio.add_user(f"expert{k}@al-loop.local")
        members.append((member.email, member.token))
        say(f"Label Studio user {member.email} added (password {member.password})")
    schema = parse_label_config(check_project(connect(label_studio.url, label_studio.token), label_studio.url, project))
    experts = [SimulatedExpert(connect(label_studio.url, token), label_studio.url, schema, boxes,
                               habit=HABITS[k % len(HABITS)] if annotators > 1 else None)
               for k, (_, token) in enumerate(members)]
    if annotators > 1:
        say("the simulated team: " + "; ".join(f"{email} {e.habit}" for (email, _), e in zip(members, experts,
                                                                                            strict=True)))
    return experts


def _answer(experts: list[SimulatedExpert], rows: list[dict], number: int, say: Callable[[str], None]) -> None:
    for expert in experts:
        for row in rows:
            expert.answer(row["task_id"], row["image"], (row["height"], row["width"]))
    who = "the simulated expert" if len(experts) == 1 else f"each of the {len(experts)} simulated experts"
    say(f"  {who} answered the {len(rows)} tasks of round {number}")


def _say_team(run: DemoRun, team: dict[int, dict], number: int, say: Callable[[str], None]) -> None:
    """Keep the team's figures, and say those of round ``number``'s batch once they are known."""
    run.team = team
    found = team.get(number)
    if found is None:
        return
    iou, kappa = found["mask_iou"], found["type_kappa"]
    say(f"  team agreement on round {number}'s {found['tasks']} tasks: mask IoU "
        f"{'n/a' if iou is None else f'{iou:.2f}'}, type kappa {'n/a' if kappa is None else f'{kappa:.2f}'}, "
        f"{found['pits_by_one']} of {found['pits']} pits drawn by one expert only, {found['review']} task(s) to review")


def _database(name: str, say: Callable[[str], None]) -> PostgresServer | None:
    """Label Studio's database: SQLite in its data dir (None), or a private PostgreSQL, started here."""
    if name not in DATABASES:
        raise LoopError(f"unknown database {name!r}: one of {', '.join(DATABASES)}")
    if name == "sqlite":
        return None
    server = PostgresServer().start()
    say(f"PostgreSQL for Label Studio: database {server.database} on the socket in {server.folder}")
    return server


def _round_line(report: RoundReport) -> str:
    metrics = report.metrics
    shown = "  ".join(f"{k} {metrics[k]:.3f}" for k in ROUND_LINE if k in metrics)
    what = f"decoder trained on {report.labelled} tiles, {shown}" if report.round else "validation tiles + picks for variety"
    return f"round {report.round}: {what}; pushed {len(report.chosen)} tasks to tab 'Round {report.round}'"


class _Ticker:
    """A progress line every ten seconds while something starts."""

    def __init__(self, say: Callable[[str], None], every: float = 10.0):
        self.say, self.every, self.last = say, every, time.monotonic()

    def __call__(self, message: str) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.say(f"  ... {message}")


def _engine_note(model: str, checkpoint: str | None) -> str | None:
    """Which engine and precision SAM's image encoder runs on in the backend, and why."""
    from al_loop.models.encoders import encoder_of_model, resolve_engine
    from al_loop.models.weights import has_weights

    if not has_weights(model, checkpoint):
        return None
    engine = resolve_engine(encoder_of_model(model), checkpoint)
    return f"SAM {model}'s image encoder runs on {engine.runtime} {engine.precision} here: {engine.reason}"
