"""``al-loop next-batch``: one round of active learning against Label Studio.

A round has two halves. The *plan* pulls the experts' answers, makes sure every tile
is embedded, trains the decoder on the labelled pool, evaluates it on the labelled
validation tiles and ranks the unlabelled pool; its outcome (decoder file, chosen
tasks with scores, metrics, task states) is recorded in one transaction. The *push*
uploads one prediction per chosen task and creates the "Round N" tab, recording each
id as soon as Label Studio returns it. A run killed at any point is finished by the
next one: a recorded plan is not redone, and what Label Studio made but the workspace
did not yet record is found there, so nothing is pushed twice.

Round 0 has no decoder: after the validation tiles it sends TypiClust's picks (typical tiles
of the pool's clusters). Each learning round also records the stopping rule's measure, the
agreement between its decoder and the last round's on the validation tiles' images (the
stop set; their labels play no part), see :mod:`al_loop.query.stopping`.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from label_studio_sdk import LabelStudio
from tqdm import tqdm

from al_loop.data.images import content_hash, decode_image, image_size
from al_loop.data.radiometry import ValueSums
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import TileRef
from al_loop.errors import FetchError, ImageError, LoopError, SchemaError, UsageError, WorkspaceError
from al_loop.loop.team import PENDING, TeamAnswer, team_answers
from al_loop.loop.workspace import STOP_PREFIX, AnswerRecord, RoundPlan, StateUpdate, Workspace, WorkspaceConfig
from al_loop.models.decoder import DomainDecoder, predict_tile_classes
from al_loop.models.encoders import Encoder, LazyEncoder
from al_loop.models.pits import min_object_pixels
from al_loop.query.pool import predict_stop_set, select_from_pool
from al_loop.query.stopping import StopCheck, agreement, check_stopping
from al_loop.query.strategies import get_strategy
from al_loop.settings import Settings
from al_loop.studio.answers import Answer, answers_to_masks
from al_loop.studio.client import check_project, connect, create_prediction, find_prediction, put_view, show_predictions
from al_loop.studio.label_config import LabelSchema, parse_label_config
from al_loop.studio.learning import Labelled, learn, save_learned, split_roles
from al_loop.studio.pull import TaskAnswers, TileSource, pull_answers
from al_loop.studio.regions import probability_regions
from al_loop.studio.team import put_review_tab, set_overlap, user_name, user_names
from al_loop.training.masks import box_masker
from al_loop.training.store import DecoderStore, DecoderVersion

FIRST_ROUND_STRATEGY = "typiclust"


@dataclass
class StepTimer:
    """Wall seconds per step, for the report and the benchmark."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started


@dataclass
class RoundReport:
    status: str  # "pushed" (a round was pushed) or "waiting" (the last batch is not fully answered)
    round: int
    model_version: str
    strategy: str
    labelled: int  # training tiles the decoder saw
    validation: int  # labelled validation tiles it was evaluated on
    metrics: dict[str, float]
    chosen: list[tuple[int, float | None]]  # (task id, score), best first
    view_id: int | None = None
    predictions: int = 0
    resumed: bool = False
    awaited: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)  # tasks new in Label Studio since the last run
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    decoder_live: bool = False  # the round's decoder became the workspace's latest (it was evaluated)
    settings: dict = field(default_factory=dict)  # what the round ran with
    stopping: StopCheck | None = None  # the stopping rule over the rounds so far (None: resumed or waiting)
    in_review: list[int] = field(default_factory=list)  # tasks the team disagrees on, no reviewer's answer yet
    team: dict[int, dict] = field(default_factory=dict)  # per round, the team's agreement on its tasks


@dataclass
class RunContext:
    """What every step of one ``next-batch`` run shares: where things are and how to report."""

    workspace: Workspace
    config: WorkspaceConfig
    settings: Settings
    client: LabelStudio
    token: str
    cache: EmbeddingCache
    encoder: LazyEncoder
    timer: StepTimer
    step: Callable[[str], None]
    progress: bool

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named step: announced to the caller and timed."""
        with self.timer(name):
            self.step(name)
            yield


@dataclass
class Pulled:
    """A pull's outcome: the project's labelling config, its answers, and the task states they make."""

    schema: LabelSchema
    found: TaskAnswers
    update: StateUpdate
    deleted: list[int]
    names: dict[int, str] = field(default_factory=dict)  # Label Studio user id -> email

    @property
    def joined(self) -> list[int]:
        return sorted(self.update.joined)


@dataclass
class Request:
    """What this round is asked to do (size, strategy and epochs: ``RunContext.settings``)."""

    number: int
    first: bool = False  # no round before it: the validation tiles go out with it


@dataclass
class Outcome:
    """What one kind of round (round 0, or a learning round) decided."""

    strategy: str
    chosen: list[tuple[int, float | None]]
    metrics: dict[str, float] = field(default_factory=dict)
    decoder: str | None = None  # decoder file in the store
    train_ids: list[int] = field(default_factory=list)
    val_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    answers: AnswerRecord | None = None


# -- reading Label Studio -------------------------------------------------------------------


def reconcile(known: dict[int, str], found: TaskAnswers, accept_deleted: bool) -> tuple[StateUpdate, list[int]]:
    """New task states (and tasks new in Label Studio) from the workspace's ``known`` states and
    what Label Studio holds; plus the tasks deleted there. Nothing is written."""
    deleted = sorted(t for t, s in known.items() if t not in found.present and s != "deleted")
    if deleted and not accept_deleted:
        raise LoopError(
            f"{len(deleted)} task(s) of this workspace no longer exist in Label Studio: {deleted}. Restore them, or run "
            "again with --accept-deleted to drop them from the loop (their answers will no longer be trained on)"
        )
    states = {}
    for task_id in list(known) + [t for t in found.present if t not in known]:
        if task_id not in found.present:
            states[task_id] = "deleted"
        elif task_id in found.answers:
            states[task_id] = "labelled"
        elif task_id in found.skipped:
            states[task_id] = "skipped"
        else:
            states[task_id] = "unlabelled"
    joined = {t: found.present[t] for t in sorted(found.present) if t not in known}
    return StateUpdate(states, joined), deleted


def _pull(run: RunContext, accept_deleted: bool) -> Pulled:
    with run.stage("pull"):
        url, project = run.config.label_studio_url, run.config.project
        schema = parse_label_config(check_project(run.client, url, project))
        if run.settings.annotators > 1:  # every run: a changed setting reaches Label Studio
            set_overlap(run.client, url, project, run.settings.annotators)
        found = pull_answers(run.client, url, project, schema, run.settings.annotators)
        update, deleted = reconcile(run.workspace.task_states(), found, accept_deleted)
        names = user_names(run.client, url) if found.by_user else {}
    return Pulled(schema, found, update, deleted, names)


# -- tiles and embeddings -------------------------------------------------------------------


def embed_tasks(
    rows: list[dict], source: TileSource, encoder: Encoder, cache: EmbeddingCache, progress: bool
) -> tuple[dict[int, TileRef], list[str]]:
    """Every task's tile with its embedding in the cache; images are read only for tiles
    whose hash is not yet known or whose embedding is missing."""
    tiles, warnings = {}, []
    bar = tqdm(rows, desc=f"embeddings ({encoder.id})", unit="tile", disable=not progress)
    for row in bar:
        sha, size = row.get("sha256"), (row.get("height"), row.get("width"))
        try:
            if sha and size[0] and cache.contains(sha, encoder.id):
                cache.stats.add(hits=1)
            else:
                data = source.read(row["image"])
                sha, size = content_hash(data), image_size(data, row["image"])
                cache.get_or_compute(sha, encoder.id, lambda d=data, name=row["image"]: encoder.encode(decode_image(d, name)))
        except (FetchError, ImageError) as exc:
            warnings.append(f"task {row['task_id']} left out of this round: {getattr(exc, 'message', exc)}")
            continue
        tiles[row["task_id"]] = TileRef(row["image"], sha, (int(size[0]), int(size[1])))
        bar.set_postfix(cached=cache.stats.hits, encoded=cache.stats.encodes, refresh=False)
    return tiles, warnings


# -- one round ------------------------------------------------------------------------------


def next_batch(
    workspace: Workspace,
    token: str,
    settings: Settings,
    force: bool = False,
    accept_deleted: bool = False,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> RoundReport:
    """Finish an interrupted round, or plan and push the next one (see the module doc); the
    round's size, strategy, epochs, encoder and cache are ``settings``' (recorded with it)."""
    get_strategy(settings.strategy)  # an unknown name fails before anything is touched
    config = workspace.config()
    timer = StepTimer()
    with timer("connect"):
        client = connect(config.label_studio_url, token)
    encoder = LazyEncoder(settings.encoder, settings.checkpoint, settings.precision, settings.runtime)
    run = RunContext(workspace, config, settings, client, token, EmbeddingCache(settings.cache_location), encoder,
                     timer, on_step or (lambda _: None), progress)
    unfinished = workspace.unfinished_round()
    if unfinished:
        report = _push(run, unfinished)
        report.resumed = True
        return report
    try:
        pulled = _pull(run, accept_deleted)
    except SchemaError as exc:
        raise LoopError(f"project {config.project}: {exc}") from None
    last = workspace.last_round()
    waiting = None if last is None or force else _waiting(run, pulled, last)
    if waiting:
        return waiting
    request = Request(last["round"] + 1 if last else _first_round(workspace, pulled), last is None)
    report = _plan(run, pulled, request)
    report.warnings[:0] = [f"task {t} was deleted in Label Studio and leaves the loop" for t in pulled.deleted]
    pushed = _push(run, workspace.round(request.number))
    report.view_id, report.predictions, report.seconds = pushed.view_id, pushed.predictions, timer.seconds
    report.decoder_live = pushed.decoder_live
    return report


def _waiting(run: RunContext, pulled: Pulled, last: dict) -> RoundReport | None:
    """The last round's tasks still without (enough) answers, and with ``review`` "wait" the tasks
    still awaiting a reviewer, reported (states and answers recorded); None when nothing is awaited."""
    states = pulled.update.states
    awaited = sorted(r["task_id"] for r in run.workspace.pushed(last["round"]) if states.get(r["task_id"]) == "unlabelled")
    in_review = awaiting_review(run.workspace.team_records(), pulled.found.by_user)
    if not awaited and not (in_review and run.settings.review == "wait"):
        return None
    run.workspace.record_states(pulled.update)
    run.workspace.record_answers(answer_record(pulled))
    return RoundReport("waiting", last["round"], last["model_version"], last["strategy"], last["labelled"], 0, {}, [],
                       view_id=last["view_id"], awaited=awaited, joined=pulled.joined, seconds=run.timer.seconds,
                       in_review=in_review)


def answer_record(pulled: Pulled, records: dict[int, dict] | None = None, trained: set[int] | None = None) -> AnswerRecord:
    """Every submitted answer as pulled (who, what, how long), for the workspace; ``records``: the
    team's (None: leave the workspace's as they are)."""
    rows = [(a.annotation_id, task_id, a.user, user_name(pulled.names, a.user), a.lead_time)
            for task_id, per_user in sorted(pulled.found.by_user.items()) for a in per_user.values()
            if a.annotation_id is not None]
    return AnswerRecord(rows, records, trained or set())


def awaiting_review(records: dict[int, dict], by_user: dict[int, dict]) -> list[int]:
    """Tasks flagged for review that no answer has come to since."""
    return sorted(t for t, r in records.items() if r["review"] == PENDING
                  and {a.annotation_id for a in by_user.get(t, {}).values()} <= set(r["flagged"]))


def _plan(run: RunContext, pulled: Pulled, request: Request) -> RoundReport:
    """Embed every live task's tile, decide the round, and record it in one transaction."""
    states = pulled.update.states
    rows = _live_rows(run.workspace, pulled)
    role = {r["task_id"]: r["role"] for r in rows}
    source = TileSource(run.config.label_studio_url, run.token, run.config.images, run.settings.local_root,
                        rows[0]["image"] if rows else None)
    with run.stage("embed"):
        tiles, warnings = embed_tasks(rows, source, run.encoder, run.cache, run.progress)
    ever_pushed = {r["task_id"] for r in run.workspace.pushed()}
    candidates = [t for t in sorted(tiles) if role[t] == "pool" and states[t] == "unlabelled" and t not in ever_pushed]
    validation = [t for t in sorted(tiles) if role[t] == "validation" and states[t] == "unlabelled"]
    if request.number == 0:
        outcome = _round_zero(run, tiles, validation, candidates, run.settings.batch_size)
    else:
        outcome = _learning_round(run, pulled, tiles, role, source, candidates, request)
        if request.first:  # labels were imported: no round 0 sent the validation tiles out
            outcome.chosen[:0] = [(t, None) for t in validation]
    warnings += outcome.warnings + _deleted_answers(run.workspace, pulled)
    if not outcome.chosen:
        warnings.append("no unlabelled tile is left to push: the pool is exhausted")
    live_validation = [t for t in tiles if role[t] == "validation" and states[t] != "skipped"]
    plan = RoundPlan(request.number, outcome.strategy, run.settings.batch_size, len(outcome.train_ids), outcome.decoder,
                     pulled.update, {t: (r.sha256, *r.size) for t, r in tiles.items()}, outcome.chosen, outcome.metrics,
                     settings=run.settings.kept(), validation={"scored": outcome.val_ids, "of": len(live_validation)},
                     answers=outcome.answers or answer_record(pulled))
    with run.stage("record"):
        run.workspace.record_plan(plan)
    return RoundReport("pushed", plan.number, plan.model_version, plan.strategy, plan.labelled, len(outcome.val_ids),
                       plan.metrics, plan.chosen, joined=pulled.joined, warnings=warnings, settings=plan.settings,
                       stopping=check_stopping(run.workspace.agreements(), run.settings.stop_threshold,
                                               run.settings.stop_window))


def _deleted_answers(workspace: Workspace, pulled: Pulled) -> list[str]:
    """A line for each answer an earlier decoder learned from that is gone from Label Studio now:
    the decoder of this round no longer learns from it, and what was made with the earlier one stays."""
    present = {a.annotation_id for per_user in pulled.found.by_user.values() for a in per_user.values()}
    return [f"annotation {r['annotation_id']} by {r['email']} on task {r['task_id']}, which round {r['trained_round']} "
            "learned from, was deleted in Label Studio: this round no longer learns from it (decoders and maps "
            "made before keep it)"
            for r in workspace.answer_rows() if r["trained_round"] is not None and r["annotation_id"] not in present]


def _first_round(workspace: Workspace, pulled: Pulled) -> int:
    """0, unless pool tasks came with answers (labels imported by ``init --labels``): then there
    is something to learn from at once, and the first round is round 1."""
    pool = {r["task_id"] for r in workspace.tasks() if r["role"] == "pool"}
    return 1 if pool & set(pulled.found.answers) else 0


def _live_rows(workspace: Workspace, pulled: Pulled) -> list[dict]:
    """The workspace's tasks plus those new in Label Studio, less the deleted ones."""
    rows = workspace.tasks() + [
        {"task_id": t, "image": url, "role": "pool", "sha256": None, "height": None, "width": None}
        for t, url in pulled.update.joined.items()
    ]
    return [r for r in rows if pulled.update.states[r["task_id"]] != "deleted"]


def _round_zero(run: RunContext, tiles: dict[int, TileRef], validation: list[int], candidates: list[int], size: int) -> Outcome:
    """Round 0 has no decoder: the validation set first (it is labelled before anything is
    learned), then tiles that cover the pool's variety."""
    with run.stage("rank"):
        picks = _select(run, FIRST_ROUND_STRATEGY, None, tiles, candidates, [], size, seed=0)
    return Outcome(FIRST_ROUND_STRATEGY, [(t, None) for t in validation] + picks)


def _learning_round(
    run: RunContext, pulled: Pulled, tiles: dict[int, TileRef], role: dict[int, str], source: TileSource,
    candidates: list[int], request: Request,
) -> Outcome:
    """Train on the labelled pool tiles, evaluate on the labelled validation tiles, rank the rest."""
    settings = run.settings
    with run.stage("masks"):
        answers, masks, team, warnings = _training_masks(run, pulled, tiles, source)
        values = {t: ValueSums.of(decode_image(source.read(tiles[t].source), tiles[t].source).pixels)
                  for t in split_roles(list(masks), role)[0]}
    with run.stage("train"):
        learned = learn(Labelled(answers, tiles, masks, values), role, pulled.schema, run.cache, run.encoder.id,
                        epochs=settings.epochs, seed=request.number, progress=run.progress)
    if learned.evaluation is None:
        warnings.append("no validation tile is labelled yet: this round has no metrics, and its decoder does not "
                        "pre-annotate in the backend or make maps until one is")
    with run.stage("rank"):
        chosen = _select(run, settings.strategy, learned.decoder, tiles, candidates, learned.trained_on,
                         settings.batch_size, seed=request.number)
    with run.stage("stopping"):
        stopping = _stop_agreement(run, learned.decoder, [tiles[t] for t in sorted(tiles) if role[t] == "validation"])
    entry = save_learned(DecoderStore(run.workspace.root), learned, f"round-{request.number}", settings.encoder,
                         run.encoder.id, checkpoint=settings.checkpoint, precision=run.encoder.precision, make_latest=False,
                         epochs=settings.epochs, type_names=list(pulled.schema.type_names))
    used = set(learned.trained_on) | set(learned.validated_on)
    trained = {a.annotation_id for t in used for a in pulled.found.by_user.get(t, {}).values()}
    return Outcome(settings.strategy, chosen, {**learned.metrics, **(stopping or {})}, entry.file, learned.trained_on,
                   learned.validated_on, warnings, answer_record(pulled, {t: f.record() for t, f in team.items()},
                                                                 trained))


def _training_masks(
    run: RunContext, pulled: Pulled, tiles: dict[int, TileRef], source: TileSource,
) -> tuple[dict[int, Answer], dict[int, np.ndarray], dict[int, TeamAnswer], list[str]]:
    """The answers the round learns from and their masks ((H, W) uint8 of types), by task: a lone
    expert's answer, or a team's consensus (or reviewer's answer; a task awaiting review is left
    out); the team's findings; and warnings."""
    settings = run.settings
    answers = {t: a for t, a in pulled.found.answers.items() if t in tiles}
    masker, note = box_masker(run.cache, lambda ref: decode_image(source.read(ref.source), ref.source),
                              model=settings.model, checkpoint=settings.checkpoint, precision=settings.precision,
                              runtime=settings.runtime)
    team_tasks = _team_tasks(run, pulled, tiles)
    masks, warnings = answers_to_masks({t: a for t, a in answers.items() if t not in team_tasks}, tiles,
                                       pulled.schema, masker)
    team, team_warnings = team_answers({t: pulled.found.by_user[t] for t in team_tasks}, tiles, pulled.schema, masker,
                                       pulled.names, run.workspace.team_records(), settings.review_below)
    for task_id, found in team.items():  # the consensus (or the reviewer's answer) trains, never one expert
        if found.mask is None:
            answers.pop(task_id, None)  # awaiting review: left out
        else:
            masks[task_id], answers[task_id] = found.mask, Answer(task_id, [])
    return answers, masks, team, warnings + team_warnings + ([note] if note else [])


def _team_tasks(run: RunContext, pulled: Pulled, tiles: dict[int, TileRef]) -> list[int]:
    """The answered tasks the loop learns a team's consensus on: with ``annotators`` of 2 or more,
    every one that two or more experts answered."""
    if run.settings.annotators < 2:
        return []
    return sorted(t for t in pulled.found.answers if t in tiles and len(pulled.found.by_user.get(t, {})) >= 2)


def _stop_agreement(run: RunContext, decoder: DomainDecoder, stop_set: list[TileRef]) -> dict[str, float] | None:
    """Agreement of ``decoder`` with the last round's on the stop set (the validation tiles' images),
    as the round's metrics ``stop_kappa`` and ``stop_object_f1``; None when there is no earlier
    decoder on the same encoder, or no stop-set tile."""
    previous = next((r for r in reversed(run.workspace.rounds()) if r["decoder"]), None)
    if previous is None or not stop_set or previous["settings"].get("encoder", run.settings.encoder) != run.settings.encoder:
        return None
    entry = DecoderVersion(previous["model_version"], previous["decoder"], run.settings.encoder, run.encoder.id,
                           run.settings.checkpoint, run.encoder.precision)
    try:
        before, _ = DecoderStore(run.workspace.root).load(entry)
    except (WorkspaceError, UsageError):  # the last decoder is gone, damaged or of another encoder: no comparison
        return None
    found = agreement(predict_stop_set(before, stop_set, run.cache, run.encoder.id),
                      predict_stop_set(decoder, stop_set, run.cache, run.encoder.id))
    return {f"{STOP_PREFIX}kappa": found.kappa, f"{STOP_PREFIX}object_f1": found.object_f1}


def _select(
    run: RunContext, strategy: str, decoder: DomainDecoder | None, tiles: dict[int, TileRef], candidates: list[int],
    labelled: list[int], size: int, seed: int,
) -> list[tuple[int, float | None]]:
    """(task id, score) of the strategy's picks among ``candidates``, best first."""
    picks = select_from_pool(strategy, decoder, [tiles[t] for t in candidates], [tiles[t] for t in labelled], size,
                   run.cache, run.encoder.id, np.random.default_rng(seed), run.progress)
    return [(candidates[i], score) for i, score in picks]


# -- pushing to Label Studio ----------------------------------------------------------------


def _push(run: RunContext, round_row: dict) -> RoundReport:
    """Predictions for the round's tasks and its tab, each recorded as made; safe to repeat."""
    number, version = round_row["round"], round_row["model_version"]
    url, project = run.config.label_studio_url, run.config.project
    chosen = run.workspace.pushed(number)
    predictions = 0
    with run.stage("push"):
        entry = None
        if round_row["decoder"]:
            entry = DecoderVersion(version, round_row["decoder"], run.settings.encoder, run.encoder.id,
                                   run.settings.checkpoint, run.encoder.precision)
            predictions = _push_predictions(run, number, entry, chosen)
            if predictions:  # Label Studio refuses (400) a model version that has no prediction
                show_predictions(run.client, url, project, version)
        view_id = round_row["view_id"]
        if view_id is None and chosen:
            view_id = put_view(run.client, url, project, f"Round {number}", [r["task_id"] for r in chosen])
        if run.settings.annotators > 1:
            put_review_tab(run.client, url, project,
                           [t for t, r in run.workspace.team_records().items() if r["review"] == PENDING])
        run.workspace.finish_round(number, view_id)
        # The backend pre-annotates with it from now on, and map --workspace maps with it, if it was scored.
        live = entry is not None and DecoderStore(run.workspace.root).set_latest(entry)
    return RoundReport("pushed", number, version, round_row["strategy"], round_row["labelled"], 0,
                       run.workspace.round_metrics(number), [(r["task_id"], r["score"]) for r in chosen],
                       view_id=view_id, predictions=predictions, seconds=run.timer.seconds, decoder_live=live,
                       settings=round_row["settings"])


def _push_predictions(run: RunContext, number: int, entry: DecoderVersion, chosen: list[dict]) -> int:
    """One prediction per chosen task, unless Label Studio already holds it (a push cut short)."""
    url = run.config.label_studio_url
    decoder, _ = DecoderStore(run.workspace.root).load(entry)
    schema = parse_label_config(check_project(run.client, url, run.config.project))
    for row in tqdm(chosen, desc="push predictions", unit="task", disable=not run.progress):
        prediction = row["prediction_id"] or find_prediction(run.client, url, row["task_id"], entry.version)
        expected = None  # pits per type the decoder expects on the tile (unknown for a prediction found made)
        if prediction is None:
            size = (row["height"], row["width"])
            probs = predict_tile_classes(decoder, run.cache.load(row["sha256"], entry.encoder_id), size)
            regions, confidence = probability_regions(probs, schema.mask_control, min_object_pixels(size, run.encoder.grid))
            prediction = create_prediction(run.client, url, row["task_id"], regions, confidence, entry.version)
            expected = Counter(label for r in regions for label in r["value"].get("brushlabels", []))
        if prediction != row["prediction_id"]:
            run.workspace.record_prediction(number, row["task_id"], prediction, expected)
    return len(chosen)


def record_answers_now(workspace: Workspace, token: str, settings: Settings) -> dict[int, dict]:
    """Pull the answers and record who answered what and, for a team, its agreement and review
    per task, without planning a round (the demo does so after its experts answered the last
    batch). Returns the team's agreement per round (:meth:`Workspace.team_rounds`)."""
    config = workspace.config()
    client = connect(config.label_studio_url, token)
    encoder = LazyEncoder(settings.encoder, settings.checkpoint, settings.precision, settings.runtime)
    run = RunContext(workspace, config, settings, client, token, EmbeddingCache(settings.cache_location), encoder,
                     StepTimer(), lambda _: None, False)
    pulled = _pull(run, accept_deleted=True)
    tiles = {r["task_id"]: TileRef(r["image"], r["sha256"], (r["height"], r["width"]))
             for r in workspace.tasks() if r["sha256"] and r["height"]}
    source = TileSource(config.label_studio_url, token, config.images, settings.local_root,
                        next(iter(tiles.values())).source if tiles else None)
    _, _, team, _ = _training_masks(run, pulled, tiles, source)
    workspace.record_states(pulled.update)
    workspace.record_answers(answer_record(pulled, {t: f.record() for t, f in team.items()}))
    return workspace.team_rounds()
