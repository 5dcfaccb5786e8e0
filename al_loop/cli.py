"""The ``al-loop`` command: argument parsing and dispatch only; policy lives in the modules it calls.

Commands import what they need inside their function, so ``al-loop --help`` starts at once
(the models, the strategy registry and the metrics all pull torch). Every user-fixable error
is an :class:`~al_loop.errors.AlLoopError`; :data:`EXIT_CODES` turns it into an exit code.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from al_loop import __version__
from al_loop.errors import AlLoopError, UsageError

# (exception, exit code, message to stderr): the one place an exception becomes an exit code.
EXIT_CODES = (
    (AlLoopError, 2, "al-loop: error: {}"),
    (KeyboardInterrupt, 130, "al-loop: interrupted; finished work is kept, run the same command to resume"),
)

# Choices the parser needs before any command runs. Their registries import torch, so they are
# spelt here once; tests/test_cli.py keeps them equal to al_loop.models.sam.MODEL_TYPES,
# al_loop.models.weights.CHECKPOINTS, al_loop.models.encoders.PRECISIONS and
# al_loop.query.strategies.STRATEGIES (less cold_start, round 0's own).
MODELS = ("vit_b", "vit_l", "vit_h", "tiny")
OFFICIAL_MODELS = tuple(m for m in MODELS if m != "tiny")
PRECISIONS = ("fp32", "bf16", "int8")
STRATEGIES = ("entropy", "margin", "least_confident", "bald", "rare_types", "random", "diverse", "density")
DEFAULT_STRATEGY = "entropy"

MODEL_HELP = (
    "SAM model: vit_b, vit_l, vit_h (official checkpoints; see `al-loop weights download`), "
    "or tiny (SAM's architecture at toy size with seeded random weights: for tests and CI only, "
    "its masks are meaningless)"
)
ENCODER_HELP = (
    "image encoder for the domain decoder: sam-vit_b, sam-vit_l, sam-vit_h (frozen SAM embeddings), "
    "filterbank (classical multi-scale features, no weights needed: the no-weights baseline), "
    "or sam-tiny (tests only)"
)
RUNTIMES = ("torch", "openvino", "onnx")  # al_loop.models.runtimes.RUNTIMES (kept torch-free here; tested equal)
RUNTIME_HELP = ("engine for SAM's image encoder: torch, openvino or onnx (the last two are extras; fp32 on them "
                "gives torch fp32's embeddings; default $AL_LOOP_RUNTIME, else openvino for fp32 on a CPU-only machine "
                "where it is installed, else torch)")
CACHE_HELP = "embedding cache: a folder or a URL such as s3://bucket/prefix (default $AL_LOOP_CACHE_DIR or ~/.cache/al-loop/embeddings)"
TOKEN_HELP = "Label Studio API token (default $LABEL_STUDIO_API_KEY)"

DEFAULT_WORKSPACE = Path(os.environ.get("AL_LOOP_WORKSPACE") or "al-workspace")
WORKSPACE_HELP = "workspace directory (default $AL_LOOP_WORKSPACE or ./al-workspace)"


def _steps(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _workspace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE, help=WORKSPACE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="al-loop",
        description="Active learning for mapping Martian pits and skylights with SAM and Label Studio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_weights, _add_embed, _add_sample, _add_tile, _add_train, _add_map, _add_simulate, _add_init,
                _add_next_batch, _add_status, _add_curve, _add_demo, _add_serve_backend):
        add(sub)
    return parser


def _add_weights(sub) -> None:
    weights = sub.add_parser("weights", help="manage SAM checkpoints")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    dl = wsub.add_parser("download", help="download an official SAM checkpoint and verify its md5")
    dl.add_argument("model", choices=OFFICIAL_MODELS)
    dl.add_argument("--dir", type=Path, help="where to keep it (default $AL_LOOP_WEIGHTS_DIR or ~/.cache/al-loop/weights)")
    dl.add_argument("--url", help="base URL of a mirror holding the official file names")
    wsub.add_parser("list", help="show which checkpoints are present")


def _add_embed(sub) -> None:
    embed = sub.add_parser(
        "embed", help="encode tiles into the embedding cache (resumable; here or on a Ray cluster)",
        description="Every tile is read, hashed, skipped when the cache holds it, else encoded and stored "
        "whole. TILES are folders (searched recursively), tiling manifests (manifest.json or its folder), "
        "list files (.txt, one path or URL a line), files, or URLs (s3://...). A bad tile is reported and the "
        "run goes on; a run cut short and started again encodes only the rest.",
    )
    embed.add_argument("tiles", nargs="+", help="folders, manifests, .txt lists, files or URLs of tiles")
    embed.add_argument("--encoder", default="filterbank", help=ENCODER_HELP)
    embed.add_argument("--checkpoint", help="SAM checkpoint file (offline use)")
    embed.add_argument("--precision", default="fp32", choices=PRECISIONS, help="SAM encoder precision on CPU")
    embed.add_argument("--cache-dir", help=CACHE_HELP)
    embed.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)
    embed.add_argument("--engine", default="local", choices=["local", "ray"],
                       help='where to encode: this process (default) or a Ray cluster (pip install -e ".[ray]")')
    embed.add_argument("--address", help="Ray cluster to attach to (auto, ray://host:10001); default: start one here")
    embed.add_argument("--workers", type=int, default=1, help="Ray: encoder actors, each loads the model once (default 1)")
    embed.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per actor (default 0: CPU)")
    embed.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per actor (default 1)")
    embed.add_argument("--batch-size", type=int, default=8, help="tiles per batch handed to a worker (default 8)")
    embed.add_argument("--report", type=Path, help="write the run report (one row per tile, phases) as JSON here")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_tile(sub) -> None:
    tile = sub.add_parser(
        "tile", help="cut map-projected products (HiRISE .LBL/.JP2, GeoTIFF, PDS, ISIS) into 8-bit tiles with a manifest",
        description="Reads each product through GDAL (a HiRISE .LBL opens the JP2 it names), converts it once to a "
        "tiled GeoTIFF by column strips when windows would be slow to read, applies one contrast stretch per product, "
        "and writes PNG tiles (mostly-null tiles skipped) under OUT/<product id>/, a manifest.json tying every tile to "
        "its product (window, affine, CRS, stretch, content hash) and tiles.gpkg with the tile footprints. A product "
        "that cannot be read is reported; the others still complete.",
    )
    tile.add_argument("products", type=Path, nargs="+", metavar="PRODUCT", help="product files (.LBL, .tif, .IMG, .cub, ...)")
    tile.add_argument("--out", type=Path, required=True, help="folder for the tiles and the manifest (import it with `al-loop init --images`)")
    tile.add_argument("--size", type=int, default=1024, help="tile side in pixels (default 1024)")
    tile.add_argument("--overlap", type=int, default=256, help="overlap between neighbouring tiles in pixels (default 256)")
    tile.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train", help="train a decoder from an existing labelled set (YOLO boxes), without Label Studio",
        description="Embeds every tile of the dataset's splits (cached), turns each expert box into a mask with the "
        "oracle (sam: SAM box prompts, needs weights; box: the ellipse inscribed in the box), trains the domain "
        "decoder and saves it for `al-loop map --decoder`.",
    )
    train.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, <split>/images and <split>/labels")
    train.add_argument("--out", type=Path, required=True, help="decoder file to write (.pt)")
    train.add_argument("--encoder", default="filterbank", help=ENCODER_HELP)
    train.add_argument("--oracle", default="box", choices=["sam", "box"], help="how boxes become masks (default box)")
    train.add_argument("--splits", default="train", help="comma-separated splits to train on (default train)")
    train.add_argument("--model", default="vit_b", choices=MODELS, help=MODEL_HELP)
    train.add_argument("--checkpoint", help="SAM checkpoint file (offline use)")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--cache-dir", help=CACHE_HELP)
    train.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_map(sub) -> None:
    mapping = sub.add_parser(
        "map", help="map the pits of whole products with a trained decoder: GeoPackage (+ GeoJSON, probabilities, quicklook)",
        description="Runs the decoder over every tile of each product (tiled with `al-loop tile` into --tiles, or tiled "
        "there now), blends the probabilities across tile overlaps, and writes one polygon per pit with its area, "
        "perimeter, equivalent diameter, centroid (planetocentric lat, east lon, native x/y), confidence and review "
        "status: a layer per product in its own CRS, one layer of all pits in Mars lon/lat (IAU_2015:49900) and the "
        "tile footprints, in one GeoPackage. A product that cannot be mapped is reported; the others still complete.",
    )
    mapping.add_argument("products", type=Path, nargs="+", metavar="PRODUCT", help="product files (.LBL, .tif, ...)")
    source = mapping.add_mutually_exclusive_group(required=True)
    source.add_argument("--workspace", type=Path, help="an al-loop workspace: its latest decoder, and its tasks for review status")
    source.add_argument("--decoder", type=Path, help="a decoder file (`al-loop train --out`, or a workspace round's .pt)")
    mapping.add_argument("--out", type=Path, required=True, help="the GeoPackage to write (pits.gpkg)")
    mapping.add_argument("--token", help="Label Studio API token (default $LABEL_STUDIO_API_KEY): with --workspace, the "
                         "expert's submitted masks replace the decoder's on their tiles")
    mapping.add_argument("--tiles", type=Path, help="the tile folder of `al-loop tile` (default: <out>-tiles beside --out)")
    mapping.add_argument("--geojson", type=Path, help="also write every pit as GeoJSON in Mars lon/lat")
    mapping.add_argument("--probabilities", type=Path, help="folder for a uint8 probability GeoTIFF per product")
    mapping.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNG per product")
    mapping.add_argument("--size", type=int, default=1024, help="tile side for products tiled now (default 1024)")
    mapping.add_argument("--overlap", type=int, default=256, help="tile overlap for products tiled now (default 256)")
    mapping.add_argument("--cache-dir", help=CACHE_HELP)
    mapping.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)
    mapping.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_sample(sub) -> None:
    sample = sub.add_parser(
        "sample",
        help="generate Mars-like sample tiles with pits and skylights (YOLO format, with the expert boxes)",
    )
    sample.add_argument("directory", type=Path, help="where to write data.yaml, train/ and valid/")
    sample.add_argument("--train", type=int, default=40, help="tiles in train/ (default 40)")
    sample.add_argument("--valid", type=int, default=10, help="tiles in valid/ (default 10)")
    sample.add_argument("--size", type=int, default=512, help="tile side in pixels (default 512)")
    sample.add_argument("--seed", type=int, default=0)


def _add_simulate(sub) -> None:
    sim = sub.add_parser(
        "simulate",
        help="replay the paper's experiment on a YOLO-format dataset, with an oracle as the expert",
        description="Round 1 labels the first step's count of random tiles; each later round adds tiles "
        "chosen by the strategy, retrains the domain decoder, and evaluates on the valid split.",
    )
    sim.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, train/ and valid/ with images/ and labels/")
    sim.add_argument("--steps", type=_steps, default=[5, 10, 15, 20, 25, 50], help="labelled-tile counts per round (default 5,10,15,20,25,50)")
    sim.add_argument("--strategy", default=DEFAULT_STRATEGY, help="one or more comma-separated: " + ", ".join(STRATEGIES))
    sim.add_argument("--encoder", default="filterbank", help=ENCODER_HELP)
    sim.add_argument("--oracle", default="sam", choices=["sam", "box"], help="sam: SAM box prompts (needs weights); box: ellipse inscribed in each box")
    sim.add_argument("--model", default="vit_b", choices=MODELS, help=MODEL_HELP)
    sim.add_argument("--checkpoint", help="SAM checkpoint file (offline use)")
    sim.add_argument("--seeds", type=int, default=3)
    sim.add_argument("--epochs", type=int, default=100)
    sim.add_argument("--classes", action="store_true",
                     help="learn the boxes' classes as pit types (data.yaml's names; the simulated expert types each "
                     "pit right) and report per-type metrics")
    sim.add_argument("--json", type=Path, help="write every metric of every round and seed here")
    sim.add_argument("--png", type=Path, help="write the learning curve here")
    sim.add_argument("--cache-dir", help=CACHE_HELP)
    sim.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)
    sim.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_init(sub) -> None:
    init = sub.add_parser(
        "init",
        help="bind a workspace to a Label Studio project and import the tiles",
        description="Creates (or, with --project, binds to) a Label Studio project with label_config/skylights.xml, "
        "imports the tiles (a local-files storage for a directory: nothing is copied; the directory must lie under "
        "Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), connects the ML backend when given, and sets aside "
        "a validation set that is labelled first and never trained on.",
    )
    init.add_argument("--label-studio", required=True, metavar="URL", help="Label Studio address, e.g. http://localhost:8080")
    init.add_argument("--token", help=TOKEN_HELP)
    source = init.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="directory of tiles to import through a local-files storage")
    source.add_argument("--tasks", type=Path, help="JSON file of Label Studio tasks to import")
    init.add_argument("--project", type=int, help="bind to this existing project instead of creating one")
    init.add_argument("--title", default="Mars pits (al-loop)")
    init.add_argument("--backend-url", help="URL of `al-loop serve-backend`, connected to the project")
    init.add_argument("--encoder", default="filterbank", help=ENCODER_HELP)
    init.add_argument("--model", default="vit_b", choices=MODELS, help=MODEL_HELP)
    init.add_argument("--checkpoint", help="SAM checkpoint file (offline use)")
    init.add_argument("--val-size", type=int, help="validation tasks (default 10%% of the tiles, at least 5)")
    config = init.add_mutually_exclusive_group()
    config.add_argument("--label-config", type=Path, metavar="FILE",
                        help="the project's labelling config (XML); default label_config/skylights.xml, one type "
                        "'pit'; label_config/pit-types.xml has the HiRISE set's five types")
    config.add_argument("--types", metavar="DATA_YAML|NAMES",
                        help="pit types to label and learn: a YOLO data.yaml (its names, and 'descriptions' shown "
                        "to the expert) or comma-separated names; makes a typed labelling config")
    init.add_argument("--labels", type=Path, metavar="DIR",
                      help="import an existing catalogue: YOLO label files STEM.txt for the tiles STEM.*, as typed "
                      "box annotations (class k is the (k+1)-th type); the first next-batch then trains at once")
    _workspace_flag(init)


def _add_next_batch(sub) -> None:
    nb = sub.add_parser(
        "next-batch",
        help="train on the answers so far, evaluate, and push the next tiles to label",
        description="Pulls the submitted annotations from Label Studio, embeds every tile (cached), trains the domain "
        "decoder on the labelled tiles (never the validation ones), evaluates it on the labelled validation tiles, "
        "ranks the unlabelled tiles with the strategy and pushes the top --size ones: the decoder's masks as "
        "predictions (model_version round-N) and a Data Manager tab 'Round N'. Round 0 pushes the validation tiles "
        "and --size tiles picked for variety. While the last batch is not fully answered it says so and pushes "
        "nothing. Killed at any step, running it again finishes the round.",
    )
    nb.add_argument("--size", type=int, default=5, help="tiles to push (default 5)")
    nb.add_argument("--strategy", default=DEFAULT_STRATEGY,
                    help=", ".join(f"{s} (default)" if s == DEFAULT_STRATEGY else s for s in STRATEGIES))
    nb.add_argument("--epochs", type=int, default=100, help="decoder training epochs (default 100)")
    nb.add_argument("--force", action="store_true", help="push a new batch even though the last one is not fully answered")
    nb.add_argument("--accept-deleted", action="store_true", help="drop tasks deleted in Label Studio from the loop instead of stopping")
    nb.add_argument("--token", help=TOKEN_HELP)
    nb.add_argument("--cache-dir", help=CACHE_HELP)
    nb.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)
    _workspace_flag(nb)
    nb.add_argument("--json", action="store_true", help="print the round as JSON (timings per step included)")
    nb.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="rounds, task counts, tasks still awaited and the last metrics of a workspace")
    _workspace_flag(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")


def _add_curve(sub) -> None:
    curve = sub.add_parser("curve", help="the learning curve across rounds (mIoU, micro F1, accuracy, precision, recall)")
    _workspace_flag(curve)
    curve.add_argument("--png", type=Path, help="draw it to this PNG file")
    curve.add_argument("--json", action="store_true", help="print the rows as JSON")


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole loop on this machine: a local Label Studio, the ML backend, sample tiles, a simulated expert",
        description="Starts a private Label Studio (SQLite, its own data dir) and the ML backend on loopback, writes "
        "generated Mars-like tiles with pits and skylights (or takes --images), runs `init` and --rounds rounds of "
        "`next-batch` while a simulated expert answers each batch through the Label Studio API, then prints the "
        "learning curve and the address, user and password to open Label Studio with. The last round's batch is "
        "left unanswered, pre-annotated, for you to look at. Without SAM weights it runs the tiny SAM (random "
        "weights: its masks are meaningless) and the filterbank encoder, and says so.",
    )
    demo.add_argument("--rounds", type=int, default=3, help="training rounds after round 0 (default 3)")
    demo.add_argument("--size", type=int, default=5, help="tasks pushed per round (default 5)")
    demo.add_argument("--images", type=Path, help="your tiles instead of generated ones (a YOLO dataset folder lets "
                      "the simulated expert answer from its boxes; a plain folder stops after round 0 for you to label)")
    demo.add_argument("--model", choices=MODELS,
                      help="SAM for the backend's box prompts (default vit_b when its weights are present, else tiny)")
    demo.add_argument("--checkpoint", help="SAM checkpoint file")
    demo.add_argument("--encoder", help=ENCODER_HELP + " (default sam-<model> with real weights, else filterbank)")
    demo.add_argument("--epochs", type=int, default=100)
    demo.add_argument("--port", type=int, default=8080, help="Label Studio's port (default 8080)")
    demo.add_argument("--workspace", type=Path, default=Path("al-demo"),
                      help="demo folder: Label Studio data, tiles, workspace, embeddings (default ./al-demo; replaced by the next demo)")
    demo.add_argument("--keep-running", action="store_true", help="keep Label Studio and the backend up until Ctrl-C")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_serve_backend(sub) -> None:
    serve = sub.add_parser(
        "serve-backend",
        help="run the Label Studio ML backend (SAM masks from box/point prompts, decoder pre-annotations)",
        description="Serves Label Studio's ML backend protocol under gunicorn. Every flag also reads an "
        "environment variable (in brackets) so docker can configure it. Connect it in Label Studio under "
        "Project > Settings > Model, or with `al-loop init --backend-url`. Request limits (body size, regions, "
        "image pixels, download and request deadlines) are set by AL_LOOP_* variables: see the README's "
        "'Backend limits' table.",
    )
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1) [AL_LOOP_BACKEND_HOST]")
    serve.add_argument("--port", type=int, help="port (default 9090) [AL_LOOP_BACKEND_PORT]")
    serve.add_argument("--model", choices=MODELS, help=MODEL_HELP + " (default vit_b) [AL_LOOP_MODEL]")
    serve.add_argument("--checkpoint", help="SAM checkpoint file (offline use) [AL_LOOP_CHECKPOINT]")
    serve.add_argument("--precision", choices=PRECISIONS, help="SAM encoder precision for new tiles (default fp32) [AL_LOOP_PRECISION]")
    serve.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP + " [AL_LOOP_RUNTIME]")
    serve.add_argument("--cache-dir", help="embedding cache shared with al-loop, a folder or s3://bucket/prefix (default ~/.cache/al-loop/embeddings) [AL_LOOP_CACHE_DIR]")
    serve.add_argument("--workspace", help="al-loop workspace whose trained decoders pre-annotate tasks (default ./al-workspace) [AL_LOOP_WORKSPACE]")
    serve.add_argument("--encoder", help="encoder START_TRAINING trains the decoder on (default sam-<model>) [AL_LOOP_ENCODER]")
    serve.add_argument("--local-root", help="folder that local paths and /data/local-files URLs may be read from [LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT]")
    serve.add_argument("--threads", type=int, help="request threads (default 8) [AL_LOOP_BACKEND_THREADS]")
    serve.add_argument("--label-studio-url", help="Label Studio address, if /setup has not sent it [LABEL_STUDIO_URL]; the token is read from LABEL_STUDIO_API_KEY only")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="[AL_LOOP_LOG_LEVEL]")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "weights": cmd_weights,
        "embed": cmd_embed,
        "sample": cmd_sample,
        "tile": cmd_tile,
        "train": cmd_train,
        "map": cmd_map,
        "simulate": cmd_simulate,
        "serve-backend": cmd_serve_backend,
        "init": cmd_init,
        "status": cmd_status,
        "next-batch": cmd_next_batch,
        "curve": cmd_curve,
        "demo": cmd_demo,
    }[args.command]
    if getattr(args, "runtime", None) and args.command != "serve-backend":
        # One place: every encoder built below reads it (al_loop.models.runtimes.default_runtime).
        os.environ["AL_LOOP_RUNTIME"] = args.runtime
    try:
        return handler(args) or 0
    except tuple(kind for kind, _, _ in EXIT_CODES) as exc:
        code, message = next((code, message) for kind, code, message in EXIT_CODES if isinstance(exc, kind))
        print(message.format(exc), file=sys.stderr)
        return code


def cmd_weights(args) -> int:
    from al_loop.models import weights

    if args.weights_command == "download":
        path = weights.download(args.model, args.dir, args.url)
        print(f"{args.model}: {path} (md5 verified)")
        return 0
    for name, ck in weights.CHECKPOINTS.items():
        path = weights.weights_dir() / ck.filename
        print(f"{name}: {'present' if path.is_file() else 'missing'}  {path}")
    return 0


def cmd_embed(args) -> int:
    import json

    from al_loop.embeddings.engine import EmbedConfig, run_local, tile_sources
    from al_loop.models.runtimes import default_runtime

    sources = tile_sources(args.tiles)
    if not sources:
        raise UsageError(f"{' '.join(args.tiles)} holds no PNG/JPEG/TIFF tiles")
    config = EmbedConfig(args.encoder, args.checkpoint, args.precision, args.cache_dir, args.runtime or default_runtime(args.precision))
    if args.engine == "ray":
        from al_loop.embeddings.ray_engine import run_ray

        run = run_ray(sources, config, args.address, args.workers, args.gpus_per_worker, args.cpus_per_worker,
                      args.batch_size, progress=not args.quiet)
    else:
        run = run_local(sources, config, args.batch_size, progress=not args.quiet)
    for row in run.failures:
        print(f"failed: {row['reason']}", file=sys.stderr)
    print(run.summary())
    if args.report:
        args.report.write_text(json.dumps({"engine": run.engine, "phases": run.phases, "tiles": run.rows}, indent=1))
    return 1 if run.failures and len(run.failures) == len(run.rows) else 0


def cmd_tile(args) -> int:
    from al_loop.data.tiling import tile_products

    report = tile_products(args.products, args.out, args.size, args.overlap, progress=not args.quiet)
    _print_problems(report.warnings, report.failures)
    for pid, entry in report.entries.items():
        print(f"{pid}: {len(entry.tiles)} tiles of {entry.tile_size} px (overlap {entry.overlap}) in {args.out / pid}, "
              f"{entry.skipped_null} mostly-null tiles skipped")
    if report.manifest:
        print(f"manifest: {report.manifest}; footprints: {args.out / 'tiles.gpkg'}")
    return 1 if report.failures else 0


def _print_problems(warnings: list[str], failures: list) -> None:
    """A run over several products: what went wrong with some, while the others completed."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for failure in failures:
        print(f"al-loop: error: {failure}", file=sys.stderr)


def cmd_train(args) -> int:
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.training.from_dataset import DatasetTraining, train_from_dataset

    job = DatasetTraining(args.dataset, args.encoder, args.oracle, tuple(s for s in args.splits.split(",") if s),
                          args.model, args.checkpoint, epochs=args.epochs)
    report = train_from_dataset(job, args.out, EmbeddingCache(args.cache_dir), progress=not args.quiet)
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    print(f"decoder trained on {report.tiles} tiles ({report.boxes} expert boxes, {args.oracle} oracle, "
          f"encoder {report.encoder_id}) written to {report.path}")
    return 0


def cmd_map(args) -> int:
    from al_loop.mapping.run import MapJob, map_products

    tiles = args.tiles or args.out.with_name(f"{args.out.stem}-tiles")
    token = (args.token or os.environ.get("LABEL_STUDIO_API_KEY")) if args.workspace else None
    job = MapJob(args.products, args.out, tiles, args.decoder, args.workspace, args.geojson, args.probabilities,
                 not args.no_quicklook, args.size, args.overlap, args.cache_dir, not args.quiet, token)
    report = map_products(job)
    _print_problems(report.warnings, report.failures)
    for pid, count in report.pits.items():
        print(f"{pid}: {count} pits")
    for path in report.outputs:
        print(f"wrote {path}")
    return 1 if report.failures else 0


def cmd_sample(args) -> int:
    from al_loop.data.synthetic import write_yolo_dataset

    if min(args.train, args.valid) < 1 or args.size < 64:
        raise UsageError("--train and --valid must be at least 1 and --size at least 64")
    root = write_yolo_dataset(args.directory, args.train, args.valid, args.seed, args.size)
    print(f"{args.train} train + {args.valid} valid generated tiles with their boxes in {root}")
    return 0


def cmd_simulate(args) -> int:
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.evaluation.curves import plot_curves, plot_type_curves, types_png
    from al_loop.evaluation.metrics import HEADLINE, SIMULATE_FIGURE
    from al_loop.sim.simulate import SimulationConfig, run_simulation, write_json

    config = SimulationConfig(
        dataset=args.dataset,
        steps=args.steps,
        strategies=[s.strip() for s in args.strategy.split(",") if s.strip()],
        encoder=args.encoder,
        oracle=args.oracle,
        model=args.model,
        checkpoint=args.checkpoint,
        seeds=args.seeds,
        epochs=args.epochs,
        classes=args.classes,
    )
    print(f"{'strategy':<16}{'seed':>5}{'round':>6}{'tiles':>6}" + "".join(f"{m:>18}" for m in HEADLINE))

    def show(row: dict) -> None:
        from tqdm import tqdm

        tqdm.write(
            f"{row['strategy']:<16}{row['seed']:>5}{row['round']:>6}{row['labelled']:>6}"
            + "".join(f"{row[m]:>18.3f}" for m in HEADLINE)
        )

    rows = run_simulation(config, EmbeddingCache(args.cache_dir), progress=not args.quiet, on_round=show)
    summary = _print_simulation_summary(rows, config.strategies)
    if args.json:
        write_json(args.json, config, rows)
        print(f"rounds written to {args.json}")
    if args.png:
        title = f"{args.dataset.name}: {config.encoder} encoder, {config.oracle} oracle, {config.seeds} seeds"
        plot_curves(summary, SIMULATE_FIGURE, args.png, title)
        first = [r for r in summary if r["strategy"] == config.strategies[0]]
        typed = plot_type_curves(first, types_png(args.png), f"{title}; per type, {config.strategies[0]}")
        print(f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))
    return 0


def _print_simulation_summary(rows: list[dict], strategies: list[str]) -> list[dict]:
    """The mean over seeds per strategy and round, and each strategy against random; returns the means."""
    from al_loop.evaluation.metrics import HEADLINE
    from al_loop.sim.simulate import paired_against, summarise

    summary = summarise(rows)
    print("\nmean over seeds (std)")
    print(f"{'strategy':<16}{'tiles':>6}" + "".join(f"{m:>22}" for m in HEADLINE))
    for s in summary:
        print(f"{s['strategy']:<16}{s['labelled']:>6}" + "".join(f"{s[m]:>14.3f} ({s[m + '_std']:.3f})" for m in HEADLINE))
    _print_type_table(summary)
    paired = paired_against(rows) if "random" in strategies else []
    if paired:
        print("\nobject recall minus random's, seed by seed (same first-round tiles)")
        print(f"{'strategy':<16}{'tiles':>6}{'mean':>9}{'s.e.':>8}{'ahead':>7}{'behind':>8}")
        for d in paired:
            print(f"{d['strategy']:<16}{d['labelled']:>6}{d['mean']:>+9.3f}{d['se']:>8.3f}{d['wins']:>7}{d['losses']:>8}")
    return summary


def cmd_init(args) -> int:
    from al_loop.loop.init import init_workspace
    from al_loop.loop.workspace import Workspace

    report = init_workspace(
        Workspace(args.workspace), args.label_studio, _token(args), images=args.images, tasks_file=args.tasks,
        project=args.project, title=args.title, backend_url=args.backend_url, encoder=args.encoder,
        model=args.model, checkpoint=args.checkpoint, val_size=args.val_size, label_config=_label_config(args),
        labels_dir=args.labels,
    )
    for reason in report.skipped_files:
        print(f"warning: {reason}", file=sys.stderr)
    print(f"workspace {args.workspace} bound to project {report.project} at {args.label_studio}: {report.tasks} tasks, "
          f"{len(report.validation)} set aside for validation (label them first): {report.validation}")
    if report.ml_backend:
        print(f"ML backend {args.backend_url} connected (id {report.ml_backend})")
    if report.imported is not None:
        imported = report.imported
        print(f"imported {imported.annotations} annotation(s) from {args.labels}: "
              + ", ".join(f"{n} {name}" for name, n in imported.boxes.items()))
        if imported.unmatched:
            print(f"warning: {len(imported.unmatched)} label file(s) match no task's image, e.g. "
                  f"{imported.unmatched[0]}.txt", file=sys.stderr)
        print("next: `al-loop next-batch` trains on them at once (round 1)")
        return 0
    print("next: label the validation tasks in Label Studio, then run `al-loop next-batch`")
    return 0


def _label_config(args) -> str | None:
    """The XML of ``--label-config`` or of a typed config made from ``--types``; None: the default."""
    from al_loop.data.yolo import class_descriptions, class_names
    from al_loop.studio.label_config import typed_label_config

    if args.label_config is not None:
        try:
            return args.label_config.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--label-config {args.label_config}: {exc}") from None
    if args.types is None:
        return None
    spec = Path(args.types)
    if spec.suffix in (".yaml", ".yml") or spec.is_dir():
        return typed_label_config(class_names(spec), class_descriptions(spec))
    return typed_label_config([n.strip() for n in args.types.split(",")])


def _token(args) -> str:
    token = args.token or os.environ.get("LABEL_STUDIO_API_KEY")
    if not token:
        raise UsageError("no Label Studio token: pass --token or set LABEL_STUDIO_API_KEY (Account & Settings > Access Token)")
    return token


def cmd_next_batch(args) -> int:
    import json

    from al_loop.evaluation.metrics import TABLE
    from al_loop.loop.next_batch import next_batch
    from al_loop.loop.workspace import Workspace

    report = next_batch(
        Workspace(args.workspace), _token(args), size=args.size, strategy=args.strategy, epochs=args.epochs,
        force=args.force, accept_deleted=args.accept_deleted, cache_dir=args.cache_dir, progress=not args.quiet,
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(report), indent=2))
        return 0
    if report.joined:
        print(f"{len(report.joined)} task(s) new in Label Studio joined the pool: {report.joined}")
    if report.status == "waiting":
        print(f"round {report.round}: {len(report.awaited)} pushed task(s) still await an answer: {report.awaited}")
        print("label them in Label Studio (tab 'Round {0}'), or run with --force to push a new batch anyway".format(report.round))
        return 0
    resumed = " (finished an interrupted run)" if report.resumed else ""
    print(f"round {report.round}{resumed}: strategy {report.strategy}, decoder trained on {report.labelled} labelled tile(s)")
    if report.metrics:
        print("  " + "  ".join(f"{m} {report.metrics[m]:.3f}" for m in TABLE if m in report.metrics))
    if not report.chosen:
        print("nothing left to push: every task is labelled, skipped or was pushed before (the round is recorded)")
        return 0
    print(f"pushed {len(report.chosen)} task(s) to tab 'Round {report.round}'"
          + (f" with predictions {report.model_version}" if report.predictions else ""))
    print(f"  {'rank':>4}  {'task':>6}  score")
    for i, (task, score) in enumerate(report.chosen):
        print(f"  {i:>4}  {task:>6}  {'-' if score is None else f'{score:.4f}'}")
    return 0


def _print_curve(rows: list[dict]) -> None:
    from al_loop.evaluation.metrics import TABLE

    print(f"{'round':>5}{'labelled':>10}" + "".join(f"{m:>17}" for m in TABLE))
    for row in rows:
        print(f"{row['round']:>5}{row['labelled']:>10}" + "".join(f"{row.get(m, float('nan')):>17.3f}" for m in TABLE))
    _print_type_table([{**r, "strategy": f"round {r['round']}"} for r in rows])


def _print_type_table(rows: list[dict]) -> None:
    """Per-type object recall / precision and the typed totals, one line per row; nothing for binary rows."""
    from al_loop.evaluation.metrics import per_type_key, type_names_in

    names = type_names_in(rows[0]) if rows else []
    if not names:
        return
    print("\nper type: object recall / precision (a pit counts when found and typed right)")
    print(f"{'':<16}{'tiles':>6}" + "".join(f"{n:>16}" for n in names) + f"{'typed recall':>14}{'mistyped':>10}")
    for row in rows:
        cells = "".join(f"{row[per_type_key('object_recall', n)]:>8.2f} / {row[per_type_key('object_precision', n)]:<5.2f}"
                        for n in names)
        print(f"{row['strategy']:<16}{row['labelled']:>6}{cells}{row['typed_object_recall']:>14.3f}"
              f"{row['objects_mistyped']:>10.1f}")


def cmd_status(args) -> int:
    import json

    from al_loop.loop.workspace import Workspace

    workspace = Workspace(args.workspace)
    config = workspace.config()  # a WorkspaceError when there is none
    counts, rounds, awaited, curve = workspace.counts(), workspace.rounds(), workspace.awaited(), workspace.curve()
    last_metrics = {k: v for k, v in curve[-1].items() if k not in ("model_version", "strategy")} if curve else {}
    decoder_problem = _decoder_problem(workspace.root)
    report = {"project": config.project, "label_studio": config.label_studio_url, "counts": counts, "rounds": rounds,
              "awaited": awaited, "last_metrics": last_metrics, "decoder_problem": decoder_problem}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"project {config.project} at {config.label_studio_url}, encoder {config.encoder}")
    print(f"validation {counts['validation_labelled']}/{counts['validation']} labelled; pool: {counts['labelled']} labelled, "
          f"{counts['unlabelled']} unlabelled, {counts['skipped']} skipped, {counts['deleted']} deleted")
    print(f"rounds: {len(rounds)}" + ("" if not rounds else f" (last: round {rounds[-1]['round']}, {rounds[-1]['strategy']})"))
    if rounds and rounds[-1]["finished_at"] is None:
        print(f"round {rounds[-1]['round']} was interrupted while pushing: run `al-loop next-batch` to finish it")
    if awaited:
        print(f"awaited (as of the last next-batch): {len(awaited)} task(s) {awaited}")
    if decoder_problem:
        print(f"decoder: DAMAGED: {decoder_problem}; the backend pre-annotates nothing until then")
    if last_metrics:
        from al_loop.evaluation.metrics import TABLE  # imports torch: only when there is something to show

        print(f"last metrics (round {last_metrics['round']}, {last_metrics['labelled']} labelled tiles): "
              + "  ".join(f"{m} {last_metrics[m]:.3f}" for m in TABLE if m in last_metrics))
    latest = workspace.round_metrics(rounds[-1]["round"]) if rounds else {}
    objects = {k[len("labelled_objects["):-1]: v for k, v in latest.items() if k.startswith("labelled_objects[")}
    if objects:
        print(f"labelled pits per type (round {rounds[-1]['round']}'s training tiles): "
              + ", ".join(f"{name} {n:.0f}" for name, n in objects.items()))
    return 0


def _decoder_problem(workspace: Path) -> str | None:
    """What the backend would report as degraded about the workspace's decoder (None: fine or none yet)."""
    if not (workspace / "decoders").is_dir():
        return None  # nothing trained yet: no need to load torch
    from al_loop.training.store import DecoderStore

    return DecoderStore(workspace).problem()


def cmd_curve(args) -> int:
    import json

    from al_loop.loop.workspace import Workspace

    workspace = Workspace(args.workspace)
    config, rows = workspace.config(), workspace.curve()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_curve(rows)
        if not rows:
            print("no evaluated round yet: label the validation tiles and run `al-loop next-batch`")
    if args.png:
        from al_loop.evaluation.curves import plot_curves, plot_type_curves, types_png
        from al_loop.evaluation.metrics import FIGURE5

        title = f"project {config.project}: learning curve on {rows[0]['tiles'] if rows else 0:.0f} validation tiles"
        plot_curves([{**r, "strategy": f"project {config.project}"} for r in rows], FIGURE5, args.png, title)
        typed = plot_type_curves(rows, types_png(args.png), title.replace("learning curve", "per-type curve"))
        if not args.json:
            print(f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))
    return 0


def _demo_models(args) -> tuple[str, str | None, str, list[str]]:
    """Model, checkpoint, encoder, and what the choice means for the expert."""
    from al_loop.errors import WeightsError
    from al_loop.models.weights import resolve_checkpoint

    model, checkpoint, notes = args.model, args.checkpoint, []
    if model is None:
        try:
            checkpoint, model = str(resolve_checkpoint("vit_b", checkpoint)), "vit_b"
        except WeightsError:
            model = "tiny"
    if model != "tiny" and checkpoint is None:
        checkpoint = str(resolve_checkpoint(model))
    encoder = args.encoder or (f"sam-{model}" if model != "tiny" else "filterbank")
    if model == "tiny":
        notes.append("no SAM weights: the backend runs the tiny SAM with random weights, so the masks a box prompt "
                     "gives are meaningless shapes (the plumbing is real). `al-loop weights download vit_b` fixes that.")
    if encoder == "filterbank":
        notes.append("the domain decoder learns on the filterbank encoder (classical multi-scale features, no weights): "
                     "the no-weights baseline, weaker than SAM's embeddings")
    return model, checkpoint, encoder, notes


def cmd_demo(args) -> int:
    import signal

    from al_loop.errors import ServerError
    from al_loop.sim.demo import DemoOptions, run_demo

    if args.rounds < 1 or args.size < 1:
        raise UsageError("--rounds and --size must be at least 1")
    model, checkpoint, encoder, notes = _demo_models(args)
    for note in notes:
        print(f"note: {note}")
    options = DemoOptions(root=args.workspace, rounds=args.rounds, size=args.size, images=args.images, model=model,
                          checkpoint=checkpoint, encoder=encoder, port=args.port, epochs=args.epochs,
                          progress=not args.quiet)
    # Ctrl-C and SIGTERM (docker stop, kill) stop both servers; a shell that started us in the
    # background may have left SIGINT ignored, so both handlers are set here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run = run_demo(options, say=lambda line: print(line, flush=True))
    except ServerError as exc:
        raise ServerError(f"{exc}; is port {args.port} free? (--port picks another)") from None
    try:
        _show_demo(run)
        if args.keep_running:
            print("Label Studio and the ML backend keep running; Ctrl-C stops them", flush=True)
            while run.label_studio.process.running and run.backend.process.running:
                time.sleep(1)
            print("a server exited on its own; stopping the other", flush=True)
    except KeyboardInterrupt:
        print("\nstopping Label Studio and the ML backend ...", flush=True)
    finally:
        run.stop()
    print("stopped")
    return 0


def _show_demo(run) -> None:
    """The demo's learning curve (also drawn to curve.png) and where to look next."""
    from al_loop.evaluation.curves import plot_curves
    from al_loop.evaluation.metrics import FIGURE5

    rows = run.workspace.curve()
    print(f"\nlearning curve ({rows[0]['tiles']:.0f} validation tiles):" if rows else "\nno evaluated round yet")
    _print_curve(rows)
    png = run.workspace.root / "curve.png"
    if rows:
        plot_curves([{**r, "strategy": "demo"} for r in rows], FIGURE5, png, "al-loop demo: learning curve")
        print(f"curve drawn to {png}")
    last = run.reports[-1]
    view = f"{run.label_studio.url}/projects/{run.project}/data?tab={last.view_id}" if last.view_id else ""
    print(f"\nLabel Studio: {run.label_studio.url}  user {run.label_studio.username}  password {run.label_studio.password}")
    print(f"ML backend: {run.backend.url}  (API token for al-loop: LABEL_STUDIO_API_KEY={run.label_studio.token})")
    print(f"open the tab 'Round {last.round}' ({view}): its tasks carry the decoder's pre-annotations"
          + ("" if run.simulated else "; these tiles came without boxes: label them yourself, then run "
             f"`al-loop next-batch --workspace {run.workspace.root}` with that API token"))
    print(f"workspace: {run.workspace.root} (try `al-loop status --workspace {run.workspace.root}`)", flush=True)


def cmd_serve_backend(args) -> int:
    from ml_backend.server import serve
    from ml_backend.settings import BackendSettings

    from al_loop.models.sam import sam_id

    settings = BackendSettings.resolve(
        host=args.host, port=args.port, model=args.model, checkpoint=args.checkpoint, precision=args.precision,
        runtime=args.runtime,
        cache_dir=args.cache_dir, workspace=args.workspace, encoder=args.encoder, local_root=args.local_root,
        threads=args.threads, label_studio_url=args.label_studio_url, log_level=args.log_level,
    )
    sam_id(settings.model, settings.checkpoint)  # fail here, with the download command, not in the worker
    if settings.model == "tiny":
        print("al-loop: serving the tiny SAM (random weights): masks are meaningless; for tests and CI only", file=sys.stderr)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
