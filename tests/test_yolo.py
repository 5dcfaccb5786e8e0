import numpy as np
import pytest

from al_loop.data.yolo import load_split, parse_labels
from al_loop.errors import DatasetError


def test_parse_labels_quirks():
    # no final newline, a blank line, a sub-pixel box (dropped), a box past the edge (clipped)
    text = "1 0.5 0.5 0.2 0.1\n\n3 0.1 0.1 0.0001 0.05\n2 0.95 0.5 0.2 0.2"
    boxes, classes, dropped = parse_labels(text, (900, 900))
    assert dropped == 1
    assert classes.tolist() == [1, 2]
    assert np.allclose(boxes[0], [360, 405, 540, 495])
    assert boxes[1][2] == 900  # clipped to the tile


def test_parse_labels_malformed_names_line():
    with pytest.raises(DatasetError, match="lab.txt:2"):
        parse_labels("0 0.5 0.5 0.1 0.1\n0 0.5 oops 0.1 0.1", (10, 10), "lab.txt")
    with pytest.raises(DatasetError, match="expected"):
        parse_labels("0 0.5 0.5", (10, 10), "lab.txt")


def test_load_split_synthetic(synthetic_dataset):
    tiles, report = load_split(synthetic_dataset, "train")
    assert report.tiles == len(tiles) == 24
    assert report.boxes == sum(len(t.boxes) for t in tiles) > 0
    assert all(t.size == (256, 256) for t in tiles)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="data.yaml"):
        load_split(tmp_path, "train")


def test_hirise_quirks(hirise):
    tiles, report = load_split(hirise, "train")
    assert report.tiles == 405
    assert report.dropped_boxes >= 1  # the 0.09 px box
    assert all(t.size == (900, 900) for t in tiles)
    valid, _ = load_split(hirise, "valid")
    assert len(valid) == 38
