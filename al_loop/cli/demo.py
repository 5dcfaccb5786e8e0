"""``al-loop demo``: the whole loop on this machine, with a local Label Studio and a simulated expert."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from al_loop.cli.options import deprecated, quiet_flag
from al_loop.cli.output import print_curve
from al_loop.demo import DATABASES
from al_loop.errors import UsageError
from al_loop.settings import MODELS


def add_parser(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole loop on this machine: a local Label Studio, the ML backend, sample tiles, a simulated expert",
        description="Starts a private Label Studio (SQLite in its own data dir, or --database postgresql) and the ML "
        "backend on loopback, writes "
        "generated Mars-like tiles with pits and skylights (or takes --images), runs `init` and --rounds rounds of "
        "`next-batch` while a simulated expert answers each batch through the Label Studio API, then prints the "
        "learning curve and the address, user and password to open Label Studio with. The last round's batch is "
        "left unanswered, pre-annotated, for you to look at. Without SAM weights a box becomes the ellipse "
        "inscribed in it and the decoder learns on the filterbank encoder, and it says so.",
    )
    demo.add_argument("--rounds", type=int, default=3, help="training rounds after round 0 (default 3)")
    demo.add_argument("--batch-size", type=int, default=5, help="tasks pushed per round (default 5)")
    deprecated(demo, "--size", "--batch-size", "batch_size", type=int)
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
    deprecated(demo, "--workspace", "--demo-dir", "demo_dir", type=Path)
    demo.add_argument("--keep-running", action=argparse.BooleanOptionalAction, default=None,
                      help="keep Label Studio and the backend up until Ctrl-C (default: yes when run from a terminal, "
                      "so the address it prints stays live; --no-keep-running stops them at the end)")
    demo.add_argument("--database", choices=DATABASES, default="sqlite",
                      help="Label Studio's database: sqlite (default, in its data dir) or postgresql (a private "
                      "server of the system's PostgreSQL, as a team would run it)")
    demo.add_argument("--annotators", type=int, default=1,
                      help="simulated experts answering each task (default 1); 2 or more: a team with habits of its "
                      "own (one misses small pits, one draws loose outlines), each round's agreement printed, and "
                      "the decoder trained on their consensus")
    demo.add_argument("--json", nargs="?", const=True, default=False, metavar="FILE", help="the run (database, "
                      "each round's figures) as JSON: printed at the end, or written to FILE when one is named")
    quiet_flag(demo)


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


def run(args) -> int:
    import signal

    from al_loop.demo.run import DemoOptions, run_demo
    from al_loop.errors import ServerError

    if args.rounds < 1 or args.batch_size < 1 or args.annotators < 1:
        raise UsageError("--rounds, --batch-size and --annotators must be at least 1")
    model, checkpoint, encoder, notes = _demo_models(args)
    for note in notes:
        print(f"note: {note}")
    options = DemoOptions(root=args.demo_dir, rounds=args.rounds, size=args.batch_size, images=args.images, model=model,
                          checkpoint=checkpoint, encoder=encoder, port=args.port, epochs=args.epochs,
                          progress=not args.quiet, database=args.database, annotators=args.annotators)
    keep = args.keep_running if args.keep_running is not None else sys.stdin.isatty() and sys.stdout.isatty()
    # Ctrl-C and SIGTERM (docker stop, kill) stop both servers; a shell that started us in the
    # background may have left SIGINT ignored, so both handlers are set here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        demo = run_demo(options, say=lambda line: print(line, flush=True))
    except ServerError as exc:
        raise ServerError(f"{exc}; is port {args.port} free? (--port picks another)") from None
    try:
        if args.json is True:
            print(json.dumps(demo.summary(), indent=2))
        elif args.json:
            Path(args.json).write_text(json.dumps(demo.summary(), indent=2))
        _show_demo(demo, keep)
        if keep:
            print("Label Studio and the ML backend keep running; Ctrl-C stops them", flush=True)
            while demo.label_studio.process.running and demo.backend.process.running:
                time.sleep(1)
            print("a server exited on its own; stopping the other", flush=True)
    except KeyboardInterrupt:
        print("\nstopping Label Studio and the ML backend ...", flush=True)
    finally:
        demo.stop()
    print("stopped" if keep else "Label Studio and the ML backend have stopped; `al-loop demo --keep-running` (make demo "
          "DEMO_ARGS=--keep-running) keeps them up to open the tab")
    return 0


def _show_demo(demo, keep: bool) -> None:
    """The demo's learning curve (also drawn to curve.png) and where to look next."""
    from al_loop.evaluation.curves import plot_curves
    from al_loop.evaluation.metrics import FIGURE5

    rows = demo.workspace.curve()
    print(f"\nlearning curve ({rows[0]['tiles']:.0f} validation tiles):" if rows else "\nno evaluated round yet")
    print_curve(rows)
    png = demo.workspace.root / "curve.png"
    if rows:
        plot_curves([{**r, "strategy": "demo"} for r in rows], FIGURE5, png, "al-loop demo: learning curve")
        print(f"curve drawn to {png}")
    last = demo.reports[-1]
    view = f"{demo.label_studio.url}/projects/{demo.project}/data?tab={last.view_id}" if last.view_id else ""
    if demo.report:
        print(f"report: {demo.report} (open it in a browser)")
    print(f"workspace: {demo.workspace.root} (try `al-loop status --workspace {demo.workspace.root}`)", flush=True)
    if not keep:
        return  # the servers stop next: an address printed now would be dead
    print(f"\nLabel Studio: {demo.label_studio.url}  user {demo.label_studio.username}  password {demo.label_studio.password}")
    print(f"ML backend: {demo.backend.url}  (API token for al-loop: LABEL_STUDIO_API_KEY={demo.label_studio.token})")
    print(f"open the tab 'Round {last.round}' ({view}): its tasks carry the decoder's pre-annotations"
          + ("" if demo.simulated else "; these tiles came without boxes: label them yourself, then run "
             f"`al-loop next-batch --workspace {demo.workspace.root}` with that API token"), flush=True)
