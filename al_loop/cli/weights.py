"""``al-loop weights``: download, list and prepare SAM checkpoints."""
from __future__ import annotations

import sys
from pathlib import Path

from al_loop.settings import MODELS, OFFICIAL_MODELS


def add_parser(sub) -> None:
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


def run(args) -> int:
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
