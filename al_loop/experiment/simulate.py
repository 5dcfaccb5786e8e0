"""The paper's experiment replayed without a person: an oracle answers from expert boxes.

Round 1 labels ``steps[0]`` tiles picked with no decoder (``first_round``: TypiClust, the
typical tiles of the pool's clusters, by default; ``random`` as before), the same for every
strategy of a seed; each later round adds ``steps[k] - steps[k-1]`` tiles chosen by the
strategy from the decoder of the round before, retrains the decoder from scratch on all
labels so far, and evaluates it on the valid split. Each round also records the stopping
rule's measure: the agreement between this round's decoder and the last one's on the valid
split's images (never its labels), see :mod:`al_loop.query.stopping`.

Round 1 does not depend on the strategy, so each seed trains and evaluates it once for all
its strategies; seeds run in parallel processes, one per core (torch on one thread each: the
decoder's small matrix products gain little from a second thread), and each process keeps the
pool's pooled embeddings once computed. A seed's figures do not depend on how many processes ran.

The summary gives per strategy and labelled count the mean over seeds with a 95 % t-interval,
and the difference from random seed by seed (the same first-round tiles) with its own
interval; :func:`stopping_summary` says where the rule would have stopped each run.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.groups import SplitCheck, check_split
from al_loop.data.yolo import LabelledTile, class_names, load_split
from al_loop.embeddings.cache import EmbeddingCache
from al_loop.errors import UsageError
from al_loop.evaluation.evaluate import evaluate_decoder
from al_loop.evaluation.metrics import HEADLINE, PER_TYPE, TYPED_LABELS, per_type_key, type_names_in
from al_loop.models.decoder import DomainDecoder
from al_loop.query.pool import PooledFeatures, predict_stop_set, select_from_pool
from al_loop.query.stopping import STOP_MEASURE, STOP_THRESHOLD, STOP_WINDOW, agreement, stop_round
from al_loop.query.strategies import get_strategy
from al_loop.training.fit import EmbeddedTiles, OracleMasks, TrainingRecipe, embed_tiles, train_on_tiles


@dataclass
class SimulationConfig:
    dataset: Path
    steps: list[int] = field(default_factory=lambda: [5, 10, 15, 20, 25, 50])
    strategies: list[str] = field(default_factory=lambda: ["object_entropy", "random"])
    encoder: str = TrainingRecipe.encoder
    oracle: str = TrainingRecipe.oracle
    model: str = TrainingRecipe.model  # SAM model for the sam oracle (and for sam-* encoders' weights)
    checkpoint: str | None = TrainingRecipe.checkpoint
    seeds: int = 3
    epochs: int = TrainingRecipe.epochs
    train_split: str = "train"
    eval_split: str = "valid"
    classes: bool = False  # learn the dataset's box classes as pit types (the simulated expert types each pit)
    precision: str | None = TrainingRecipe.precision
    runtime: str | None = TrainingRecipe.runtime  # SAM's image-encoder engine (None: the machine's default)
    regroup: bool = False  # draw the valid split again from whole groups of near-duplicates
    first_round: str = "typiclust"  # how round 1's tiles are picked, with no decoder yet (typiclust, coreset, random)
    stop_threshold: float = STOP_THRESHOLD  # the stopping rule, as next-batch applies it
    stop_window: int = STOP_WINDOW

    @property
    def recipe(self) -> TrainingRecipe:
        """What each round's decoder is trained with: the same recipe as ``al-loop train``'s."""
        return TrainingRecipe(self.encoder, self.model, self.checkpoint, self.precision, self.runtime, self.oracle,
                              self.epochs)

    def validate(self) -> None:
        if not self.steps or any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)) or self.steps[0] < 1:
            raise UsageError(f"the steps must be increasing positive labelled-tile counts, got {self.steps}", param="steps")
        for name in self.strategies:
            get_strategy(name)
        if get_strategy(self.first_round).needs:
            raise UsageError(f"the first round has no decoder: {self.first_round!r} needs one; use typiclust, coreset or random")
        if self.seeds < 1 or self.epochs < 1:
            raise UsageError(f"seeds and epochs must each be at least 1, got {self.seeds} and {self.epochs}", param="seeds")


def _embedded_split(tiles: list[LabelledTile], encoder, cache, progress: bool) -> EmbeddedTiles:
    split = embed_tiles(tiles, encoder, cache, progress)
    for failure in split.failures:
        tqdm.write(f"skipped: {failure}")
    return split


def load_splits(config: SimulationConfig, progress: bool = True) -> tuple[list[LabelledTile], list[LabelledTile], SplitCheck]:
    """The training and evaluation tiles, and how much the data set's own split leaks (near-
    duplicates across it); with ``config.regroup``, the evaluation tiles drawn again from whole
    groups of copies, so that none has a copy among the training tiles."""
    train_tiles, _ = load_split(config.dataset, config.train_split)
    eval_tiles, _ = load_split(config.dataset, config.eval_split)
    first, second, check = check_split([t.image for t in train_tiles], [t.image for t in eval_tiles], config.regroup,
                                       progress=progress)
    every = train_tiles + eval_tiles
    return [every[i] for i in first], [every[i] for i in second], check


def run_simulation(
    config: SimulationConfig,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    on_round: Callable[[dict], None] | None = None,
    splits: tuple[list[LabelledTile], list[LabelledTile]] | None = None,
    workers: int | None = None,
) -> list[dict]:
    """Every round of every (strategy, seed) run, as flat rows of metrics, ordered by strategy,
    seed and round; ``splits`` (training, evaluation tiles) as :func:`load_splits` gives them,
    loaded here when not given. Seeds run in ``workers`` processes (default: one per usable
    core, at most one per seed); ``on_round`` sees each seed's rows when the seed is done.

    The worker processes start fresh and import the calling script, as Python's multiprocessing
    does: a script that calls this with several seeds needs ``if __name__ == "__main__":``."""
    run = prepare_run(config, cache or EmbeddingCache(), progress, splits)
    rows = []
    for seed_rows in _seeds_in_parallel(run, workers or default_workers(config.seeds)):
        rows.extend(seed_rows)
        for row in seed_rows:
            if on_round:
                on_round(row)
    order = {name: i for i, name in enumerate(config.strategies)}
    return sorted(rows, key=lambda r: (order[r["strategy"]], r["seed"], r["round"]))


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare_run(
    config: SimulationConfig, cache: EmbeddingCache, progress: bool = True,
    splits: tuple[list[LabelledTile], list[LabelledTile]] | None = None,
) -> Run:
    """What every run of the experiment shares: both splits embedded (computed into ``cache`` where
    missing), the valid split's expert masks, and the oracle that makes the training tiles' masks."""
    config.validate()
    encoder = config.recipe.lazy_encoder()
    train_tiles, eval_tiles = splits or load_splits(config, progress)[:2]
    if config.steps[-1] > len(train_tiles):
        raise UsageError(f"the steps ask for {config.steps[-1]} labelled tiles; the train split has {len(train_tiles)}",
                         param="steps")
    train = _embedded_split(train_tiles, encoder, cache, progress)
    valid = _embedded_split(eval_tiles, encoder, cache, progress)
    oracle = config.recipe.build_oracle(cache)
    names = type_names(config)
    valid_masks = OracleMasks(oracle, valid.tiles, len(names))
    truth = [valid_masks[i] for i in tqdm(range(len(valid)), desc=f"{oracle.name} oracle (valid)", disable=not progress)]
    return Run(config, train, valid, truth, OracleMasks(oracle, train.tiles, len(names)), cache, encoder.id, progress,
               names)


def default_workers(seeds: int) -> int:
    """One process per usable core, at most one per seed."""
    return max(1, min(seeds, usable_cores()))


_WORKER_RUN: Run | None = None  # in a worker process: the run its parent sent it once


def _adopt(run: Run, threads: int) -> None:
    """A worker process's start: keep the run and take its share of the cores."""
    import torch

    global _WORKER_RUN
    torch.set_num_threads(threads)
    _WORKER_RUN = run


def _seed_rows(seed: int) -> list[dict]:
    """A worker process's task: every strategy's rounds of one seed."""
    assert _WORKER_RUN is not None
    return list(run_seed(_WORKER_RUN, _WORKER_RUN.config.strategies, seed))


def _seeds_in_parallel(run: Run, workers: int) -> Iterator[list[dict]]:
    """Each seed's rows, as its process finishes them; with one worker, here, in seed order.

    Workers start from a fresh interpreter (forkserver, else spawn), never by forking this
    process: a fork copies the locks that other threads hold (Label Studio's client, ONNX
    Runtime, Ray, tqdm's monitor), and a child that needs one waits forever (CI hung in the first
    test that forked them). Each
    worker gets the run pickled once (tiles are paths; the SAM oracle rebuilds its model)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    seeds = range(run.config.seeds)
    if workers <= 1:
        for seed in seeds:
            yield list(run_seed(run, run.config.strategies, seed))
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    threads = max(1, usable_cores() // workers)
    show = run.progress
    run.progress = False  # tqdm bars from several processes at once would garble the terminal
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_adopt,
                                 initargs=(run, threads)) as pool:
            futures = [pool.submit(_seed_rows, seed) for seed in seeds]
            for done in tqdm(as_completed(futures), total=len(futures), desc=f"seeds ({workers} processes)",
                             unit="seed", disable=not show):
                yield done.result()
    finally:
        run.progress = show


@dataclass
class Run:
    """One (strategy, seed) run: what stays fixed across its rounds."""

    config: SimulationConfig
    train: EmbeddedTiles
    valid: EmbeddedTiles
    truth: Sequence[np.ndarray]
    masks: OracleMasks  # the training tiles' masks, made as they are labelled
    cache: EmbeddingCache
    encoder_id: str
    progress: bool
    type_names: tuple[str, ...] = ("pit",)
    pooled: PooledFeatures | None = None  # the training tiles' pooled embeddings, kept across rounds and runs

    def __post_init__(self) -> None:
        self.pooled = self.pooled or PooledFeatures(self.cache, self.encoder_id)


def type_names(config: SimulationConfig) -> tuple[str, ...]:
    """The dataset's class names with ``--classes``, else the one type "pit"."""
    return tuple(class_names(config.dataset)) if config.classes else ("pit",)


def first_picks(run: Run, seed: int) -> list[int]:
    """Round 1's tiles: ``first_round``'s picks among every training tile, with no decoder."""
    config, train = run.config, run.train
    picks = select_from_pool(config.first_round, None, train.refs, [], config.steps[0], run.cache, run.encoder_id,
                             np.random.default_rng(seed), run.progress, pooled=run.pooled)
    return [i for i, _ in picks]


@dataclass
class _Round:
    """One round's outcome: what the next round starts from."""

    labelled: list[int]
    decoder: DomainDecoder
    metrics: dict
    predicted: list[np.ndarray]  # the decoder's classes over the valid split, for the next round's agreement
    chosen_scores: list[float]


def _train_and_measure(run: Run, labelled: list[int], seed: int, chosen_scores: list[float]) -> _Round:
    """A fresh decoder trained on ``labelled``, its metrics on the valid split and its prediction there."""
    config, cache = run.config, run.cache
    expert_types = [t.classes + 1 if len(run.type_names) > 1 else np.ones(len(t.boxes), int) for t in run.valid.tiles]
    decoder = train_on_tiles(run.train, run.masks, labelled, types=len(run.type_names), encoder_id=run.encoder_id,
                             cache=cache, recipe=config.recipe, seed=seed, progress=run.progress)
    metrics = evaluate_decoder(decoder, run.valid.refs, run.truth, [t.boxes for t in run.valid.tiles], cache,
                               run.encoder_id, type_names=run.type_names, expert_types=expert_types)
    return _Round(list(labelled), decoder, metrics, predict_stop_set(decoder, run.valid.refs, cache, run.encoder_id),
                  chosen_scores)


def run_seed(run: Run, strategies: Sequence[str], seed: int) -> Iterator[dict]:
    """The rows of every strategy's run of one seed: round 1 (the first-round picks, the same
    for every strategy) is trained and measured once, and each strategy's later rounds start from it."""
    first = _train_and_measure(run, first_picks(run, seed), seed, [])
    for strategy in strategies:
        yield from _rounds(run, strategy, seed, first)


def run_one(run: Run, strategy: str, seed: int) -> Iterator[dict]:
    """The rounds of one run, as rows: round 1 labels the first-round picks, later rounds add the
    strategy's picks; the decoder is retrained from scratch on all labels each round. Each row
    carries ``stop_kappa`` and ``stop_object_f1``, the agreement with the round before's decoder
    on the valid split's images (None in round 1)."""
    return run_seed(run, [strategy], seed)


def _rounds(run: Run, strategy: str, seed: int, first: _Round) -> Iterator[dict]:
    config, train = run.config, run.train
    rng = np.random.default_rng(seed)
    last: _Round | None = None
    for round_no, target in enumerate(config.steps, 1):
        if round_no == 1:
            now = first
        else:
            unlabelled = np.setdiff1d(np.arange(len(train.refs)), last.labelled)
            picks = select_from_pool(strategy, last.decoder, [train.refs[i] for i in unlabelled],
                                     [train.refs[i] for i in last.labelled], target - len(last.labelled), run.cache,
                                     run.encoder_id, rng, run.progress, pooled=run.pooled)
            labelled = last.labelled + [int(unlabelled[j]) for j, _ in picks]
            now = _train_and_measure(run, labelled, seed, [s for _, s in picks if s is not None])
        stop = agreement(last.predicted, now.predicted) if last is not None else None
        last = now
        yield {
            "strategy": strategy,
            "seed": seed,
            "round": round_no,
            "labelled": len(now.labelled),
            **now.metrics,
            "stop_kappa": None if stop is None else stop.kappa,
            "stop_object_f1": None if stop is None else stop.object_f1,
            "chosen_scores": now.chosen_scores,
            "labelled_tiles": [Path(train.refs[i].source).name for i in now.labelled],
        }


def typed_metrics(names: Sequence[str]) -> list[str]:
    """What a typed simulation summarises beyond :data:`HEADLINE`: the typed totals, then
    each type's object recall, object precision and IoU."""
    return [*TYPED_LABELS, *(per_type_key(m, n) for n in names for m in PER_TYPE)]


def t_halfwidth(values: np.ndarray, level: float = 0.95) -> float:
    """Half the width of the t-interval of the mean of ``values`` (n,) at ``level``; nan for fewer
    than two values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def summarise(rows: list[dict], metrics: Sequence[str] | None = None) -> list[dict]:
    """Mean, std and the 95 % t-interval's half-width (``_ci95``) over seeds per (strategy,
    labelled count); by default the headline metrics and, for typed rows, the typed ones."""
    if metrics is None:
        metrics = [*HEADLINE, *[m for m in typed_metrics(_row_types(rows)) if rows and m in rows[0]]]
    out = []
    keys = sorted({(r["strategy"], r["labelled"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for strategy, labelled in keys:
        group = [r for r in rows if r["strategy"] == strategy and r["labelled"] == labelled]
        entry = {"strategy": strategy, "labelled": labelled, "seeds": len(group)}
        for m in metrics:
            values = np.array([r[m] for r in group], dtype=float)
            entry[m] = float(values.mean())
            entry[m + "_std"] = float(values.std())
            entry[m + "_ci95"] = t_halfwidth(values)
        out.append(entry)
    return out


def _row_types(rows: list[dict]) -> list[str]:
    return type_names_in(rows[0]) if rows else []


def paired_against(rows: list[dict], baseline: str = "random", metric: str = "object_recall") -> list[dict]:
    """Each strategy minus the baseline, seed by seed, per labelled count.

    A seed fixes the first round's tiles for every strategy, so the difference within a seed
    removes the luck of that start; the seed-to-seed spread of either strategy alone is larger
    than most gaps between them. ``se`` is the standard error of the mean difference, ``ci95``
    the 95 % t-interval of it (it excludes 0: the gap is unlikely to be luck); ``wins`` counts
    seeds where the strategy was ahead."""
    base = {(r["seed"], r["labelled"]): r[metric] for r in rows if r["strategy"] == baseline}
    out = []
    keys = sorted({(r["strategy"], r["labelled"]) for r in rows if r["strategy"] != baseline})
    for strategy, labelled in keys:
        diffs = np.array(
            [r[metric] - base[(r["seed"], labelled)] for r in rows
             if r["strategy"] == strategy and r["labelled"] == labelled and (r["seed"], labelled) in base]
        )
        if not len(diffs):
            continue
        se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
        half = t_halfwidth(diffs)
        out.append({"strategy": strategy, "labelled": labelled, "metric": metric, "baseline": baseline,
                    "seeds": len(diffs), "mean": float(diffs.mean()), "se": se,
                    "ci95": [float(diffs.mean() - half), float(diffs.mean() + half)],
                    "wins": int((diffs > 0).sum()), "losses": int((diffs < 0).sum())})
    return out


def stopping_summary(
    rows: list[dict], threshold: float = STOP_THRESHOLD, window: int = STOP_WINDOW, measure: str = STOP_MEASURE,
    metric: str = "object_recall",
) -> list[dict]:
    """Where the stopping rule would have stopped each (strategy, seed) run: the labelled count at
    the round it fires (None: it never fires), the tiles that saves against the last round, and
    ``metric`` given up (the last round's minus the stopping round's; negative: stopping was better)."""
    out = []
    for strategy, seed in sorted({(r["strategy"], r["seed"]) for r in rows}):
        run = sorted((r for r in rows if r["strategy"] == strategy and r["seed"] == seed), key=lambda r: r["round"])
        at = stop_round([r.get(f"stop_{measure}") for r in run], threshold, window)
        last = run[-1]
        stopped = run[at] if at is not None else None
        out.append({"strategy": strategy, "seed": seed, "threshold": threshold, "window": window, "measure": measure,
                    "stopped_at": stopped["labelled"] if stopped else None,
                    "tiles_saved": last["labelled"] - stopped["labelled"] if stopped else 0,
                    f"{metric}_given_up": last[metric] - stopped[metric] if stopped else 0.0})
    return out


def report_of(config: SimulationConfig, rows: list[dict], check: SplitCheck | None = None) -> dict:
    """The whole run: its config, how its split leaks, every round, the means over seeds, the
    paired comparison and where the stopping rule would have stopped."""
    return {"config": {**asdict(config), "dataset": str(config.dataset)},
            "split": asdict(check) if check else None, "rounds": rows, "summary": summarise(rows),
            "paired_vs_random": paired_against(rows),
            "stopping": stopping_summary(rows, config.stop_threshold, config.stop_window)}


def write_json(path: str | Path, config: SimulationConfig, rows: list[dict], check: SplitCheck | None = None) -> None:
    Path(path).write_text(json.dumps(report_of(config, rows, check), indent=2))
