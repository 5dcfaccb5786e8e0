import numpy as np

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
