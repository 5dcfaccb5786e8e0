"""The ``al-loop`` command: argument parsing and dispatch only; policy lives in the modules it calls.

Commands import what they need inside their function, so ``al-loop --help`` starts at once
(the models, the strategy registry and the metrics all pull torch). Every setting a flag
sets is resolved once by :func:`al_loop.settings.resolve` (flag, environment, workspace,
default) and handed down; nothing here writes ``os.environ``. Every user-fixable error is
an :class:`~al_loop.errors.AlLoopError`; :data:`EXIT_CODES` turns it into an exit code.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from al_loop import __version__, cli_results
from al_loop.errors import AlLoopError, UsageError
from al_loop.models.pits import THRESHOLD
from al_loop.settings import (
    KEPT,
    MODELS,
    NAMES,
    OFFICIAL_MODELS,
    ORACLES,
    STRATEGIES,
    Settings,
    flag_of,
    help_for,
    resolve,
    setting_fields,
)

# (exception, exit code, message to stderr): the one place an exception becomes an exit code.
EXIT_CODES = (
    (AlLoopError, 2, "al-loop: error: {}"),
    (KeyboardInterrupt, 130, "al-loop: interrupted; finished work is kept, run the same command to resume"),
)
# A setting whose flag is not --<name>.
LOOP_SETTINGS = ("encoder", "model", "checkpoint", "precision", "runtime", "cache_dir")


def _steps(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _settings_flags(parser: argparse.ArgumentParser, *names: str, **helps: str) -> None:
    """A flag per setting, its help, choices and type from :mod:`al_loop.settings`; not given = None,
    so the resolver can tell a flag from a default. ``helps`` adds a command's own words."""
    by_name = {f.name: f for f in setting_fields()}
    for name in names:
        meta = by_name[name].metadata
        extra = {"choices": meta["choices"]} if meta["choices"] else {}
        if meta["kind"] in (int, float):
            extra["type"] = meta["kind"]
        parser.add_argument(flag_of(name), dest=name, default=None,
                            help=(helps[name] + "; " if name in helps else "") + help_for(name), **extra)


class _Deprecated(argparse.Action):
    """An old spelling that still works for one release, with a word on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"al-loop: warning: {option_string} is deprecated and goes in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=f"deprecated spelling of {new}", **kwargs)


def _workspace_flag(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--workspace", type=Path, default=None, help=(help + "; " if help else "") + help_for("workspace"))


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="al-loop",
        description="Active learning for mapping Martian pits and skylights with SAM and Label Studio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_weights, _add_embed, _add_sample, cli_results.add_fetch, _add_tile, _add_train, _add_map, cli_results.add_measure, cli_results.add_compare, cli_results.add_export,
                _add_simulate, _add_init, _add_next_batch, _add_status, _add_curve, _add_config, _add_demo,
                _add_serve_backend):
        add(sub)
    return parser


def _add_weights(sub) -> None:
    weights = sub.add_parser("weights", help="manage SAM checkpoints", description="Download and list SAM checkpoints.")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION", help="download or list")
    dl = wsub.add_parser("download", help="download an official SAM checkpoint and verify its md5",
                         description="Download an official SAM checkpoint into the weights folder and verify its md5.")
    dl.add_argument("model", choices=OFFICIAL_MODELS, help="which SAM: vit_b, vit_l or vit_h, vit_t "
                    "(MobileSAM, 41 MB), or a SAM 2.1 encoder (sam2.1-hiera_t, 149 MB, ...; not hash-pinned)")
    dl.add_argument("--dir", type=Path, help="where to keep it (default $AL_LOOP_WEIGHTS_DIR or ~/.cache/al-loop/weights)")
    dl.add_argument("--url", help="base URL of a mirror holding the official file names")
    wsub.add_parser("list", help="show which checkpoints are present", description="Show which checkpoints are present.")
    prep = wsub.add_parser(
        "prepare", help="measure which engine and precision run a SAM fastest here, within the contract",
        description="Encode one fixed probe tile on every engine and precision installed (torch, OpenVINO, ONNX "
        "Runtime; fp32, bf16 where the CPU has it natively, int8), each in a child process (conversions included: "
        "no server process grows by them), compare each with torch fp32 (embedding cosine >= 0.9999 and box-mask "
        "IoU >= 0.98 keep the contract) and record the fastest that keeps it for this machine, these weights and "
        "these engine versions. Encoders with no runtime or precision named then run on it.")
    prep.add_argument("model", choices=MODELS, help="which SAM (tiny: random weights, for tests only)")
    prep.add_argument("--checkpoint", help="a checkpoint file instead of the model's file in the weights folder")
    prep.add_argument("--json", action="store_true", help="print the measurements as JSON")


def _add_embed(sub) -> None:
    embed = sub.add_parser(
        "embed", help="encode tiles into the embedding cache (resumable; here or on a Ray cluster)",
        description="Every tile is read, hashed, skipped when the cache holds it, else encoded and stored "
        "whole. TILES are folders (searched recursively), tiling manifests (manifest.json or its folder), "
        "list files (.txt, one path or URL a line), files, or URLs (s3://...). A bad tile is reported and the "
        "run goes on; a run cut short and started again encodes only the rest. With --workspace, the "
        "workspace's encoder, precision and cache are used (the cache its loop and backend read).",
    )
    embed.add_argument("tiles", nargs="+", help="folders, manifests, .txt lists, files or URLs of tiles")
    _settings_flags(embed, *LOOP_SETTINGS)
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
    _deprecated(embed, "--batch-size", "--chunk-size", "chunk_size", type=int)
    embed.add_argument("--report", type=Path, help="write the run report (one row per tile, phases) as JSON here")
    _quiet_flag(embed)


def _tile_size_flags(parser: argparse.ArgumentParser, what: str, size: int | None = 1024, overlap: int | None = 256,
                     default: str = "") -> None:
    parser.add_argument("--tile-size", type=int, default=size, help=f"tile side in pixels for {what} "
                        f"(default {default or size})")
    _deprecated(parser, "--size", "--tile-size", "tile_size", type=int)
    parser.add_argument("--overlap", type=int, default=overlap, help="overlap between neighbouring tiles in pixels for "
                        f"{what} (default {overlap if overlap is not None else 'a quarter of the tile side'})")


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
    tile.add_argument("--out", type=Path, required=True, help="folder to write the tiles and the manifest to (import it with `al-loop init --images`)")
    _tile_size_flags(tile, "the tiles")
    _quiet_flag(tile)


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train", help="train a decoder from an existing labelled set (YOLO boxes), without Label Studio",
        description="Embeds every tile of the dataset's splits (cached), turns each expert box into a mask with the "
        "oracle (box: the ellipse inscribed in the box; sam: SAM box prompts, needs weights), trains the domain "
        "decoder and saves it for `al-loop map --decoder`.",
    )
    train.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, <split>/images and <split>/labels")
    train.add_argument("--out", type=Path, required=True, help="decoder file to write (.pt)")
    train.add_argument("--oracle", default="box", choices=ORACLES, help="how boxes become masks: box (the inscribed "
                       "ellipse, no weights needed; default) or sam (SAM box prompts)")
    train.add_argument("--splits", default="train", help="comma-separated splits to train on (default train)")
    train.add_argument("--held-out", type=float, default=0.15, help="share of the tiles (whole groups of copies) "
                       "kept back to score the decoder on tiles it never saw (default 0.15; 0: none)")
    train.add_argument("--binary", action="store_true", help="learn one type, pit, even when data.yaml names "
                       "several (default: the decoder learns data.yaml's types, as next-batch does)")
    train.add_argument("--regroup", action="store_true", help="leave out training tiles that have a near-duplicate "
                       "in the splits not trained on, so those stay a fair test (their leakage is printed either way)")
    _settings_flags(train, *LOOP_SETTINGS, "epochs")
    _quiet_flag(train)


def _add_map(sub) -> None:
    mapping = sub.add_parser(
        "map", help="map the pits of whole products with a trained decoder: GeoPackage (+ GeoJSON, probabilities, quicklook)",
        description="Runs the decoder over every tile of each product (tiled with `al-loop tile` into --tiles, or tiled "
        "there now), blends the probabilities across tile overlaps, and writes one polygon per pit with its area, "
        "perimeter, equivalent diameter, centroid (planetocentric lat, east lon, native x/y), confidence and review "
        "status: a layer per product in its own CRS, one layer of all pits in Mars lon/lat (IAU_2015:49900) and the "
        "tile footprints, in one GeoPackage. With --workspace, the workspace's latest decoder, which is always one "
        "scored on the validation tiles. A product that cannot be mapped is reported; the others still complete.",
    )
    mapping.add_argument("products", type=Path, nargs="+", metavar="PRODUCT", help="product files (.LBL, .tif, ...)")
    source = mapping.add_mutually_exclusive_group(required=True)
    source.add_argument("--workspace", type=Path, help="an al-loop workspace: its latest (evaluated) decoder, and its "
                        "tasks for review status")
    source.add_argument("--decoder", type=Path, help="a decoder file (`al-loop train --out`, or a workspace round's .pt)")
    mapping.add_argument("--out", type=Path, required=True, help="the GeoPackage to write (pits.gpkg)")
    _settings_flags(mapping, "label_studio_api_key", label_studio_api_key="with --workspace, the expert's submitted "
                    "masks replace the decoder's on their tiles")
    mapping.add_argument("--tiles", type=Path, help="the tile folder of `al-loop tile` (default: <out>-tiles beside --out)")
    mapping.add_argument("--geojson", type=Path, help="also write every pit as GeoJSON in Mars lon/lat to this file")
    mapping.add_argument("--probabilities", type=Path, help="folder to write a uint8 probability GeoTIFF per product to")
    mapping.add_argument("--no-quicklook", action="store_true", help="skip the quicklook PNG per product")
    cli_results.add_export_flags(mapping)
    mapping.add_argument("--overlay", type=Path, help="a vector file (GeoPackage, GeoJSON, shapefile) drawn over each "
                         "quicklook: expert boxes, catalogue points")
    mapping.add_argument("--threshold", type=_probability, default=THRESHOLD, help="a pixel is pit where the blended "
                         f"probability reaches this (default {THRESHOLD})")
    mapping.add_argument("--min-area-m2", type=float, help="leave out pits smaller than this (default: half the 5th "
                         "percentile of the decoder's training pits; 0: no limit)")
    mapping.add_argument("--max-area-m2", type=float, help="leave out pits larger than this (default: twice the "
                         "decoder's largest training pit; inf: no limit)")
    _tile_size_flags(mapping, "products tiled now", None, None, "the side of the decoder's training tiles, so pits "
                     "look the size it learned; 1024 when it records none")
    _settings_flags(mapping, "cache_dir", "runtime")
    _quiet_flag(mapping)


def _add_sample(sub) -> None:
    sample = sub.add_parser(
        "sample", help="generate Mars-like sample data: tiles with pits (YOLO format), or a whole product (--product)",
        description="Write generated Mars-like tiles with pits and skylights and their boxes as a YOLO dataset; or, "
        "with --product DIR, a small georeferenced HiRISE-style product (JP2 + PDS3 label) with its expert boxes "
        "(GeoJSON) and a YOLO set to train a decoder on: the map path end to end without downloading anything.",
    )
    sample.add_argument("directory", type=Path, nargs="?", help="where to write data.yaml, train/ and valid/")
    sample.add_argument("--product", type=Path, metavar="DIR", help="write a sample product, its expert boxes and a "
                        "training set under DIR instead")
    sample.add_argument("--train", type=int, default=40, help="tiles in train/ (default 40)")
    sample.add_argument("--valid", type=int, default=10, help="tiles in valid/ (default 10)")
    sample.add_argument("--tile-size", type=int, default=512, help="tile side in pixels (default 512)")
    _deprecated(sample, "--size", "--tile-size", "tile_size", type=int)
    sample.add_argument("--seed", type=int, default=0, help="random seed of the generator (default 0)")


def _add_simulate(sub) -> None:
    sim = sub.add_parser(
        "simulate", help="replay the paper's experiment on a YOLO-format dataset, with an oracle as the expert",
        description="Round 1 labels the first step's count of random tiles; each later round adds tiles "
        "chosen by the strategy, retrains the domain decoder, and evaluates on the valid split.",
    )
    sim.add_argument("--dataset", type=Path, required=True, help="YOLO dataset: data.yaml, train/ and valid/ with images/ and labels/")
    sim.add_argument("--steps", type=_steps, default=[5, 10, 15, 20, 25, 50], help="labelled-tile counts per round (default 5,10,15,20,25,50)")
    sim.add_argument("--strategy", dest="strategies", default="entropy", help="one or more comma-separated strategies to compare: "
                     + ", ".join(STRATEGIES) + " (default entropy)")
    sim.add_argument("--oracle", default="box", choices=ORACLES, help="how boxes become masks: box (the inscribed "
                     "ellipse, no weights needed; default) or sam (SAM box prompts)")
    _settings_flags(sim, *LOOP_SETTINGS, "epochs")
    sim.add_argument("--seeds", type=int, default=3, help="repetitions with different first-round tiles (default 3)")
    sim.add_argument("--classes", action="store_true",
                     help="learn the boxes' classes as pit types (data.yaml's names; the simulated expert types each "
                     "pit right) and report per-type metrics")
    sim.add_argument("--regroup", action="store_true",
                     help="draw the valid split again from whole groups of near-duplicates (the data set's own split "
                     "is checked and its leakage printed either way)")
    sim.add_argument("--report", type=Path, help="write every metric of every round and seed to this JSON file")
    sim.add_argument("--json", nargs="?", const=True, default=False, metavar="",
                     help="print every round as JSON (the old `--json FILE` still writes FILE, deprecated: use --report)")
    sim.add_argument("--png", type=Path, help="draw the learning curve to this PNG file")
    _quiet_flag(sim)


def _add_init(sub) -> None:
    init = sub.add_parser(
        "init", help="bind a workspace to a Label Studio project, import the tiles, and keep the loop's settings",
        description="Creates (or, with --project, binds to) a Label Studio project with label_config/skylights.xml, "
        "imports the tiles (a local-files storage for a directory: nothing is copied; the directory must lie under "
        "Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), connects the ML backend when given, and sets aside "
        "a validation set that is labelled first and never trained on: tiles are grouped first (near-duplicates by "
        "content, whatever the mirroring, rotation or re-encoding, and overlapping tiles of one product), and a group "
        "goes wholly to validation or wholly to the pool. The loop's settings given here (encoder, "
        "model, checkpoint, precision, runtime, cache, strategy, batch size, epochs) are kept in the workspace for "
        "every later command and the backend. Safe to run again after a failure: it finds the project it made.",
    )
    _settings_flags(init, "label_studio_url", "label_studio_api_key")
    _deprecated(init, "--label-studio", "--label-studio-url", "label_studio_url")
    source = init.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="directory of tiles to import through a local-files storage")
    source.add_argument("--tasks", type=Path, help="JSON file of Label Studio tasks to import")
    init.add_argument("--project", type=int, help="bind to this existing project instead of creating one")
    init.add_argument("--title", default="Mars pits (al-loop)", help="title of the project made (default 'Mars pits (al-loop)')")
    init.add_argument("--backend-url", help="URL of `al-loop serve-backend`, connected to the project")
    _settings_flags(init, *KEPT)
    init.add_argument("--val-size", type=int, help="validation tasks (default 10%% of the tiles, at least 5)")
    config = init.add_mutually_exclusive_group()
    config.add_argument("--label-config", metavar="FILE|NAME",
                        help="the project's labelling config: an XML file, or a built-in one by name: skylights (one "
                        "type, 'pit'; the default) or pit-types (the HiRISE set's five types)")
    config.add_argument("--types", metavar="DATA_YAML|NAMES",
                        help="pit types to label and learn: a YOLO data.yaml (its names, and 'descriptions' shown "
                        "to the expert) or comma-separated names; makes a typed labelling config")
    init.add_argument("--labels", type=Path, metavar="DIR",
                      help="import an existing catalogue: YOLO label files STEM.txt for the tiles STEM.*, as typed "
                      "box annotations (class k is the (k+1)-th type); the first next-batch then trains at once")
    _workspace_flag(init)
    _quiet_flag(init)


def _add_next_batch(sub) -> None:
    nb = sub.add_parser(
        "next-batch",
        help="train on the answers so far, evaluate, and push the next tiles to label",
        description="Pulls the submitted annotations from Label Studio, embeds every tile (cached), trains the domain "
        "decoder on the labelled tiles (never the validation ones), evaluates it on the labelled validation tiles, "
        "ranks the unlabelled tiles with the strategy and pushes the top --batch-size ones: the decoder's masks as "
        "predictions (model_version round-N) and a Data Manager tab 'Round N'. Round 0 pushes the validation tiles "
        "and --batch-size tiles picked for variety. While the last batch is not fully answered it says so and pushes "
        "nothing. Killed at any step, running it again finishes the round. Settings come from the workspace unless "
        "a flag names another for this round (--save keeps it for the rounds after).",
    )
    _settings_flags(nb, *KEPT)
    _deprecated(nb, "--size", "--batch-size", "batch_size", type=int)
    nb.add_argument("--save", action="store_true", help="keep the settings given as flags for the rounds after this one")
    nb.add_argument("--force", action="store_true", help="push a new batch even though the last one is not fully answered")
    nb.add_argument("--accept-deleted", action="store_true", help="drop tasks deleted in Label Studio from the loop instead of stopping")
    _settings_flags(nb, "label_studio_api_key")
    _workspace_flag(nb)
    _json_flag(nb, "the round (timings per step included)")
    _quiet_flag(nb)


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="rounds, task counts, tasks still awaited, decoders and the last metrics of a workspace",
                            description="Where the loop stands: task counts, rounds with their settings, tasks still "
                            "awaited, every decoder version with the tasks it was trained on and its evaluation.")
    _workspace_flag(status)
    status.add_argument("--decoder", type=Path, help="show what a decoder file is instead: encoder and weights, types, "
                        "tiles, epochs, held-out fit, normalisation")
    _json_flag(status, "the status")


def _add_curve(sub) -> None:
    curve = sub.add_parser("curve", help="the learning curve across rounds (mIoU, micro F1, accuracy, precision, recall)",
                           description="The validation metrics of every evaluated round.")
    _workspace_flag(curve)
    curve.add_argument("--png", type=Path, help="draw it to this PNG file")
    _json_flag(curve, "the rows")


def _add_config(sub) -> None:
    config = sub.add_parser("config", help="every setting, its value and where it came from (flag, environment, workspace, default)",
                            description="Resolves every setting as the other commands do (flag, then environment, then "
                            "the workspace, then the default) and says where each value came from.")
    _workspace_flag(config)
    _json_flag(config, "the settings")
    config.add_argument("--markdown", action="store_true", help="print the reference table of every setting (the README's)")


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole loop on this machine: a local Label Studio, the ML backend, sample tiles, a simulated expert",
        description="Starts a private Label Studio (SQLite, its own data dir) and the ML backend on loopback, writes "
        "generated Mars-like tiles with pits and skylights (or takes --images), runs `init` and --rounds rounds of "
        "`next-batch` while a simulated expert answers each batch through the Label Studio API, then prints the "
        "learning curve and the address, user and password to open Label Studio with. The last round's batch is "
        "left unanswered, pre-annotated, for you to look at. Without SAM weights a box becomes the ellipse "
        "inscribed in it and the decoder learns on the filterbank encoder, and it says so.",
    )
    demo.add_argument("--rounds", type=int, default=3, help="training rounds after round 0 (default 3)")
    demo.add_argument("--batch-size", type=int, default=5, help="tasks pushed per round (default 5)")
    _deprecated(demo, "--size", "--batch-size", "batch_size", type=int)
    demo.add_argument("--images", type=Path, help="your tiles instead of generated ones (a YOLO dataset folder lets "
                      "the simulated expert answer from its boxes; a plain folder stops after round 0 for you to label)")
    demo.add_argument("--model", choices=MODELS,
                      help="SAM for the backend's box prompts (default vit_b; without its weights a box gives the "
                      "ellipse inscribed in it; tiny: random weights, for tests only)")
    demo.add_argument("--checkpoint", help="SAM checkpoint file")
    demo.add_argument("--encoder", help="the decoder's encoder (default sam-<model> with real weights, else filterbank)")
    demo.add_argument("--epochs", type=int, default=100, help="decoder training epochs (default 100)")
    demo.add_argument("--port", type=int, default=8080, help="Label Studio's port (default 8080)")
    demo.add_argument("--demo-dir", type=Path, default=Path("al-demo"),
                      help="demo folder: Label Studio data, tiles, workspace, embeddings (default ./al-demo; replaced by the next demo)")
    _deprecated(demo, "--workspace", "--demo-dir", "demo_dir", type=Path)
    demo.add_argument("--keep-running", action="store_true", help="keep Label Studio and the backend up until Ctrl-C")
    _quiet_flag(demo)


def _add_serve_backend(sub) -> None:
    serve = sub.add_parser(
        "serve-backend",
        help="run the Label Studio ML backend (SAM masks from box/point prompts, decoder pre-annotations)",
        description="Serves Label Studio's ML backend protocol under gunicorn. Every setting reads its flag, then its "
        "environment variable (for docker), then the workspace's saved settings (so the backend shares the loop's "
        "cache, encoder and SAM), then its default: `al-loop config` shows them. Connect it in Label Studio under "
        "Project > Settings > Model, or with `al-loop init --backend-url`. START_TRAINING trains only the project of "
        "its workspace, never on its validation tasks. Request limits (body size, regions, image pixels, download "
        "and request deadlines) are AL_LOOP_* variables: see the README's settings table.",
    )
    _settings_flags(serve, "host", "port", "model", "checkpoint", "precision", "runtime", "cache_dir", "encoder",
                    "epochs", "local_root", "threads", "label_studio_url", "log_level")
    serve.add_argument("--workspace", help="al-loop workspace whose settings the backend reads, whose decoders "
                       "pre-annotate tasks and whose project it trains; " + help_for("workspace"))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line of the tool's own, naming where it came from."""
    origin = Path(filename).parent.name if "site-packages" in str(filename) else Path(filename).stem
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"al-loop: warning: {text} ({category.__name__}, {origin})", file=file or sys.stderr)


def _quiet_libraries() -> None:
    """Library warnings and GDAL's log lines become one-line messages of the tool's own."""
    import logging
    import warnings

    warnings.showwarning = _one_line_warning
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("al-loop: warning: %(message)s (%(name)s)"))
    for name in ("rasterio", "pyogrio", "fiona"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    handler = {
        "weights": cmd_weights,
        "embed": cmd_embed,
        "sample": cmd_sample,
        "tile": cmd_tile,
        "train": cmd_train,
        "map": cmd_map,
        "export": cli_results.cmd_export,
        "fetch": cli_results.cmd_fetch,
        "compare": cli_results.cmd_compare,
        "measure": cli_results.cmd_measure,
        "simulate": cmd_simulate,
        "serve-backend": cmd_serve_backend,
        "init": cmd_init,
        "status": cmd_status,
        "next-batch": cmd_next_batch,
        "curve": cmd_curve,
        "config": cmd_config,
        "demo": cmd_demo,
    }[args.command]
    try:
        return handler(args) or 0
    except tuple(kind for kind, _, _ in EXIT_CODES) as exc:
        code, message = next((code, message) for kind, code, message in EXIT_CODES if isinstance(exc, kind))
        print(message.format(exc), file=sys.stderr)
        return code


def settings_of(args: argparse.Namespace) -> Settings:
    """The command's settings: its flags over the environment over its workspace's saved settings
    (where the command takes a workspace) over the defaults."""
    from al_loop.loop.workspace import saved_settings

    given = {name: getattr(args, name) for name in NAMES if getattr(args, name, None) is not None}
    if isinstance(given.get("workspace"), Path):
        given["workspace"] = str(given["workspace"])
    layer = {}
    if hasattr(args, "workspace") and args.command != "init":  # init makes the workspace: nothing saved yet
        layer = saved_settings(resolve({"workspace": given.get("workspace")}).workspace)
    return resolve(given, layer)


def _workspace(settings: Settings):
    from al_loop.loop.workspace import Workspace

    return Workspace(settings.workspace)


def _token(settings: Settings) -> str:
    if not settings.label_studio_api_key:
        raise UsageError("no Label Studio token: pass --token or set LABEL_STUDIO_API_KEY (Account & Settings > Access Token)")
    return settings.label_studio_api_key


def cmd_weights(args) -> int:
    from al_loop.models import weights

    if args.weights_command == "download":
        path = weights.download(args.model, args.dir, args.url)
        print(f"{args.model}: {path} ({'sha256' if weights.CHECKPOINTS[args.model].sha256 else 'md5'} verified)")
        print(f"next: al-loop weights prepare {args.model}  (measures once which engine runs it fastest here)")
        return 0
    if args.weights_command == "prepare":
        return _prepare(args)
    for name, ck in weights.CHECKPOINTS.items():
        path = weights.weights_dir() / ck.filename
        print(f"{name}: {'present' if path.is_file() else 'missing'}  {path}")
    return 0


def _prepare(args) -> int:
    import json
    from dataclasses import asdict

    from al_loop.models.encoders import encoder_of_model, model_id
    from al_loop.models.engines import choose, cpu_summary, record_path
    from al_loop.models.measure_engines import measure

    name = encoder_of_model(args.model)
    weights_id = model_id(name, args.checkpoint)
    measurements = measure(name, args.checkpoint, weights_id, progress=lambda line: print(line, file=sys.stderr))
    chosen = choose(measurements)
    if args.json:
        print(json.dumps({"model_id": weights_id, "cpu": cpu_summary(), "chosen": asdict(chosen),
                          "record": str(record_path(weights_id)), "measurements": [asdict(m) for m in measurements]},
                         indent=2))
        return 0
    print(f"{weights_id} on {cpu_summary()}")
    print(f"{'engine':<16}{'s/tile':>8}{'cosine':>11}{'mask IoU':>10}{'convert s':>11}{'peak MB':>9}  contract")
    for m in measurements:
        if m.skipped:
            print(f"{m.runtime + ' ' + m.precision:<16}  not measured: {m.skipped}")
            continue
        convert = f"{m.conversion_seconds:.1f}" if m.conversion_seconds else "-"
        print(f"{m.runtime + ' ' + m.precision:<16}{m.seconds:>8.2f}{m.cosine:>11.6f}{m.mask_iou:>10.3f}{convert:>11}"
              f"{m.peak_rss_mb:>9.0f}  {'kept' if m.keeps_contract else 'missed'}")
    print(f"chosen: {chosen.runtime} {chosen.precision}: {chosen.reason}")
    print(f"recorded in {record_path(weights_id)}; a named --runtime/--precision still wins")
    return 0


def cmd_embed(args) -> int:
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

        run = run_ray(sources, config, args.address, args.workers, args.gpus_per_worker, args.cpus_per_worker,
                      args.chunk_size, progress=not args.quiet)
    else:
        run = run_local(sources, config, args.chunk_size, progress=not args.quiet)
    for row in run.failures:
        print(f"failed: {row['reason']}", file=sys.stderr)
    print(run.summary())
    if args.report:
        args.report.write_text(json.dumps({"engine": run.engine, "phases": run.phases, "tiles": run.rows}, indent=1))
    return 1 if run.failures and len(run.failures) == len(run.rows) else 0


def cmd_tile(args) -> int:
    from al_loop.data.tiling import tile_products

    report = tile_products(args.products, args.out, args.tile_size, args.overlap, progress=not args.quiet)
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
    from al_loop.mapping.from_dataset import DatasetTraining, train_from_dataset

    s = settings_of(args)
    job = DatasetTraining(args.dataset, s.encoder, args.oracle, tuple(p for p in args.splits.split(",") if p),
                          s.model, s.checkpoint, precision=s.precision, epochs=s.epochs, runtime=s.runtime,
                          regroup=args.regroup, held_out=args.held_out, binary=args.binary)
    report = train_from_dataset(job, args.out, EmbeddingCache(s.cache_location), progress=not args.quiet)
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    if report.split:
        print(f"{args.dataset.name}: {report.split.describe('held-out (other splits)')}"
              + (f"; {report.dropped} training tile(s) with a copy there left out" if report.dropped else ""))
    print(f"decoder trained on {report.tiles} tiles ({report.boxes} expert boxes, {args.oracle} oracle, "
          f"encoder {report.encoder_id}) written to {report.path}")
    if report.held_out:
        print(f"on {len(report.held_out['tiles'])} held-out tiles it never saw: {_fit_line(report.held_out['metrics'])}")
    else:
        print("no tile held out (--held-out 0): nothing says how well it fits tiles it never saw")
    return 0


def cmd_map(args) -> int:
    from al_loop.mapping.run import MapJob, map_products

    tiles = args.tiles or args.out.with_name(f"{args.out.stem}-tiles")
    s = settings_of(args)
    token = s.label_studio_api_key if args.workspace else None
    if args.overlay is not None and not args.overlay.is_file():
        raise UsageError(f"--overlay {args.overlay}: no such file")
    job = MapJob(args.products, args.out, tiles, args.decoder, args.workspace, args.geojson, args.probabilities,
                 not args.no_quicklook, args.tile_size, args.overlap, s.cache_location, not args.quiet, token, s,
                 args.threshold, args.min_area_m2, args.max_area_m2, args.overlay)
    report = map_products(job)
    _print_problems(report.warnings, report.failures)
    for pid, count in report.pits.items():
        print(f"{pid}: {count} pits{_left_out_line(report, pid)}")
    if report.pits and (args.jmars or args.craterstats or args.sfd):
        report.outputs += cli_results.write_exports(args.out, "pits_lonlat", args.jmars, args.craterstats, args.sfd)
    for path in report.outputs:
        print(f"wrote {path}")
    return 1 if report.failures else 0


def _left_out_line(report, product_id: str) -> str:
    small, large = report.left_out.get(product_id, (0, 0))
    low, high = report.limits.get(product_id, (None, None))
    if low is None and high is None:
        return ""
    span = f"{low or 0:.3g}-{high if high is not None else float('inf'):.3g} m2"
    return f" within {span}" + (f" ({small} smaller and {large} larger left out)" if small or large else "")


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability strictly between 0 and 1")
    return value


def cmd_sample(args) -> int:
    from al_loop.data.synthetic import write_yolo_dataset

    if (args.directory is None) == (args.product is None):
        raise UsageError("give a DIRECTORY for a YOLO set of tiles, or --product DIR for a sample product")
    if args.product is not None:
        return _sample_product(args.product, args.seed)
    if min(args.train, args.valid) < 1 or args.tile_size < 64:
        raise UsageError("--train and --valid must be at least 1 and --tile-size at least 64")
    root = write_yolo_dataset(args.directory, args.train, args.valid, args.seed, args.tile_size)
    print(f"{args.train} train + {args.valid} valid generated tiles with their boxes in {root}")
    return 0


def _sample_product(folder: Path, seed: int) -> int:
    from al_loop.data.sample_products import write_sample_product

    paths = write_sample_product(folder, seed)
    print(f"sample product {paths['product']} (0.25 m/px, Mars equirectangular), its expert boxes {paths['boxes']}, "
          f"and a training set {paths['training']}. Map it without weights:")
    print(f"  al-loop train --dataset {paths['training']} --encoder filterbank --out {folder}/decoder.pt")
    print(f"  al-loop map {paths['product']} --decoder {folder}/decoder.pt --out {folder}/pits.gpkg "
          f"--overlay {paths['boxes']}")
    return 0


def cmd_simulate(args) -> int:
    import json

    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.evaluation.curves import plot_curves, plot_type_curves, types_png
    from al_loop.evaluation.metrics import SIMULATE_FIGURE
    from al_loop.experiment.simulate import SimulationConfig, load_splits, report_of, run_simulation, summarise, write_json

    if isinstance(args.json, str):  # the old `--json FILE`
        print("al-loop: warning: --json FILE is deprecated and goes in the next release; use --report FILE", file=sys.stderr)
        args.report, args.json = Path(args.json), False
    s = settings_of(args)
    config = SimulationConfig(
        dataset=args.dataset, steps=args.steps, strategies=[v.strip() for v in args.strategies.split(",") if v.strip()],
        encoder=s.encoder, oracle=args.oracle, model=s.model, checkpoint=s.checkpoint, seeds=args.seeds, epochs=s.epochs,
        classes=args.classes, precision=s.precision, runtime=s.runtime, regroup=args.regroup,
    )
    train_tiles, eval_tiles, check = load_splits(config, progress=not args.quiet)
    _say(args, f"{args.dataset.name}: {check.describe()}")
    if not args.json:
        from al_loop.evaluation.metrics import HEADLINE

        print(f"{'strategy':<16}{'seed':>5}{'round':>6}{'tiles':>6}" + "".join(f"{m:>18}" for m in HEADLINE))
    rows = run_simulation(config, EmbeddingCache(s.cache_location), progress=not args.quiet,
                          on_round=None if args.json else _show_simulated_round, splits=(train_tiles, eval_tiles))
    summary = summarise(rows) if args.json else _print_simulation_summary(rows, config.strategies)
    if args.json:
        print(json.dumps(report_of(config, rows, check), indent=2))
    if args.report:
        write_json(args.report, config, rows, check)
        _say(args, f"rounds written to {args.report}")
    if args.png:
        split = "valid split regrouped (no copies across it)" if config.regroup else "the set's own valid split"
        title = f"{args.dataset.name}: {config.encoder} encoder, {config.oracle} oracle, {config.seeds} seeds, {split}"
        plot_curves(summary, SIMULATE_FIGURE, args.png, title)
        first = [r for r in summary if r["strategy"] == config.strategies[0]]
        typed = plot_type_curves(first, types_png(args.png), f"{title}; per type, {config.strategies[0]}")
        _say(args, f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))
    return 0


def _say(args, line: str) -> None:
    """A line for a person: on stdout, or on stderr where stdout carries JSON."""
    print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def _show_simulated_round(row: dict) -> None:
    from tqdm import tqdm

    from al_loop.evaluation.metrics import HEADLINE

    tqdm.write(f"{row['strategy']:<16}{row['seed']:>5}{row['round']:>6}{row['labelled']:>6}"
               + "".join(f"{row[m]:>18.3f}" for m in HEADLINE))


def _print_simulation_summary(rows: list[dict], strategies: list[str]) -> list[dict]:
    """The mean over seeds per strategy and round, and each strategy against random; returns the means."""
    from al_loop.evaluation.metrics import HEADLINE
    from al_loop.experiment.simulate import paired_against, summarise

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
    from al_loop.loop.init import check_weights, init_workspace

    s = settings_of(args)
    if not s.label_studio_url:
        raise UsageError("no Label Studio address: pass --label-studio-url (e.g. http://localhost:8080) or set LABEL_STUDIO_URL")
    if note := check_weights(s.to_keep()):
        print(f"note: {note}", file=sys.stderr)
    report = init_workspace(
        _workspace(s), s.label_studio_url, _token(s), images=args.images, tasks_file=args.tasks,
        project=args.project, title=args.title, backend_url=args.backend_url, settings=s.to_keep(),
        val_size=args.val_size, label_config=_label_config(args), labels_dir=args.labels, local_root=s.local_root,
        progress=not args.quiet,
    )
    for reason in report.skipped_files:
        print(f"warning: {reason}", file=sys.stderr)
    found = " (found the project an earlier init made)" if report.resumed else ""
    print(f"workspace {s.workspace} bound to project {report.project}{found} at {s.label_studio_url}: {report.tasks} "
          f"tasks, {len(report.validation)} set aside for validation (label them first): {report.validation}")
    if report.groups and report.groups.copies:
        print(f"{report.groups.copies} tile(s) have a near-duplicate among the tasks: each group of copies went wholly "
              "to validation or wholly to the pool")
    if report.buffer:
        print(f"{len(report.buffer)} tile(s) overlap or touch a validation tile in their product: kept apart "
              "(never trained on or scored), so validation shows no ground the pool shows")
    if report.ml_backend:
        print(f"ML backend {args.backend_url} connected (id {report.ml_backend})")
    print("settings kept in the workspace: " + ", ".join(f"{k} {v}" for k, v in s.to_keep().items()))
    if report.imported is not None:
        imported = report.imported
        print(f"imported {imported.annotations} annotation(s) from {args.labels}: "
              + ", ".join(f"{n} {name}" for name, n in imported.boxes.items()))
        if imported.unmatched:
            print(f"warning: {len(imported.unmatched)} label file(s) match no task's image, e.g. "
                  f"{imported.unmatched[0]}.txt", file=sys.stderr)
        print("next: `al-loop next-batch` trains on them at once (round 1)")
        return 0
    if report.answered:
        print(f"the project already holds answers on {report.answered} task(s): `al-loop next-batch` trains on those "
              "of the pool at once (round 1) and sends the validation tiles still unlabelled out with its picks")
        return 0
    print("next: run `al-loop next-batch`: round 0 sends the validation tiles (label them first) and tiles picked "
          "for variety to a tab in Label Studio")
    return 0


def _label_config(args) -> str | None:
    """The XML of ``--label-config`` or of a typed config made from ``--types``; None: the default."""
    from al_loop.data.yolo import class_descriptions, class_names
    from al_loop.studio.label_config import label_config_text, typed_label_config

    if args.label_config is not None:
        return label_config_text(args.label_config)
    if args.types is None:
        return None
    spec = Path(args.types)
    if spec.suffix in (".yaml", ".yml") or spec.is_dir():
        return typed_label_config(class_names(spec), class_descriptions(spec))
    return typed_label_config([n.strip() for n in args.types.split(",")])


def cmd_next_batch(args) -> int:
    import json
    from dataclasses import asdict

    from al_loop.loop.next_batch import next_batch

    s = settings_of(args)
    workspace = _workspace(s)
    config = workspace.config()  # a WorkspaceError when there is none, before anything else
    if args.save:
        given = {name: getattr(s, name) for name in KEPT if s.source(name) == "flag"}
        workspace.save_settings(given)
        _say(args, "kept for the rounds after: " + (", ".join(f"{k} {v}" for k, v in given.items()) or "nothing given"))
    report = next_batch(workspace, _token(s), s, force=args.force, accept_deleted=args.accept_deleted,
                        progress=not args.quiet)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    _print_round(report, f"{config.label_studio_url.rstrip('/')}/projects/{config.project}/data")
    return 0


def _print_round(report, project_data_url: str) -> None:
    from al_loop.evaluation.metrics import TABLE

    tab = f"tab 'Round {report.round}'" + (f" ({project_data_url}?tab={report.view_id})" if report.view_id else "")
    if report.joined:
        print(f"{len(report.joined)} task(s) new in Label Studio joined the pool: {report.joined}")
    if report.status == "waiting":
        print(f"round {report.round}: {len(report.awaited)} pushed task(s) still await an answer: {report.awaited}")
        print(f"label them in Label Studio ({tab}), or run with --force to push a new batch anyway")
        return
    resumed = " (finished an interrupted run)" if report.resumed else ""
    ran = report.settings
    print(f"round {report.round}{resumed}: strategy {report.strategy}, decoder trained on {report.labelled} labelled "
          f"tile(s)" + (f" ({ran['epochs']} epochs, encoder {ran['encoder']})" if ran else ""))
    if report.metrics:
        print("  " + "  ".join(f"{m} {report.metrics[m]:.3f}" for m in TABLE if m in report.metrics))
    if not report.chosen:
        print("nothing left to push: every task is labelled, skipped or was pushed before (the round is recorded)")
        return
    print(f"pushed {len(report.chosen)} task(s) to {tab}"
          + (f" with predictions {report.model_version}" if report.predictions else ""))
    print(f"  {'rank':>4}  {'task':>6}  score")
    for i, (task, score) in enumerate(report.chosen):
        print(f"  {i:>4}  {task:>6}  {'-' if score is None else f'{score:.4f}'}")


def _print_curve(rows: list[dict]) -> None:
    from al_loop.evaluation.metrics import TABLE

    print(f"{'round':>5}{'labelled':>10}{'validation':>12}" + "".join(f"{m:>17}" for m in TABLE))
    for row in rows:
        print(f"{row['round']:>5}{row['labelled']:>10}{_scored_on(row):>12}"
              + "".join(f"{row.get(m, float('nan')):>17.3f}" for m in TABLE))
    if any(r.get("partial") for r in rows):
        print("* partial: scored before every validation tile was labelled (not comparable with complete rounds)")
    if any(r.get("changed") for r in rows):
        print("! the validation set differs from the row above: compare rows with the same set only")
    _print_type_table([{**r, "strategy": f"round {r['round']}"} for r in rows])


def _set_label(row: dict) -> str:
    scored = _scored_on(row).rstrip("*!")
    return f"scored on {scored} validation tiles" + (" (partial)" if row.get("partial") else "")


def _curve_sets(rows: list[dict]) -> str:
    """The validation sets a curve's points were scored on, for its title."""
    sizes = sorted({_scored_on(r).rstrip("*!") for r in rows})
    partial = [str(r["round"]) for r in rows if r.get("partial")]
    text = f"validation tiles {', '.join(sizes) or '0'}"
    return text + (f"; partial: round {', '.join(partial)}" if partial else "")


def _scored_on(row: dict) -> str:
    """What a curve row was scored on: 'n/of', with * when partial and ! when the set changed."""
    if row.get("validation_scored") is None:
        return f"{row.get('tiles', float('nan')):.0f}?"  # a round recorded before the set was kept
    of = row.get("validation_of")
    marks = ("*" if row.get("partial") else "") + ("!" if row.get("changed") else "")
    return f"{row['validation_scored']}/{of}{marks}" if of is not None else f"{row['validation_scored']}{marks}"


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


def _engine_line(s) -> dict:
    """The engine and precision the workspace's encoder runs on here, and why (never measures)."""
    from al_loop.models.encoders import resolve_engine

    if s.encoder == "filterbank":
        return {"runtime": None, "precision": None, "reason": "none: the filter bank runs on scipy, not on an engine"}
    try:
        engine = resolve_engine(s.encoder, s.checkpoint, s.precision, s.runtime)
    except AlLoopError as exc:
        return {"runtime": None, "precision": None, "reason": f"unknown: {exc}"}
    return {"runtime": engine.runtime, "precision": engine.precision, "reason": engine.reason}


def cmd_status(args) -> int:
    import json

    if args.decoder:
        return _show_decoder(args.decoder, args.json)
    s = settings_of(args)
    workspace = _workspace(s)
    config = workspace.config()  # a WorkspaceError when there is none
    counts, rounds, awaited, curve = workspace.counts(), workspace.rounds(), workspace.awaited(), workspace.curve()
    last_metrics = {k: v for k, v in curve[-1].items() if k not in ("model_version", "strategy", "settings")} if curve else {}
    decoder_problem, decoders = _decoders(workspace.root)
    engine = _engine_line(s)
    report = {"project": config.project, "label_studio": config.label_studio_url, "settings": s.kept(),
              "counts": counts, "rounds": rounds, "awaited": awaited, "last_metrics": last_metrics,
              "decoders": decoders, "decoder_problem": decoder_problem, "engine": engine}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"project {config.project} at {config.label_studio_url}, encoder {s.encoder}, strategy {s.strategy}, "
          f"{s.batch_size} tasks a round, {s.epochs} epochs (`al-loop config` says where each comes from)")
    print(f"engine: {engine['runtime']} {engine['precision']}: {engine['reason']}" if engine.get("runtime")
          else f"engine: {engine['reason']}")
    print(f"validation {counts['validation_labelled']}/{counts['validation']} labelled; pool: {counts['labelled']} labelled, "
          f"{counts['unlabelled']} unlabelled, {counts['skipped']} skipped, {counts['deleted']} deleted"
          + (f"; {counts['buffer']} kept apart (touching a validation tile)" if counts["buffer"] else ""))
    print(f"rounds: {len(rounds)}" + ("" if not rounds else f" (last: round {rounds[-1]['round']}, {rounds[-1]['strategy']})"))
    if rounds and rounds[-1]["finished_at"] is None:
        print(f"round {rounds[-1]['round']} was interrupted while pushing: run `al-loop next-batch` to finish it")
    if awaited:
        print(f"awaited (as of the last next-batch): {len(awaited)} task(s) {awaited}")
    _print_decoders(decoders, decoder_problem)
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


def _fit_line(metrics: dict) -> str:
    return (f"object recall {metrics['object_recall']:.3f}, object precision {metrics['object_precision']:.3f}, "
            f"pixel IoU of pits {metrics['iou_pit']:.3f}")


def _show_decoder(path: Path, as_json: bool) -> int:
    """What a decoder file is: its encoder and weights, types, tiles, epochs, held-out fit, normalisation."""
    import json

    from al_loop.data.radiometry import describe_decoder
    from al_loop.models.decoder import load_decoder

    if not path.is_file():
        raise UsageError(f"no decoder file at {path}")
    decoder, meta = load_decoder(path)
    about = {"file": str(path), "types": decoder.types, **meta}
    if as_json:
        print(json.dumps(about, indent=2, default=str))
        return 0
    held = meta.get("held_out") or meta.get("evaluation")
    names = f" ({', '.join(meta['type_names'])})" if meta.get("type_names") else ""
    print(f"decoder {path}: version {meta.get('version', '?')}, {decoder.types} type(s){names}")
    print(f"  encoder {meta.get('encoder', '?')} ({meta['encoder_id']}), checkpoint {meta.get('checkpoint') or '-'}, "
          f"precision {meta.get('precision', 'fp32')}")
    trained = meta.get("trained_on")
    side = f" of {meta['tile_side']} px" if meta.get("tile_side") else ""
    print(f"  trained on {meta.get('tiles', len(trained or []))} tiles{side}, {meta.get('epochs', '?')} epochs"
          + (f", {meta['oracle']} oracle, from {meta['dataset']}" if meta.get("oracle") else ""))
    metrics = held.get("metrics", held) if isinstance(held, dict) else None
    print("  held-out fit: " + (_fit_line(metrics) if metrics else "none recorded"))
    print(f"  normalisation: {describe_decoder(meta)}")
    sizes = meta.get("pit_sizes")
    print("  training pits: " + (f"{sizes['count']}, {sizes['p5_pixels']:.0f}-{sizes['max_pixels']:.0f} pixels "
                                 f"(5th percentile to largest; median {sizes['median_pixels']:.0f}): map's default "
                                 "size limits" if sizes else "sizes not recorded: map applies no default size limits"))
    return 0


def _print_decoders(decoders: list[dict], problem: str | None) -> None:
    if problem:
        print(f"decoder: DAMAGED: {problem}; the backend pre-annotates nothing until then")
    for d in decoders:
        trained = "?" if d["trained_on"] is None else len(d["trained_on"])
        scored = "not evaluated" if d["evaluation"] is None else \
            f"evaluated on {len(d.get('validated_on') or [])} validation tile(s)"
        print(f"decoder {d['version']}: trained on {trained} task(s), {scored}" + (" <- in use" if d["latest"] else ""))


def _decoders(workspace: Path) -> tuple[str | None, list[dict]]:
    """What the backend would report as degraded about the workspace's decoder (None: fine or none
    yet), and every decoder version with what it was trained on and its evaluation."""
    if not (workspace / "decoders").is_dir():
        return None, []  # nothing trained yet: no need to load torch
    from al_loop.training.store import DecoderStore

    store = DecoderStore(workspace)
    return store.problem(), store.records()


def cmd_curve(args) -> int:
    import json

    workspace = _workspace(settings_of(args))
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

        title = f"project {config.project}: learning curve ({_curve_sets(rows)})"
        # One line per validation set: points scored on different tiles are not joined.
        plot_curves([{**r, "strategy": _set_label(r)} for r in rows], FIGURE5, args.png, title)
        typed = plot_type_curves(rows, types_png(args.png), title.replace("learning curve", "per-type curve"))
        if not args.json:
            print(f"learning curve written to {args.png}" + (f", per type to {typed}" if typed else ""))
    return 0


def cmd_config(args) -> int:
    import json

    from al_loop.settings import markdown_table, where

    if args.markdown:
        print(markdown_table())
        return 0
    s = settings_of(args)
    rows = s.rows()
    if args.json:
        print(json.dumps({row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows}, indent=2))
        return 0
    exists = _workspace(s).exists()
    print(f"workspace {s.workspace}" + ("" if exists else " (none there yet: `al-loop init` makes it)"))
    print(f"{'setting':<22}{'value':<40}source")
    for row in rows:
        source = row["source"] if row["source"] == "default" else f"{row['source']} ({where(row['name'], row['source'])})"
        print(f"{row['name']:<22}{str(row['value']):<40}{source}")
    return 0


def _demo_models(args) -> tuple[str, str | None, str, list[str]]:
    """Model, checkpoint, encoder, and what the choice means for the expert."""
    from al_loop.models.encoders import encoder_of_model
    from al_loop.models.weights import has_weights

    model, checkpoint, notes = args.model or "vit_b", args.checkpoint, []
    weights = has_weights(model, checkpoint)
    encoder = args.encoder or (encoder_of_model(model) if weights and model != "tiny" else "filterbank")
    if not weights:
        notes.append(f"no SAM weights for {model}: a smart box gives the ellipse inscribed in it, and the boxes the "
                     f"simulated expert draws train as those ellipses (`al-loop weights download {model}` gives SAM's "
                     "masks)")
    elif model == "tiny":
        notes.append("the tiny SAM with random weights: its masks are meaningless shapes (a test fixture, not for maps)")
    if encoder == "filterbank":
        notes.append("the domain decoder learns on the filterbank encoder (classical multi-scale features, no weights): "
                     "the no-weights baseline, weaker than SAM's embeddings")
    return model, checkpoint, encoder, notes


def cmd_demo(args) -> int:
    import signal

    from al_loop.demo.run import DemoOptions, run_demo
    from al_loop.errors import ServerError

    if args.rounds < 1 or args.batch_size < 1:
        raise UsageError("--rounds and --batch-size must be at least 1")
    model, checkpoint, encoder, notes = _demo_models(args)
    for note in notes:
        print(f"note: {note}")
    options = DemoOptions(root=args.demo_dir, rounds=args.rounds, size=args.batch_size, images=args.images, model=model,
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
    from al_loop.models.sam import sam_id
    from al_loop.models.weights import has_weights
    from ml_backend.server import serve
    from ml_backend.settings import BackendSettings

    given = {name: getattr(args, name) for name in NAMES if getattr(args, name, None) is not None}
    settings = BackendSettings.resolve(**given)
    if has_weights(settings.model, settings.checkpoint):  # a named checkpoint that is not there fails here
        sam_id(settings.model, settings.checkpoint)
    else:
        print(f"al-loop: no SAM weights for {settings.model}: smart boxes answer the ellipse inscribed in each box "
              f"(the box proxy) and point prompts are refused; `al-loop weights download {settings.model}` gives "
              "SAM's masks", file=sys.stderr)
    if settings.model == "tiny":
        print("al-loop: serving the tiny SAM (random weights): masks are meaningless; for tests and CI only", file=sys.stderr)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
