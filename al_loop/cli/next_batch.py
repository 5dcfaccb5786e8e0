"""``al-loop next-batch``: train on the answers so far, evaluate, and push the next tiles to label."""
from __future__ import annotations

import sys

from al_loop.cli.options import (
    deprecated,
    json_flag,
    quiet_flag,
    settings_flags,
    settings_of,
    token_of,
    workspace_flag,
    workspace_of,
)
from al_loop.cli.output import say
from al_loop.settings import KEPT


def add_parser(sub) -> None:
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
    settings_flags(nb, *KEPT)
    deprecated(nb, "--size", "--batch-size", "batch_size", type=int)
    nb.add_argument("--save", action="store_true", help="keep the settings given as flags for the rounds after this one")
    nb.add_argument("--force", action="store_true", help="push a new batch even though the last one is not fully answered")
    nb.add_argument("--accept-deleted", action="store_true", help="drop tasks deleted in Label Studio from the loop instead of stopping")
    settings_flags(nb, "label_studio_api_key")
    workspace_flag(nb)
    json_flag(nb, "the round (timings per step included)")
    quiet_flag(nb)


def run(args) -> int:
    import json
    from dataclasses import asdict

    from al_loop.loop.next_batch import next_batch

    s = settings_of(args)
    workspace = workspace_of(s)
    config = workspace.config()  # a WorkspaceError when there is none, before anything else
    if args.save:
        given = {name: getattr(s, name) for name in KEPT if s.source(name) == "flag"}
        workspace.save_settings(given)
        say(args, "kept for the rounds after: " + (", ".join(f"{k} {v}" for k, v in given.items()) or "nothing given"))
    report = next_batch(workspace, token_of(s), s, force=args.force, accept_deleted=args.accept_deleted,
                        progress=not args.quiet)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    _print_round(report, f"{config.label_studio_url.rstrip('/')}/projects/{config.project}/data", s.annotators)
    _print_team(workspace, report, s.annotators)
    from al_loop.report import write_report

    print(f"report: {write_report(workspace, s)}")
    return 0


def _print_team(workspace, report, annotators: int) -> None:
    """A team's agreement on the batch just answered, and the tasks in the Review tab."""
    if annotators < 2 or report.status != "pushed":
        return
    team = workspace.team_rounds().get(report.round - 1)
    if team:
        iou = "n/a" if team["mask_iou"] is None else f"{team['mask_iou']:.2f}"
        kappa = "n/a" if team["type_kappa"] is None else f"{team['type_kappa']:.2f}"
        print(f"team agreement on round {report.round - 1}'s {team['tasks']} tasks: mask IoU {iou}, type kappa {kappa}, "
              f"{team['pits_by_one']} of {team['pits']} pits drawn by one expert only")
    review = sorted(t for t, r in workspace.team_records().items() if r["review"] == "pending")
    if review:
        print(f"{len(review)} task(s) the experts disagree on are in the tab 'Review' {review}: a reviewer's answer "
              "there becomes what the decoder learns from (until then they are left out)")


def _print_round(report, project_data_url: str, annotators: int = 1) -> None:
    from al_loop.evaluation.metrics import TABLE

    tab = f"tab 'Round {report.round}'" + (f" ({project_data_url}?tab={report.view_id})" if report.view_id else "")
    if report.joined:
        print(f"{len(report.joined)} task(s) new in Label Studio joined the pool: {report.joined}")
    if report.status == "waiting":
        if report.awaited:
            wanted = f" from {annotators} different experts" if annotators > 1 else ""
            print(f"round {report.round}: {len(report.awaited)} pushed task(s) still await an answer{wanted}: "
                  f"{report.awaited}" + (" (`al-loop status` lists who has answered what)" if annotators > 1 else ""))
        if report.in_review:
            print(f"{len(report.in_review)} task(s) in the tab 'Review' await a reviewer's answer: {report.in_review}")
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
    if report.stopping is not None:
        print(report.stopping.describe())
