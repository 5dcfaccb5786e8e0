"""The Ray engine of ``al-loop embed``: the same :class:`TileEncoder`, as a Ray Data actor pool.

Why Ray Data: an actor loads the model once and keeps it, ``num_gpus`` per actor puts one
encoder on each GPU, and batches stream through with backpressure and task retries. The
tiles are read inside the actors, not by a Ray read task: a read task next to actors that
take every CPU waits forever (ray-project/ray#44687). Configuration travels as constructor
arguments, because the workers of a running cluster do not see this process's environment.
Ray is an optional extra (``pip install -e ".[ray]"``); nothing imports this module unless
``--engine ray`` is asked for.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm import tqdm

from al_loop.embeddings.engine import ROW_FIELDS, EmbedConfig, EmbedRun, TileEncoder, finish_phases
from al_loop.errors import InstallError, UsageError


class EncoderActor(TileEncoder):
    """A TileEncoder that builds itself from plain values inside a Ray worker."""

    def __init__(self, config: EmbedConfig):
        super().__init__(*config.build())


def import_ray():
    try:
        import ray
    except ImportError:
        raise InstallError('embedding on Ray needs Ray: pip install -e ".[ray]" (or pip install "ray[data]")') from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> float:
    """Start a local Ray or attach to a cluster (``auto``, ``ray://host:10001``); seconds taken."""
    ray = import_ray()
    started = time.perf_counter()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            # "local": a new Ray here, never one that RAY_ADDRESS or a running cluster would pick.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - started


def run_ray(
    sources: Sequence[str],
    config: EmbedConfig,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 8,
    progress: bool = True,
) -> EmbedRun:
    """Every tile through a pool of ``workers`` EncoderActors on a Ray cluster."""
    if workers < 1 or batch_size < 1:
        raise UsageError("workers and the batch size must each be at least 1", param="workers")
    ray = import_ray()
    run, started = EmbedRun("ray"), time.perf_counter()
    run.phases["start"] = connect(address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts tiles, not blocks
    dataset = ray.data.from_items([{"source": s} for s in sources], override_num_blocks=_blocks(len(sources), batch_size))
    encoded = dataset.map_batches(
        EncoderActor, fn_constructor_args=(config,), batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
    )
    with tqdm(total=len(sources), desc=f"embed on Ray ({workers} workers)", unit="tile", disable=not progress) as bar:
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            rows = [dict(zip(ROW_FIELDS, values, strict=False)) for values in zip(*(batch[name].tolist() for name in ROW_FIELDS), strict=False)]
            if not run.rows:
                run.phases["first batch"] = time.perf_counter() - started
            run.rows += rows
            bar.update(len(rows))
            bar.set_postfix(run.counts, refresh=False)
    finish_phases(run, started)
    return run


def _blocks(tiles: int, batch_size: int) -> int:
    # Blocks of about one batch: the pool's workers share the work from the first block on.
    return max(1, -(-tiles // batch_size))
