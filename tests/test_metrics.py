import numpy as np
import pytest

from al_loop.evaluation.metrics import Evaluation, ObjectCounts, PixelCounts, box_iou, match_boxes
from al_loop.models.pits import min_object_pixels


def test_pixel_metrics_hand_computed():
    truth = np.zeros((10, 10), bool)
    truth[0:4, 0:5] = True  # 20 px
    pred = np.zeros((10, 10), bool)
    pred[0:4, 0:3] = True  # 12 tp
    pred[9, 0:8] = True  # 8 fp
    c = PixelCounts()
    c.add(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (12, 8, 8, 72)
    s = c.summary()
    assert np.isclose(s["micro_precision"], 12 / 20) and np.isclose(s["micro_recall"], 12 / 20)
    assert np.isclose(s["accuracy"], 84 / 100)
    iou_fg, iou_bg = 12 / 28, 72 / 88
    assert np.isclose(s["miou"], (iou_fg + iou_bg) / 2)
    f1_bg = 2 * (72 / 80) * (72 / 80) / (72 / 80 + 72 / 80)
    assert np.isclose(s["macro_f1"], (0.6 + f1_bg) / 2)


def test_counts_pool_over_tiles():
    c = PixelCounts()
    c.add(np.ones((2, 2), bool), np.ones((2, 2), bool))
    c.add(np.zeros((2, 2), bool), np.ones((2, 2), bool))
    assert c.summary()["micro_recall"] == 0.5


def test_box_iou_and_matching():
    a = np.array([[0, 0, 10, 10]])
    assert np.isclose(box_iou(a, np.array([[0, 0, 10, 5]]))[0, 0], 0.5)
    assert box_iou(a, np.array([[20, 20, 30, 30]]))[0, 0] == 0
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 9]])
    truth = np.array([[0, 0, 10, 10]])
    assert match_boxes(pred, truth) == 1  # one to one: a pit is found once


def test_object_counts_from_masks():
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:30] = True  # matches the first box
    mask[60:62, 60:62] = True  # 4 px speckle: not a detection
    mask[70:90, 50:95] = True  # a false pit
    oc = ObjectCounts(min_pixels=9)
    oc.add(mask, np.array([[10, 10, 30, 30], [80, 0, 95, 15]]))
    s = oc.summary()
    assert (s["objects_found"], s["objects_predicted"], s["objects_expert"]) == (1, 2, 2)
    assert s["object_precision"] == 0.5 and s["object_recall"] == 0.5


def test_min_object_pixels_follows_cell_size():
    assert min_object_pixels((900, 900), 64) == round(2 * (900 / 64) ** 2)
    assert min_object_pixels((256, 256), 16) == 512


def test_evaluation_summary_has_paper_and_object_metrics():
    ev = Evaluation()
    truth = np.zeros((50, 50), bool)
    truth[5:25, 5:25] = True
    ev.add(truth.astype(float), truth, np.array([[5, 5, 25, 25]]))
    s = ev.summary()
    for key in ("miou", "micro_f1", "accuracy", "micro_precision", "micro_recall", "macro_f1", "object_recall", "object_precision", "object_f1"):
        assert key in s
    assert s["miou"] == 1.0 and s["object_f1"] == 1.0


def test_per_type_metrics_agree_with_a_hand_count():
    """Three expert pits on a 20x20 tile: A (type 1) found and typed right, B (type 2) found but
    typed 1, C (type 2) missed; and one false pit typed 2. Every figure below is counted by hand."""
    from al_loop.evaluation.metrics import Evaluation

    truth = np.zeros((20, 20), np.uint8)
    truth[2:6, 2:6] = 1  # A, 16 px
    truth[10:16, 10:16] = 2  # B, 36 px
    truth[2:5, 14:17] = 2  # C, 9 px
    boxes = np.array([[2, 2, 6, 6], [10, 10, 16, 16], [14, 2, 17, 5]], float)
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    for (rows, cols), kind in (((slice(2, 6), slice(2, 6)), 1), ((slice(10, 16), slice(10, 16)), 1),
                               ((slice(16, 19), slice(2, 5)), 2)):
        probs[0][rows, cols], probs[kind][rows, cols] = 0.1, 0.9
    evaluation = Evaluation.of_types(("type 1", "type 2"))
    evaluation.add(probs, truth, boxes, min_object_px=4, expert_types=np.array([1, 2, 2]))
    m = evaluation.summary()
    expected = {
        "iou[type 1]": 16 / 52, "iou[type 2]": 0.0, "f1[type 1]": 32 / 68, "type_miou": (16 / 52) / 2,
        "type_micro_f1": 32 / 122,
        "object_recall[type 1]": 1.0, "object_precision[type 1]": 0.5,
        "object_recall[type 2]": 0.0, "object_precision[type 2]": 0.0,
        "typed_object_recall": 1 / 3, "typed_object_precision": 1 / 3, "typed_object_recall_macro": 0.5,
        "objects_mistyped": 1, "missed[type 2]": 1, "missed[type 1]": 0,
        "confusion[type 2>type 1]": 1, "confusion[type 1>type 1]": 1, "confusion[type 2>type 2]": 0,
        # type-blind: A and B are found, C missed, one false pit
        "object_recall": 2 / 3, "object_precision": 2 / 3, "micro_recall": 52 / 61,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key


def test_binary_evaluation_has_no_per_type_figures():
    from al_loop.evaluation.metrics import Evaluation

    evaluation = Evaluation.of_types(("pit",))
    evaluation.add(np.full((8, 8), 0.9), np.ones((8, 8), bool), np.array([[0, 0, 8, 8]]))
    assert not any("[" in key for key in evaluation.summary())


def test_evaluate_on_plain_arrays_gives_the_loops_figures():
    """Issue 37: `al_loop.evaluate(pred_masks, true_masks)` with no decoder or workspace; the
    figures worked out by hand on one 20 x 20 tile."""
    import al_loop

    truth = np.zeros((1, 20, 20), bool)
    truth[0, 2:10, 2:10] = True  # 64 expert pixels
    pred = np.zeros((1, 20, 20), np.float32)
    pred[0, 2:10, 4:12] = 0.9  # 64 predicted, 48 of them on the expert's
    out = al_loop.evaluate(pred, truth)
    # tp 48, fp 16, fn 16, tn 320: pit IoU 48/80, background IoU 320/352
    assert out["iou_pit"] == pytest.approx(0.6)
    assert out["miou"] == pytest.approx((0.6 + 320 / 352) / 2)
    assert out["micro_precision"] == pytest.approx(0.75) and out["micro_recall"] == pytest.approx(0.75)
    # the boxes (2,2,10,10) and (4,2,12,10) overlap 6 x 8 of 80: IoU 0.6, one pit found
    assert out["object_recall"] == 1.0 and out["object_precision"] == 1.0
    below = al_loop.evaluate(pred * 0.5, truth)  # 0.45 < the 0.5 threshold: nothing predicted
    assert below["object_recall"] == 0.0 and below["iou_pit"] == 0.0
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        al_loop.evaluate(pred[0], truth[0])
