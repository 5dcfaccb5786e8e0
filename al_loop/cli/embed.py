"""``al-loop embed``: encode tiles into the embedding cache, here or on a Ray cluster."""
from __future__ import annotations

import sys
from pathlib import Path

from al_loop.cli.options import LOOP_SETTINGS, deprecated, quiet_flag, settings_flags, settings_of
from al_loop.errors import UsageError


def add_parser(sub) -> None:
    embed = sub.add_parser(
        "embed", help="encode tiles into the embedding cache (resumable; here or on a Ray cluster)",
        description="Every tile is read, hashed, skipped when the cache holds it, else encoded and stored "
        "whole. TILES are folders (searched recursively), tiling manifests (manifest.json or its folder), "
        "list files (.txt, one path or URL a line), files, or URLs (s3://...). A bad tile is reported and the "
        "run goes on; a run cut short and started again encodes only the rest. With --workspace, the "
        "workspace's encoder, precision and cache are used (the cache its loop and backend read).",
    )
    embed.add_argument("tiles", nargs="+", help="folders, manifests, .txt lists, files or URLs of tiles")
    settings_flags(embed, *LOOP_SETTINGS)
    embed.add_argument("--workspace", type=Path, help="take the encoder, precision, runtime and cache of this workspace "
                       "(default ./al-workspace when there is one, or $AL_LOOP_WORKSPACE): the cache its loop and "
                       "backend read")
    embed.add_argument("--engine", default="local", choices=["local", "ray"],
                       help='where to encode: this process (default) or a Ray cluster (pip install -e ".[ray]")')
    embed.add_argument("--address", help="Ray cluster to attach to (auto, ray://host:10001); default: start one here")
    embed.add_argument("--workers", type=int, default=1, help="Ray: encoder actors, each loads the model once (default 1)")
    embed.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per actor (default 0: CPU)")
    embed.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per actor (default 1)")
    embed.add_argument("--chunk-size", type=int, default=8, help="tiles per chunk handed to a worker (default 8)")
    deprecated(embed, "--batch-size", "--chunk-size", "chunk_size", type=int)
    embed.add_argument("--report", type=Path, help="write the run report (one row per tile, phases) as JSON here")
    quiet_flag(embed)


def run(args) -> int:
    import json

    from al_loop.embeddings.engine import EmbedConfig, run_local, tile_sources
    from al_loop.models.encoders import resolve_engine

    sources = tile_sources(args.tiles)
    if not sources:
        raise UsageError(f"{' '.join(args.tiles)} holds no PNG/JPEG/TIFF tiles")
    s = settings_of(args)
    # Resolved here, once: every Ray actor then runs the same engine and writes the same cache keys.
    engine = resolve_engine(s.encoder, s.checkpoint, s.precision, s.runtime)
    config = EmbedConfig(s.encoder, s.checkpoint, engine.precision, s.cache_location, engine.runtime)
    if args.engine == "ray":
        from al_loop.embeddings.ray_engine import run_ray

        result = run_ray(sources, config, args.address, args.workers, args.gpus_per_worker, args.cpus_per_worker,
                         args.chunk_size, progress=not args.quiet)
    else:
        result = run_local(sources, config, args.chunk_size, progress=not args.quiet)
    for row in result.failures:
        print(f"failed: {row['reason']}", file=sys.stderr)
    print(result.summary())
    if args.report:
        args.report.write_text(json.dumps({"engine": result.engine, "phases": result.phases, "tiles": result.rows},
                                          indent=1))
    return 1 if result.failures and len(result.failures) == len(result.rows) else 0
