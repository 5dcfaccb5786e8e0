"""Objects of a probability map: merged blobs cut at their saddles, one pit left whole, and each
object scored as a whole (mapping/objects.py), alone and inside the map's assembler."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from al_loop.mapping.assemble import PitAssembler
from al_loop.mapping.blend import Strip
from al_loop.mapping.objects import (
    DEFAULT_RULE,
    FLAG_LOW_SCORE,
    ObjectRule,
    flags,
    object_scores,
    size_fit,
    split_objects,
)
from al_loop.models.pits import THRESHOLD

FOUR = ndimage.generate_binary_structure(2, 1)


def blob(shape: tuple[int, int], centre: tuple[float, float], sigma: float, peak: float = 0.95) -> np.ndarray:
    """A pit as a decoder paints it: probability falling off from its centre, (H, W) float32."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return (peak * np.exp(-d2 / (2 * sigma**2))).astype(np.float32)


def cell_texture(shape: tuple[int, int], cell: int = 14, amplitude: float = 0.04, seed: int = 0) -> np.ndarray:
    """The decoder's cell-by-cell painting: a constant offset per cell, (H, W)."""
    rng = np.random.default_rng(seed)
    cells = rng.uniform(-amplitude, amplitude, (shape[0] // cell + 1, shape[1] // cell + 1))
    return np.kron(cells, np.ones((cell, cell)))[: shape[0], : shape[1]].astype(np.float32)


def two_touching(shape=(120, 220)) -> np.ndarray:
    """Two pits 50 px apart whose p >= 0.5 areas touch: one component at the threshold."""
    return np.maximum(blob(shape, (60, 80), 25), blob(shape, (60, 130), 25))


def test_two_touching_discs_become_two_objects_of_about_equal_size():
    probability = two_touching()
    mask = probability >= THRESHOLD
    assert ndimage.label(mask, structure=FOUR)[1] == 1  # what the map made of them before
    labels, count = split_objects(probability, mask)
    assert count == 2
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.sum() == mask.sum()  # every pixel kept, none lost to the cut
    assert abs(int(sizes[0]) - int(sizes[1])) <= 0.05 * sizes.sum()
    for k in (1, 2):
        assert ndimage.label(labels == k, structure=FOUR)[1] == 1
    # the cut runs through the saddle, between the centres
    assert labels[60, 80] != labels[60, 130]
    assert {labels[60, 100], labels[60, 110]} == {labels[60, 80], labels[60, 130]}


def test_one_disc_stays_one_object_even_with_the_decoders_cell_texture():
    probability = np.clip(blob((160, 160), (80, 80), 30) + cell_texture((160, 160)), 0, 1)
    mask = probability >= THRESHOLD
    components, n = ndimage.label(mask, structure=FOUR)
    labels, count = split_objects(probability, mask)
    assert count == n  # the texture may leave a speck apart at the rim, but the disc is not cut
    assert (labels > 0).sum() == mask.sum()
    assert len(np.unique(labels[components == components[80, 80]])) == 1


def test_a_shallow_saddle_is_not_cut_but_a_deeper_one_is():
    """Two maxima whose saddle is less than ``dip`` below the lower one stay one object (the dip is
    of the smoothed probability: barely smoothed here, so the saddle 0.95 e^-0.18 = 0.79 is 0.16 down)."""
    shape = (120, 200)
    close = np.maximum(blob(shape, (60, 85), 25), blob(shape, (60, 115), 25))
    assert split_objects(close, close >= THRESHOLD, ObjectRule(smooth_px=1.0, dip=0.2))[1] == 1
    assert split_objects(close, close >= THRESHOLD, ObjectRule(smooth_px=1.0, dip=0.1))[1] == 2
    assert split_objects(close, close >= THRESHOLD, ObjectRule(smooth_px=7.0, dip=0.1))[1] == 1  # smoothed: 0.04 down


def test_no_part_smaller_than_min_pixels_is_cut_off():
    probability = two_touching()
    small = probability.copy()
    small[10:13, 10:13] = 0  # leave the two discs, add a tiny sharp spike on the first's flank
    small[45, 70] = 1.0
    mask = small >= THRESHOLD
    labels, count = split_objects(small, mask, ObjectRule(smooth_px=1.0, min_pixels=400))
    assert count == 2
    assert np.bincount(labels.ravel())[1:].min() >= 400


def test_size_fit_and_score_follow_the_documented_rule():
    sizes = {"p5_pixels": 100.0, "median_pixels": 400.0, "max_pixels": 2000.0}
    fit = size_fit(np.array([50.0, 100.0, 1000.0, 2000.0, 8000.0]), sizes)
    assert np.allclose(fit, [0.5, 1.0, 1.0, 1.0, 0.25])
    assert np.allclose(size_fit(np.array([1e9]), None), 1.0)
    scores = object_scores(np.array([0.95, 0.55, 0.95]), np.array([500.0, 500.0, 8000.0]), sizes, THRESHOLD)
    assert np.allclose(scores, [0.9, 0.1, 0.225])
    assert flags(np.array([DEFAULT_RULE.min_score - 1e-6, DEFAULT_RULE.min_score])) == [FLAG_LOW_SCORE, ""]


def assemble(probability: np.ndarray, split: bool, band: int = 40, **finish) -> list:
    """``probability`` through the map's assembler in strips of ``band`` rows (pixel = 1 m)."""
    height, width = probability.shape
    assembler = PitAssembler((1.0, 0.0, 0.0, 0.0, -1.0, float(height)), width, height, split=split)
    for row0 in range(0, height, band):
        part = probability[row0 : row0 + band]
        assembler.add(Strip(row0, part, np.ones(part.shape, bool)))
    return assembler.finish(**finish)


def test_the_map_cuts_a_merged_blob_across_strip_seams_only_when_told():
    """Two touching pits spanning three strips: one pit by default, two with ``split``, their
    outlines covering exactly the blob's pixels."""
    probability = np.zeros((160, 220), np.float32)
    probability[20:140] = two_touching()
    merged = assemble(probability, split=False)
    assert len(merged) == 1 and merged[0].parts == 1
    pits = assemble(probability, split=True)
    assert len(pits) == 2 and {p.parts for p in pits} == {2}
    assert sum(p.n_pixels for p in pits) == merged[0].n_pixels
    assert np.isclose(sum(p.polygon.area for p in pits), merged[0].n_pixels)
    assert all(p.polygon.is_valid and p.polygon.geom_type == "Polygon" for p in pits)
    left, right = sorted(pits, key=lambda p: p.bbox[0])
    assert left.bbox[0] < 80 < left.bbox[2] <= right.bbox[0] + 1 and right.bbox[0] < 130 < right.bbox[2]


def test_a_faint_large_blob_is_flagged_and_dropped_on_request_a_sure_pit_is_not():
    """A wide blob barely above the threshold (a decoder's halo over terrain) scores under the
    rule's minimum; a pit of a training size with a sure core does not."""
    shape = (200, 400)
    faint = np.zeros(shape, np.float32)
    faint[20:180, 20:200] = 0.53  # a flat, faint 160 x 180 px blob
    sure = blob(shape, (100, 300), 20)
    probability = np.where(np.arange(shape[1]) < 220, faint, sure).astype(np.float32)
    sizes = {"p5_pixels": 200.0, "median_pixels": 1000.0, "max_pixels": 5000.0}
    pits = assemble(probability, split=True, sizes=sizes)
    assert len(pits) == 2
    by_x = sorted(pits, key=lambda p: p.bbox[0])
    assert by_x[0].flag == FLAG_LOW_SCORE and by_x[0].object_score < DEFAULT_RULE.min_score
    assert by_x[1].flag == "" and by_x[1].object_score > 0.3  # a Gaussian's mean over p >= 0.5 is 0.7: 0.4
    kept = assemble(probability, split=True, sizes=sizes, drop_flagged=True)
    assert [p.bbox for p in kept] == [by_x[1].bbox]


def test_only_the_part_that_reaches_the_products_border_touches_its_edge():
    probability = np.zeros((160, 200), np.float32)
    probability[20:140] = np.maximum(blob((120, 200), (60, 10), 25), blob((120, 200), (60, 60), 25))
    pits = sorted(assemble(probability, split=True), key=lambda p: p.bbox[0])
    assert len(pits) == 2
    assert pits[0].bbox[0] == 0 and pits[0].touches_edge
    assert not pits[1].touches_edge  # the blob as a whole touched it; this part does not
