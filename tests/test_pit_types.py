"""Pit types without Label Studio: the typed label config, YOLO class names, the typed
oracle, a decoder trained on the real dataset's typed masks, the per-type simulation."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from al_loop.data.yolo import class_names, load_split
from al_loop.errors import DatasetError, SchemaError
from al_loop.loop.import_labels import box_regions, read_label_dir
from al_loop.studio.label_config import default_label_config, parse_label_config, typed_label_config
from al_loop.studio.regions import probability_regions
from al_loop.training.oracle import BoxOracle

from .conftest import HIRISE

ROOT = Path(__file__).resolve().parents[1]
needs_hirise = pytest.mark.skipif(not (HIRISE / "data.yaml").is_file(), reason=f"the HiRISE dataset is absent ({HIRISE})")


def test_shipped_typed_config_has_five_types_on_every_control():
    schema = parse_label_config(default_label_config("pit-types.xml"))
    assert schema.type_names == ("type 1", "type 2", "type 3", "type 4", "type 5")
    assert {c.kind: c.labels for c in schema.controls}["rectanglelabels"] == schema.type_names
    assert schema.type_of("type 4") == 4
    with pytest.raises(SchemaError, match="not one of the pit types"):
        schema.type_of("pit")
    # the binary config is the one-type case
    assert parse_label_config(default_label_config()).type_names == ("pit",)


def test_typed_config_carries_names_and_hints_and_refuses_bad_names():
    xml = typed_label_config(["skylight", "pit & crater"], ["a hole into a cave", "a collapse"])
    schema = parse_label_config(xml)
    assert schema.type_names == ("skylight", "pit & crater")
    assert 'hint="a hole into a cave"' in xml
    assert xml.count("<Header") == 4 and "Smart box:" in xml  # the task, and a caption over each row of types
    for bad in (["a", "a"], [], ["ok", " "]):
        with pytest.raises(SchemaError):
            typed_label_config(bad)


@needs_hirise
def test_class_names_come_from_data_yaml(tmp_path):
    assert class_names(HIRISE) == [f"type {i}" for i in range(1, 6)]
    (tmp_path / "data.yaml").write_text("nc: 3\nnames: ['a', 'b']\n")
    with pytest.raises(DatasetError, match="nc is 3"):
        class_names(tmp_path)
    (tmp_path / "data.yaml").write_text("names: {0: skylight, 1: pit}\n")
    assert class_names(tmp_path) == ["skylight", "pit"]


def test_typed_pre_annotation_takes_each_pit_s_most_likely_type():
    """Two pits: one mostly type 2, one type 1; each region is labelled and scored by its type."""
    schema = parse_label_config(typed_label_config(["a", "b", "c"]))
    probs = np.zeros((4, 40, 40), np.float32)
    probs[0] = 1.0
    probs[:, 5:15, 5:15] = np.array([0.1, 0.2, 0.6, 0.1])[:, None, None]
    probs[:, 25:35, 25:35] = np.array([0.2, 0.7, 0.05, 0.05])[:, None, None]
    regions, confidence = probability_regions(probs, schema.mask_control, min_pixels=4)
    got = sorted((r["value"]["brushlabels"][0], round(r["score"], 3)) for r in regions)
    assert got == [("a", 0.7), ("b", 0.6)]
    with pytest.raises(Exception, match="scores 3 pit type"):
        probability_regions(probs, parse_label_config(default_label_config()).mask_control, min_pixels=4)


def test_yolo_rows_become_typed_boxes_in_percent(tmp_path):
    (tmp_path / "a.txt").write_text("2 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.0001 0.1")  # no final newline; one sub-pixel box
    (tmp_path / "b.txt").write_text("")
    labels = read_label_dir(tmp_path)
    assert set(labels) == {"a", "b"} and labels["b"].shape == (0, 5)
    schema = parse_label_config(default_label_config("pit-types.xml"))
    regions = box_regions(labels["a"], schema, size=(900, 900))
    assert len(regions) == 1
    value = regions[0]["value"]
    assert value["rectanglelabels"] == ["type 3"]
    assert (value["x"], value["y"], value["width"], value["height"]) == pytest.approx((40, 30, 20, 40))
    # a binary project imports every class as its one type
    binary = box_regions(labels["a"], parse_label_config(default_label_config()), size=None)
    assert [r["value"]["rectanglelabels"] for r in binary] == [["pit"], ["pit"]]


@needs_hirise
def test_decoder_trained_on_typed_masks_of_the_real_valid_split_predicts_several_types(shared_cache):
    """The valid split's 38 tiles, typed ellipses from the expert boxes, filter-bank embeddings:
    the decoder learns five types and its pits on held-out tiles are of more than one type."""
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.embeddings.embed import embed_files
    from al_loop.evaluation.evaluate import evaluate_decoder
    from al_loop.evaluation.metrics import typed_components
    from al_loop.models.decoder import predict_tile_classes
    from al_loop.models.encoders import LazyEncoder
    from al_loop.models.pits import min_object_pixels
    from al_loop.training.train import TrainingSet, train_decoder

    tiles, _ = load_split(HIRISE, "valid")
    cache, encoder = EmbeddingCache(shared_cache), LazyEncoder("filterbank")  # the valid split's, shared
    refs = embed_files([t.image for t in tiles], encoder, cache, progress=False).refs
    oracle = BoxOracle()
    train, held = list(range(0, 30)), list(range(30, len(tiles)))
    data = TrainingSet(types=5)
    for i in train:
        data.add(cache.load(refs[i].sha256, encoder.id), oracle.labels(tiles[i]))
    decoder = train_decoder(data, epochs=60, seed=0, progress=False)
    assert decoder.types == 5 and len(decoder.class_weights) == 6
    seen = set()
    for i in train[:12] + held:
        probs = predict_tile_classes(decoder, cache.load(refs[i].sha256, encoder.id), tiles[i].size)
        labels = np.where(probs[1:].sum(axis=0) >= 0.5, probs[1:].argmax(axis=0) + 1, 0)
        seen |= set(typed_components(labels, probs, min_object_pixels(tiles[i].size, 64))[1].tolist())
    assert len(seen) > 1, f"the decoder's pits are all of type(s) {seen}"
    metrics = evaluate_decoder(decoder, [refs[i] for i in held], [oracle.labels(tiles[i]) for i in held],
                       [tiles[i].boxes for i in held], cache, encoder.id, type_names=class_names(HIRISE),
                       expert_types=[tiles[i].classes + 1 for i in held])
    expert = sum(metrics[f"objects_expert[type {k}]"] for k in range(1, 6))
    assert expert == sum(len(tiles[i].boxes) for i in held)
    assert 0.0 <= metrics["typed_object_recall"] <= metrics["object_recall"] + 1e-9  # typed right is rarer than found


def small_copy(root: Path, train: int, valid: int) -> Path:
    """The first tiles of each split of the HiRISE set, with their labels and data.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(HIRISE / "data.yaml", root / "data.yaml")
    for split, count in (("train", train), ("valid", valid)):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for image in sorted((HIRISE / split / "images").iterdir())[:count]:
            shutil.copy(image, root / split / "images" / image.name)
            label = HIRISE / split / "labels" / (image.stem + ".txt")
            if label.is_file():
                shutil.copy(label, root / split / "labels" / label.name)
    return root


@needs_hirise
def test_simulate_classes_reports_per_type_figures(shared_cache, tmp_path):
    dataset = small_copy(tmp_path / "data", train=24, valid=8)
    out = subprocess.run(
        [sys.executable, "-m", "al_loop.cli", "simulate", "--dataset", dataset, "--steps", "4,8", "--strategy",
         "rare_types,random", "--encoder", "filterbank", "--oracle", "box", "--seeds", "1", "--epochs", "8", "--classes",
         "--report", tmp_path / "sim.json", "--png", tmp_path / "curve.png", "--cache-dir", shared_cache, "--quiet"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "per type: object recall / precision" in out.stdout and "type 5" in out.stdout
    payload = json.loads((tmp_path / "sim.json").read_text())
    row = payload["rounds"][-1]
    assert {"typed_object_recall", "object_recall[type 1]", "confusion[type 5>type 1]"} <= set(row)
    assert "object_recall[type 3]_std" in payload["summary"][0]
    assert (tmp_path / "curve-types.png").stat().st_size > 1000


def test_init_type_flags_make_the_config(tmp_path):
    """--types NAMES, --types data.yaml (names and the expert's descriptions), --label-config FILE."""
    from al_loop.cli import build_parser
    from al_loop.cli.init import label_config_of

    def config(*flags):
        args = build_parser().parse_args(["init", "--label-studio-url", "http://x", "--images", str(tmp_path), *flags])
        return label_config_of(args)

    assert config() is None  # the binary default
    assert parse_label_config(config("--types", "skylight, pit crater")).type_names == ("skylight", "pit crater")
    (tmp_path / "pits.yaml").write_text("names: ['1', '2']\ndescriptions: ['opens into a cave', 'a bowl']\n")
    xml = config("--types", str(tmp_path / "pits.yaml"))
    assert parse_label_config(xml).type_names == ("type 1", "type 2") and 'hint="opens into a cave"' in xml
    (tmp_path / "mine.xml").write_text(default_label_config("pit-types.xml"))
    assert config("--label-config", str(tmp_path / "mine.xml")) == default_label_config("pit-types.xml")
    # Built-in configs by name, from any folder (not only the checkout's label_config/).
    assert parse_label_config(config("--label-config", "pit-types")).type_names == tuple(f"type {i}" for i in range(1, 6))
    assert config("--label-config", "skylights") == default_label_config()
    with pytest.raises(SchemaError, match="a built-in name: skylights, pit-types"):
        config("--label-config", "pit_types")
    (tmp_path / "bad.yaml").write_text("names: ['1', '2']\ndescriptions: ['only one']\n")
    with pytest.raises(DatasetError, match="one per class"):
        config("--types", str(tmp_path / "bad.yaml"))


def test_a_catalogue_class_beyond_the_types_is_refused_before_label_studio(tmp_path):
    from al_loop.errors import LoopError
    from al_loop.loop.import_labels import check_classes

    (tmp_path / "a.txt").write_text("5 0.5 0.5 0.1 0.1\n")  # class 5: a sixth type
    labels = read_label_dir(tmp_path)
    with pytest.raises(LoopError, match="class 5, but the project has 5 pit types"):
        check_classes(labels, parse_label_config(default_label_config("pit-types.xml")))
    check_classes(labels, parse_label_config(default_label_config()))  # one type: every class is "pit"
    (tmp_path / "b.txt").write_text("1.5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LoopError, match="whole number"):
        read_label_dir(tmp_path)
    with pytest.raises(LoopError, match="not a folder"):
        read_label_dir(tmp_path / "missing")


def test_a_validation_answer_counts_typed_pits():
    """Boxes are typed by their labels; a brush-only answer's blobs by the type painted over them."""
    from al_loop.studio.answers import Answer, expert_objects

    schema = parse_label_config(default_label_config("pit-types.xml"))
    truth = np.zeros((100, 100), np.uint8)
    truth[10:30, 10:30] = 4
    truth[60:70, 60:90] = 2
    brush_only = expert_objects(Answer(1, []), truth, schema)
    assert sorted(brush_only[1].tolist()) == [2, 4] and len(brush_only[0]) == 2
    box = {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
           "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["type 5"]}}
    boxes, types = expert_objects(Answer(1, [box]), truth, schema)
    assert types.tolist() == [5] and boxes.tolist() == [[10, 10, 30, 30]]
