"""``al-loop status``: where a workspace's loop stands, or what a decoder file is (``--decoder``).

The record and its JSON schema are :mod:`al_loop.loop.status`'s; this module prints them."""
from __future__ import annotations

from pathlib import Path

from al_loop.cli.options import json_flag, settings_of, workspace_flag, workspace_of
from al_loop.cli.output import fit_line
from al_loop.errors import UsageError


def add_parser(sub) -> None:
    status = sub.add_parser("status", help="rounds, task counts, tasks still awaited, decoders and the last metrics of a workspace",
                            description="Where the loop stands: task counts, rounds with their settings, tasks still "
                            "awaited, every decoder version with the tasks it was trained on and its evaluation.")
    workspace_flag(status)
    status.add_argument("--decoder", type=Path, help="show what a decoder file is instead: encoder and weights, types, "
                        "tiles, epochs, held-out fit, normalisation")
    json_flag(status, "the status")


def run(args) -> int:
    import json

    from al_loop.loop.status import loop_status

    if args.decoder:
        return _show_decoder(args.decoder, args.json)
    s = settings_of(args)
    status = loop_status(workspace_of(s), s)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return 0
    counts, rounds, engine = status.counts, status.rounds, status.engine
    print(f"project {status.project} at {status.label_studio}, encoder {s.encoder}, strategy {s.strategy}, "
          f"{s.batch_size} tasks a round, {s.epochs} epochs (`al-loop config` says where each comes from)")
    print(f"engine: {engine.runtime} {engine.precision}: {engine.reason}" if engine.runtime
          else f"engine: {engine.reason}")
    print(f"validation {counts['validation_labelled']}/{counts['validation']} labelled; pool: {counts['labelled']} labelled, "
          f"{counts['unlabelled']} unlabelled, {counts['skipped']} skipped, {counts['deleted']} deleted"
          + (f"; {counts['buffer']} kept apart (touching a validation tile)" if counts["buffer"] else ""))
    print(f"rounds: {len(rounds)}" + ("" if not rounds else f" (last: round {rounds[-1]['round']}, {rounds[-1]['strategy']})"))
    if rounds and rounds[-1]["finished_at"] is None:
        print(f"round {rounds[-1]['round']} was interrupted while pushing: run `al-loop next-batch` to finish it")
    if status.awaited:
        print(f"awaited (as of the last next-batch): {len(status.awaited)} task(s) {status.awaited}")
    _print_team(status.team)
    _print_decoders(status.decoders, status.decoder_problem)
    if status.stopping.get("history"):
        print(status.stopping["line"])
    last = status.last_metrics
    if last:
        from al_loop.evaluation.metrics import TABLE  # imports torch: only when there is something to show

        print(f"last metrics (round {last['round']}, {last['labelled']} labelled tiles): "
              + "  ".join(f"{m} {last[m]:.3f}" for m in TABLE if m in last))
    if status.labelled_objects:
        print(f"labelled pits per type (round {rounds[-1]['round']}'s training tiles): "
              + ", ".join(f"{name} {n:.0f}" for name, n in status.labelled_objects.items()))
    return 0


def _print_team(team: dict) -> None:
    """Per expert, what is done and awaited of the last round, and a team's agreement per round."""
    experts = team.get("experts") or []
    if not experts:
        return
    print(f"experts ({team['annotators']} answer(s) wanted per task; as of the last next-batch):")
    for e in experts:
        seconds = "time not recorded" if e["seconds_per_tile"] is None else f"{e['seconds_per_tile']:.0f} s a tile"
        agree = "" if e["iou_with_consensus"] is None else (
            f", with the consensus: IoU {e['iou_with_consensus']:.2f}, {e['missed']} pit(s) missed, {e['extra']} extra")
        print(f"  {e['annotator']}: last round {len(e['done'])} done, {len(e['awaited'])} awaited{' ' + str(e['awaited']) if e['awaited'] else ''}; "
              f"{e['tiles']} tiles in all, {seconds}{agree}")
    for number, r in (team.get("rounds") or {}).items():
        iou = "n/a" if r["mask_iou"] is None else f"{r['mask_iou']:.2f}"
        kappa = "n/a" if r["type_kappa"] is None else f"{r['type_kappa']:.2f}"
        print(f"  round {number}'s tasks: team mask IoU {iou}, type kappa {kappa}, {r['pits_by_one']} of {r['pits']} "
              f"pits drawn by one expert only, {r['review']} to review ({r['reviewed']} reviewed)")
    if team.get("in_review"):
        policy = "next-batch waits for them" if team["review"] == "wait" else "left out of training until then"
        print(f"  in the Review tab, awaiting a reviewer's answer ({policy}): {team['in_review']}")


def _print_decoders(decoders: list[dict], problem: str | None) -> None:
    if problem:
        print(f"decoder: DAMAGED: {problem}; the backend pre-annotates nothing until then")
    for d in decoders:
        trained = "?" if d["trained_on"] is None else len(d["trained_on"])
        scored = "not evaluated" if d["evaluation"] is None else \
            f"evaluated on {len(d.get('validated_on') or [])} validation tile(s)"
        print(f"decoder {d['version']}: trained on {trained} task(s), {scored}" + (" <- in use" if d["latest"] else ""))


def _show_decoder(path: Path, as_json: bool) -> int:
    """What a decoder file is: its encoder and weights, types, tiles, epochs, held-out fit, normalisation."""
    import json

    from al_loop.data.radiometry import describe_decoder
    from al_loop.loop.status import decoder_file

    if not path.is_file():
        raise UsageError(f"no decoder file at {path}")
    about = decoder_file(path)
    if as_json:
        print(json.dumps(about, indent=2, default=str))
        return 0
    held = about.get("held_out") or about.get("evaluation")
    names = f" ({', '.join(about['type_names'])})" if about.get("type_names") else ""
    print(f"decoder {path}: version {about.get('version', '?')}, {about['types']} type(s){names}")
    print(f"  encoder {about.get('encoder', '?')} ({about['encoder_id']}), checkpoint {about.get('checkpoint') or '-'}, "
          f"precision {about.get('precision', 'fp32')}")
    trained = about.get("trained_on")
    side = f" of {about['tile_side']} px" if about.get("tile_side") else ""
    print(f"  trained on {about.get('tiles', len(trained or []))} tiles{side}, {about.get('epochs', '?')} epochs"
          + (f", {about['oracle']} oracle, from {about['dataset']}" if about.get("oracle") else ""))
    metrics = held.get("metrics", held) if isinstance(held, dict) else None
    print("  held-out fit: " + (fit_line(metrics) if metrics else "none recorded"))
    print(f"  normalisation: {describe_decoder(about)}")
    sizes = about.get("pit_sizes")
    print("  training pits: " + (f"{sizes['count']}, {sizes['p5_pixels']:.0f}-{sizes['max_pixels']:.0f} pixels "
                                 f"(5th percentile to largest; median {sizes['median_pixels']:.0f}): map's default "
                                 "size limits" if sizes else "sizes not recorded: map applies no default size limits"))
    return 0
