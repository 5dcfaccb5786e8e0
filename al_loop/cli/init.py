"""``al-loop init``: bind a workspace to a Label Studio project, import the tiles, keep the loop's settings."""
from __future__ import annotations

import sys
from pathlib import Path

from al_loop.cli.options import deprecated, quiet_flag, settings_flags, settings_of, token_of, workspace_flag, workspace_of
from al_loop.errors import UsageError
from al_loop.settings import KEPT


def add_parser(sub) -> None:
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
    settings_flags(init, "label_studio_url", "label_studio_api_key")
    deprecated(init, "--label-studio", "--label-studio-url", "label_studio_url")
    source = init.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, help="directory of tiles to import through a local-files storage")
    source.add_argument("--tasks", type=Path, help="JSON file of Label Studio tasks to import")
    init.add_argument("--project", type=int, help="bind to this existing project instead of creating one")
    init.add_argument("--title", default="Mars pits (al-loop)", help="title of the project made (default 'Mars pits (al-loop)')")
    init.add_argument("--backend-url", help="URL of `al-loop serve-backend`, connected to the project")
    settings_flags(init, *KEPT)
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
    workspace_flag(init)
    quiet_flag(init)


def run(args) -> int:
    from al_loop.loop.init import check_weights, init_workspace

    s = settings_of(args)
    if not s.label_studio_url:
        raise UsageError("no Label Studio address: pass --label-studio-url (e.g. http://localhost:8080) or set LABEL_STUDIO_URL")
    if note := check_weights(s.to_keep()):
        print(f"note: {note}", file=sys.stderr)
    report = init_workspace(
        workspace_of(s), s.label_studio_url, token_of(s), images=args.images, tasks_file=args.tasks,
        project=args.project, title=args.title, backend_url=args.backend_url, settings=s.to_keep(),
        val_size=args.val_size, label_config=label_config_of(args), labels_dir=args.labels, local_root=s.local_root,
        progress=not args.quiet,
    )
    for reason in report.skipped_files:
        print(f"warning: {reason}", file=sys.stderr)
    _print_bound(report, s, args.backend_url)
    return _print_next(report, args.labels)


def _print_bound(report, s, backend_url: str | None) -> None:
    """The project bound, its tasks, the validation set and how the tiles were kept apart."""
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
        print(f"ML backend {backend_url} connected (id {report.ml_backend})")
    print("settings kept in the workspace: " + ", ".join(f"{k} {v}" for k, v in s.to_keep().items()))


def _print_next(report, labels: Path | None) -> int:
    """What the catalogue import brought, and what to run next."""
    if report.imported is not None:
        imported = report.imported
        print(f"imported {imported.annotations} annotation(s) from {labels}: "
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


def label_config_of(args) -> str | None:
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
