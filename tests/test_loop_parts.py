"""The pure pieces of next-batch: label checks, the document root, regions, the curve query."""
from __future__ import annotations

import numpy as np

from al_loop.demo.expert import image_name
from al_loop.loop.workspace import Workspace, WorkspaceConfig
from al_loop.studio.answers import Answer, unknown_labels
from al_loop.studio.fetch import local_files_root
from al_loop.studio.label_config import default_label_config, parse_label_config
from al_loop.studio.regions import brush_to_mask, probability_regions

SCHEMA = parse_label_config(default_label_config())


def test_unknown_labels_and_controls_are_named():
    good = {"type": "rectanglelabels", "from_name": "box", "value": {"rectanglelabels": ["pit"]}}
    wrong_label = {"type": "brushlabels", "from_name": "mask", "value": {"brushlabels": ["crater"]}}
    wrong_control = {"type": "keypointlabels", "from_name": "dots", "value": {"keypointlabels": ["pit"]}}
    other = {"type": "choices", "from_name": "quality", "value": {"choices": ["blurry"]}}  # not a region: ignored
    assert unknown_labels(Answer(1, [good, other]), SCHEMA) == []
    problems = unknown_labels(Answer(1, [good, wrong_label, wrong_control]), SCHEMA)
    assert len(problems) == 2 and "'crater'" in problems[0] and "'dots'" in problems[1]


def test_local_files_root_is_found_from_the_folder_and_a_url(tmp_path):
    folder = tmp_path / "root" / "mars" / "tiles"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.png").write_bytes(b"x")
    assert local_files_root(folder, "/data/local-files/?d=mars/tiles/sub/a.png") == tmp_path / "root"
    assert local_files_root(folder, "/data/local-files/?d=tiles/sub/a.png") == tmp_path / "root" / "mars"
    assert local_files_root(folder, "/data/local-files/?d=elsewhere/a.png") is None
    assert local_files_root(folder, "/data/upload/1/a.png") is None


def test_probability_regions_are_one_brush_per_object():
    prob = np.zeros((64, 80), np.float32)
    prob[5:15, 5:15] = 0.9
    prob[40:50, 60:70] = 0.8
    prob[30, 30] = 0.7  # a speck under the object size
    regions, confidence = probability_regions(prob, SCHEMA.mask_control, min_pixels=4)
    assert len(regions) == 2
    assert all(r["value"]["brushlabels"] == ["pit"] and r["from_name"] == "mask" for r in regions)
    masks = [brush_to_mask(r) for r in regions]
    assert masks[0].sum() == 100 and masks[0][5:15, 5:15].all() and masks[1][40:50, 60:70].all()
    assert regions[0]["score"] == np.float32(0.9).item()
    assert 0.9 < confidence < 1.0


def test_image_name_reads_every_url_shape():
    assert image_name("/data/local-files/?d=tiles/a%20b.png") == "a b.png"
    assert image_name("/data/upload/3/abc-tile.jpg") == "abc-tile.jpg"
    assert image_name("https://example.org/x/tile.tif?sig=1") == "tile.tif"


def test_curve_holds_finished_evaluated_rounds_only(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    workspace.create(WorkspaceConfig("http://ls", 1), [(1, "a", "validation"), (2, "b", "pool"), (3, "c", "pool")])
    with workspace.transaction() as db:
        db.execute("INSERT INTO rounds VALUES (0, 1, 2, 'cold_start', 5, 0, NULL, 'round-0', 7, NULL, NULL)")
        db.execute("INSERT INTO rounds VALUES (1, 3, 4, 'entropy', 5, 1, 'round-1.pt', 'round-1', 8, NULL, NULL)")
        db.execute("INSERT INTO rounds VALUES (2, 5, NULL, 'entropy', 5, 2, 'round-2.pt', 'round-2', NULL, NULL, NULL)")
        db.executemany("INSERT INTO metrics VALUES (?, ?, ?)", [(1, "miou", 0.5), (1, "micro_f1", 0.4), (2, "miou", 0.6)])
        db.execute("INSERT INTO round_tasks (round, task_id, rank, score, prediction_id) VALUES (2, 3, 0, 0.1, NULL)")
    rows = workspace.curve()
    assert rows == [{"round": 1, "labelled": 1, "model_version": "round-1", "strategy": "entropy", "miou": 0.5, "micro_f1": 0.4,
                     # a round recorded before the validation set was kept: its set is unknown, not "partial"
                     "validation_scored": None, "validation_of": None, "partial": False, "changed": False}]
    assert workspace.awaited() == [3]


def test_a_curve_says_what_each_round_was_scored_on(tmp_path, capsys):
    from al_loop.cli import main
    from al_loop.evaluation.metrics import FIGURE5, TABLE
    from al_loop.loop.workspace import RoundPlan, StateUpdate

    workspace = Workspace(tmp_path / "ws")
    roles = [(1, "a", "validation"), (2, "b", "validation"), (3, "c", "validation"), (4, "d", "pool"), (5, "e", "pool")]
    workspace.create(WorkspaceConfig("http://ls", 1), roles)
    scored = {1: [1], 2: [1, 2, 3], 3: [1, 2, 3]}  # round 1 before the expert finished the validation tiles
    for number, ids in scored.items():
        workspace.record_plan(RoundPlan(number, "entropy", 2, number, f"round-{number}.pt", StateUpdate({}), {}, [],
                                        dict.fromkeys((*FIGURE5, *TABLE), 0.1 * number),
                                        validation={"scored": ids, "of": 3}))
        workspace.finish_round(number, None)
    rows = workspace.curve()
    assert [(r["validation_scored"], r["validation_of"], r["partial"], r["changed"]) for r in rows] == [
        (1, 3, True, False), (3, 3, False, True), (3, 3, False, False)]
    assert main(["curve", "--workspace", str(workspace.root), "--png", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "1/3*" in out and "3/3!" in out and "partial" in out and "differs from the row above" in out
    assert (tmp_path / "c.png").stat().st_size > 1000
