"""``al-loop serve-backend``: run the Label Studio ML backend under gunicorn.

The only module of ``al_loop`` that imports ``ml_backend`` (tests/test_layout.py holds it)."""
from __future__ import annotations

import sys

from al_loop.cli.options import settings_flags
from al_loop.settings import NAMES, help_for


def add_parser(sub) -> None:
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
    settings_flags(serve, "host", "port", "model", "checkpoint", "precision", "runtime", "cache_dir", "encoder",
                   "epochs", "local_root", "threads", "label_studio_url", "log_level")
    serve.add_argument("--workspace", help="al-loop workspace whose settings the backend reads, whose decoders "
                       "pre-annotate tasks and whose project it trains; " + help_for("workspace"))


def run(args) -> int:
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
