"""``al-loop next-batch``: one round of active learning against Label Studio.

A round has two halves. The *plan* pulls the experts' answers, makes sure every tile
is embedded, trains the decoder on the labelled pool, evaluates it on the labelled
validation tiles and ranks the unlabelled pool; its outcome (decoder file, chosen
tasks with scores, metrics, task states) is recorded in one transaction. The *push*
uploads one prediction per chosen task and creates the "Round N" tab, recording each
id as soon as Label Studio returns it. A run killed at any point is finished by the
next one: a recorded plan is not redone, and what Label Studio made but the workspace
did not yet record is found there, so nothing is pushed twice.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from label_studio_sdk import LabelStudio
from tqdm import tqdm

from al_loop.studio.answers import Answer, answer_mask, latest_answer, unknown_labels, was_skipped
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.models.decoder import DomainDecoder, TrainingSet, frame_to_tile, predict_frames, train_decoder
from al_loop.training.store import DecoderStore, DecoderVersion
from al_loop.models.encoders import Encoder, LazyEncoder
from al_loop.studio.fetch import LOCAL_FILES_PREFIX, FetchError, ImageFetcher, LabelStudioAccess, local_files_root
from al_loop.data.images import ImageError, content_hash, decode_image, image_size
from al_loop.studio.label_config import LabelSchema, SchemaError, parse_label_config
from al_loop.studio.client import (
    LabelStudioError,
    annotated_tasks,
    check_project,
    connect,
    create_prediction,
    find_prediction,
    list_tasks,
    put_view,
    show_predictions,
)
from al_loop.loop.init import LoopError
from al_loop.evaluation.metrics import Evaluation, component_boxes, min_object_pixels
from al_loop.embeddings.embed import TileRef, score_pool
from al_loop.studio.regions import RegionError, boxes_in, probability_regions
from al_loop.query.strategies import get_strategy
from al_loop.loop.workspace import Workspace, WorkspaceConfig, now

FIRST_ROUND_STRATEGY = "cold_start"


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


@dataclass
class RunContext:
    """What every step of one ``next-batch`` run shares: where things are and how to report."""

    workspace: Workspace
    config: WorkspaceConfig
    client: LabelStudio
    token: str
    cache: EmbeddingCache
    encoder: LazyEncoder
    timer: StepTimer
    step: Callable[[str], None]
    progress: bool


@dataclass
class TaskAnswers:
    """What Label Studio holds for the workspace's tasks right now."""

    answers: dict[int, Answer]  # task id -> newest submitted annotation
    skipped: set[int]
    present: dict[int, str]  # every task id in the project -> image URL


# -- reading Label Studio -------------------------------------------------------------------


def pull_answers(client: LabelStudio, config: WorkspaceConfig, schema: LabelSchema) -> TaskAnswers:
    url, project = config.label_studio_url, config.project
    present = {t["id"]: str((t.get("data") or {}).get(schema.image_key, "")) for t in list_tasks(client, url, project)}
    answers, skipped, problems = {}, set(), []
    for task in annotated_tasks(client, project, url):
        task_id = int(task["id"])
        answer = latest_answer(task)
        if answer is None:
            if was_skipped(task):
                skipped.add(task_id)
            continue
        problems += [f"task {task_id}: {p}" for p in unknown_labels(answer, schema)]
        answers[task_id] = answer
    if problems:
        raise LoopError(
            "annotations hold labels the project's labelling config does not know; fix them in Label Studio "
            "(or add the label to the config) and run again:\n  " + "\n  ".join(problems)
        )
    return TaskAnswers(answers, skipped, present)


def reconcile(workspace: Workspace, found: TaskAnswers, accept_deleted: bool) -> tuple[dict[int, str], list[int], list[int]]:
    """New task states, tasks deleted in Label Studio, tasks new in it. Nothing is written."""
    rows = workspace.read("SELECT task_id, state FROM tasks")
    known = {r["task_id"]: r["state"] for r in rows}
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
    joined = sorted(t for t in found.present if t not in known)
    return states, deleted, joined


# -- tiles and embeddings -------------------------------------------------------------------


class TileSource:
    """Task images through Label Studio (or straight from disk when the folder is ours)."""

    def __init__(self, config: WorkspaceConfig, token: str, sample_url: str | None):
        root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") or None
        if root is None and config.images and sample_url and LOCAL_FILES_PREFIX in sample_url:
            root = local_files_root(config.images, sample_url)
        self.access = LabelStudioAccess(config.label_studio_url, token)
        self.fetcher = ImageFetcher(root, self.access)

    def read(self, url: str) -> bytes:
        return self.fetcher.fetch(url, self.access)


@dataclass
class Tile:
    task_id: int
    url: str
    sha256: str
    size: tuple[int, int]

    def ref(self) -> TileRef:
        return TileRef(self.url, self.sha256, self.size)


def embed_tasks(
    rows: list[dict], source: TileSource, encoder: Encoder, cache: EmbeddingCache, progress: bool
) -> tuple[dict[int, Tile], list[str]]:
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
                cache.get_or_compute(sha, encoder.id, lambda: encoder.encode(decode_image(data, row["image"])))
        except (FetchError, ImageError) as exc:
            warnings.append(f"task {row['task_id']} left out of this round: {getattr(exc, 'message', exc)}")
            continue
        tiles[row["task_id"]] = Tile(row["task_id"], row["image"], sha, (int(size[0]), int(size[1])))
        bar.set_postfix(cached=cache.stats.hits, encoded=cache.stats.encodes, refresh=False)
    return tiles, warnings


class BoxMasks:
    """SAM box-prompt masks for answers that hold boxes without a mask; SAM loads on first use."""

    def __init__(self, config: WorkspaceConfig, source: TileSource, cache: EmbeddingCache):
        self.config, self.source, self.cache = config, source, cache
        self._sam = None

    def __call__(self, tile: Tile, boxes) -> list[np.ndarray]:
        from al_loop.models.encoders import SamEncoder
        from al_loop.models.sam import PromptSegmenter, load_sam

        if self._sam is None:
            sam, model_id = load_sam(self.config.model, self.config.checkpoint)
            self._sam = (SamEncoder(sam, model_id, self.config.precision), PromptSegmenter(sam))
        encoder, segmenter = self._sam
        embedding = self.cache.get_or_compute(
            tile.sha256, encoder.id, lambda: encoder.encode(decode_image(self.source.read(tile.url), tile.url))
        )
        return [b.clip(segmenter.segment(embedding, tile.size, box=b.as_xyxy()).mask) for b in boxes]


def training_masks(
    answers: dict[int, Answer], tiles: dict[int, Tile], schema: LabelSchema, box_masks: BoxMasks
) -> tuple[dict[int, np.ndarray], list[str]]:
    masks, warnings = {}, []
    for task_id, answer in answers.items():
        tile = tiles.get(task_id)
        if tile is None:
            continue
        try:
            masks[task_id] = answer_mask(answer, tile.size, schema, lambda boxes, tile=tile: box_masks(tile, boxes))
        except (RegionError, SchemaError) as exc:
            warnings.append(f"task {task_id}: its annotation cannot be read ({exc}); fix it in Label Studio")
    return masks, warnings


# -- the numeric middle ---------------------------------------------------------------------


def evaluate(
    decoder: DomainDecoder, tiles: list[Tile], masks: dict[int, np.ndarray], answers: dict[int, Answer],
    cache: EmbeddingCache, encoder: LazyEncoder,
) -> dict[str, float]:
    """The engine's pixel and object metrics over the labelled validation tiles."""
    evaluation = Evaluation()
    for tile in tiles:
        embedding = np.asarray(cache.load(tile.sha256, encoder.id), dtype=np.float32)
        prob = frame_to_tile(predict_frames(decoder, embedding[None])[0], tile.size)
        truth = masks[tile.task_id]
        # Boxes the expert drew count the pits; a brush-only answer counts its blobs.
        boxes = boxes_in(answers[tile.task_id].results, tile.size)
        expert = np.array([b.as_xyxy() for b in boxes]) if boxes else component_boxes(truth)
        evaluation.add(prob, truth, expert.reshape(-1, 4), min_object_px=min_object_pixels(tile.size, encoder.grid))
    return evaluation.summary()


def rank(
    strategy: str, decoder: DomainDecoder | None, candidates: list[Tile], labelled: list[Tile], cache: EmbeddingCache,
    encoder_id: str, size: int, seed: int, progress: bool,
) -> list[tuple[int, float | None]]:
    """The strategy's top ``size`` candidates with the score that ranked them."""
    spec = get_strategy(strategy)
    if not candidates:
        return []
    refs = [t.ref() for t in candidates]
    pool = score_pool(decoder, refs, cache, encoder_id, measures=[spec.needs] if spec.needs else [],
                      features=spec.needs_features, progress=progress)
    if spec.needs_features and labelled:
        pool.labelled_features = score_pool(None, [t.ref() for t in labelled], cache, encoder_id, features=True,
                                            progress=False).features
    picked = spec.select(pool, size, np.random.default_rng(seed))
    values = pool.scores.get(spec.needs) if spec.needs else None
    return [(candidates[i].task_id, None if values is None else float(values[i])) for i in picked]


# -- one round ------------------------------------------------------------------------------


def next_batch(
    workspace: Workspace,
    token: str,
    size: int = 5,
    strategy: str = "entropy",
    epochs: int = 100,
    force: bool = False,
    accept_deleted: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> RoundReport:
    """Finish an interrupted round, or plan and push the next one (see the module doc)."""
    if size < 1:
        raise LoopError("--size must be at least 1")
    get_strategy(strategy)  # an unknown name fails before anything is touched
    config = workspace.config()
    timer = StepTimer()
    step = on_step or (lambda name: None)
    try:
        with timer("connect"):
            client = connect(config.label_studio_url, token)
        run = RunContext(workspace, config, client, token, EmbeddingCache(cache_dir),
                         LazyEncoder(config.encoder, config.checkpoint, config.precision), timer, step, progress)
        unfinished = workspace.read("SELECT * FROM rounds WHERE finished_at IS NULL ORDER BY round")
        if unfinished:
            report = _push(run, dict(unfinished[0]))
            report.resumed = True
            return report
        with timer("pull"):
            step("pull")
            schema = parse_label_config(check_project(client, config.label_studio_url, config.project))
            found = pull_answers(client, config, schema)
            states, deleted, joined = reconcile(workspace, found, accept_deleted)
        last = workspace.read("SELECT * FROM rounds ORDER BY round DESC LIMIT 1")
        number = last[0]["round"] + 1 if last else 0
        if last and not force:
            pushed = [r["task_id"] for r in workspace.read("SELECT task_id FROM round_tasks WHERE round = ?", (last[0]["round"],))]
            awaited = sorted(t for t in pushed if states.get(t) == "unlabelled")
            if awaited:
                _record_states(workspace, states, found, joined)
                return RoundReport(
                    "waiting", last[0]["round"], last[0]["model_version"], last[0]["strategy"], last[0]["labelled"], 0, {},
                    [], view_id=last[0]["view_id"], awaited=awaited, joined=joined, seconds=timer.seconds,
                )
        report = _plan(run, schema, found, states, joined, number, size, strategy, epochs)
        report.warnings[:0] = [f"task {t} was deleted in Label Studio and leaves the loop" for t in deleted]
        pushed = _push(run, dict(workspace.read("SELECT * FROM rounds WHERE round = ?", (number,))[0]))
        report.view_id, report.predictions, report.seconds = pushed.view_id, pushed.predictions, timer.seconds
        return report
    except LabelStudioError as exc:
        raise LoopError(str(exc)) from None
    except SchemaError as exc:
        raise LoopError(f"project {config.project}: {exc}") from None


def _record_states(workspace: Workspace, states: dict[int, str], found: TaskAnswers, joined: list[int], db=None) -> None:
    def write(db) -> None:
        for task_id in joined:
            db.execute("INSERT INTO tasks (task_id, image, role) VALUES (?, ?, 'pool')", (task_id, found.present[task_id]))
        db.executemany("UPDATE tasks SET state = ? WHERE task_id = ?", [(s, t) for t, s in states.items()])

    if db is not None:
        write(db)
        return
    with workspace.transaction() as db:
        write(db)


def _plan(
    run: RunContext, schema: LabelSchema, found: TaskAnswers, states: dict[int, str], joined: list[int],
    number: int, size: int, strategy: str, epochs: int,
) -> RoundReport:
    workspace, config, cache, encoder, timer, step, progress = (
        run.workspace, run.config, run.cache, run.encoder, run.timer, run.step, run.progress
    )
    rows = [dict(r) for r in workspace.read("SELECT * FROM tasks ORDER BY task_id")]
    rows += [{"task_id": t, "image": found.present[t], "role": "pool", "sha256": None, "height": None, "width": None} for t in joined]
    rows = [r for r in rows if states[r["task_id"]] != "deleted"]
    role = {r["task_id"]: r["role"] for r in rows}
    ever_pushed = {r["task_id"] for r in workspace.read("SELECT task_id FROM round_tasks")}
    source = TileSource(config, run.token, rows[0]["image"] if rows else None)
    with timer("embed"):
        step("embed")
        tiles, warnings = embed_tasks(rows, source, encoder, cache, progress)

    candidates = [tiles[t] for t in sorted(tiles) if role[t] == "pool" and states[t] == "unlabelled" and t not in ever_pushed]
    metrics: dict[str, float] = {}
    decoder_entry = None
    train_ids: list[int] = []
    val_ids: list[int] = []
    if number == 0:
        used_strategy = FIRST_ROUND_STRATEGY
        with timer("rank"):
            step("rank")
            picks = rank(used_strategy, None, candidates, [], cache, encoder.id, size, number, progress)
        # Round 0: the validation set first (it is labelled before anything is learned), then
        # tiles that cover the pool's variety.
        validation = [(t, None) for t in sorted(tiles) if role[t] == "validation" and states[t] == "unlabelled"]
        chosen = validation + picks
    else:
        used_strategy = strategy
        with timer("masks"):
            step("masks")
            labelled = {t: a for t, a in found.answers.items() if t in tiles}
            masks, bad = training_masks(labelled, tiles, schema, BoxMasks(config, source, cache))
            warnings += bad
        train_ids = sorted(t for t in masks if role[t] == "pool")
        val_ids = sorted(t for t in masks if role[t] == "validation")
        if not train_ids:
            raise LoopError(
                "no labelled training tiles yet: label the tasks of the last round in Label Studio (the validation "
                "tiles are never trained on), then run `al-loop next-batch` again"
            )
        with timer("train"):
            step("train")
            data = TrainingSet()
            for t in train_ids:
                data.add(np.asarray(cache.load(tiles[t].sha256, encoder.id), dtype=np.float32), masks[t])
            decoder = train_decoder(data, epochs=epochs, seed=number, progress=progress)
        with timer("evaluate"):
            step("evaluate")
            if val_ids:
                metrics = evaluate(decoder, [tiles[t] for t in val_ids], masks, found.answers, cache, encoder)
            else:
                warnings.append("no validation tile is labelled yet: this round has no metrics")
        with timer("rank"):
            step("rank")
            chosen = rank(strategy, decoder, candidates, [tiles[t] for t in train_ids], cache, encoder.id, size, number, progress)
        decoder_entry = DecoderStore(workspace.root).save(
            decoder, f"round-{number}", config.encoder, encoder.id, checkpoint=config.checkpoint,
            precision=config.precision, make_latest=False, tiles=len(train_ids), epochs=epochs,
        )
    if not chosen:
        warnings.append("no unlabelled tile is left to push: the pool is exhausted")

    with timer("record"):
        step("record")
        with workspace.transaction() as db:
            _record_states(workspace, states, found, joined, db)
            for tile in tiles.values():
                db.execute("UPDATE tasks SET sha256 = ?, height = ?, width = ? WHERE task_id = ?",
                           (tile.sha256, tile.size[0], tile.size[1], tile.task_id))
            db.execute(
                "INSERT INTO rounds (round, started_at, strategy, size, labelled, decoder, model_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, now(), used_strategy, size, len(train_ids), decoder_entry.file if decoder_entry else None, f"round-{number}"),
            )
            db.executemany("INSERT INTO round_tasks (round, task_id, rank, score) VALUES (?, ?, ?, ?)",
                           [(number, t, i, s) for i, (t, s) in enumerate(chosen)])
            db.executemany("INSERT INTO metrics (round, name, value) VALUES (?, ?, ?)",
                           [(number, k, float(v)) for k, v in metrics.items()])
    return RoundReport("pushed", number, f"round-{number}", used_strategy, len(train_ids), len(val_ids), metrics, chosen,
                       joined=joined, warnings=warnings)


def _push(run: RunContext, round_row: dict) -> RoundReport:
    """Predictions for the round's tasks and its tab, each recorded as made; safe to repeat."""
    workspace, config, client = run.workspace, run.config, run.client
    number, version = round_row["round"], round_row["model_version"]
    url, project = config.label_studio_url, config.project
    chosen = workspace.read("SELECT rt.task_id, rt.score, rt.prediction_id, t.image, t.sha256, t.height, t.width "
                            "FROM round_tasks rt JOIN tasks t USING (task_id) WHERE rt.round = ? ORDER BY rt.rank", (number,))
    predictions = 0
    with run.timer("push"):
        run.step("push")
        if round_row["decoder"]:
            store = DecoderStore(workspace.root)
            entry = DecoderVersion(version, round_row["decoder"], config.encoder, run.encoder.id,
                                   config.checkpoint, config.precision)
            decoder, _ = store.load(entry)
            schema = parse_label_config(check_project(client, url, project))
            for row in tqdm(chosen, desc="push predictions", unit="task", disable=not run.progress):
                prediction = row["prediction_id"] or find_prediction(client, url, row["task_id"], version)
                if prediction is None:
                    size = (row["height"], row["width"])
                    embedding = np.asarray(run.cache.load(row["sha256"], entry.encoder_id), dtype=np.float32)
                    prob = frame_to_tile(predict_frames(decoder, embedding[None])[0], size)
                    regions, confidence = probability_regions(prob, schema.mask_control, min_object_pixels(size, run.encoder.grid))
                    prediction = create_prediction(client, url, row["task_id"], regions, confidence, version)
                if prediction != row["prediction_id"]:
                    with workspace.transaction() as db:
                        db.execute("UPDATE round_tasks SET prediction_id = ? WHERE round = ? AND task_id = ?",
                                   (prediction, number, row["task_id"]))
                predictions += 1
            show_predictions(client, url, project, version)
        view_id = round_row["view_id"]
        if view_id is None and chosen:
            view_id = put_view(client, url, project, f"Round {number}", [r["task_id"] for r in chosen])
        with workspace.transaction() as db:
            db.execute("UPDATE rounds SET view_id = ?, finished_at = ? WHERE round = ?", (view_id, now(), number))
        if round_row["decoder"]:
            store.set_latest(entry)  # the backend pre-annotates with it from now on
    metrics = {r["name"]: r["value"] for r in workspace.read("SELECT name, value FROM metrics WHERE round = ?", (number,))}
    return RoundReport("pushed", number, version, round_row["strategy"], round_row["labelled"], 0, metrics,
                       [(r["task_id"], r["score"]) for r in chosen], view_id=view_id, predictions=predictions,
                       seconds=run.timer.seconds)
