"""Grouping tiles so that no copy or overlapping neighbour crosses a train/validation split.

The HiRISE tests take the crop from each file name as the ground truth (the grouping itself
never sees names); the synthetic ones make the copies themselves, so they run anywhere.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from al_loop.data import groups
from al_loop.data.groups import Footprint
from al_loop.errors import ImageError, UsageError

SEEDS = 50


def crop_of(path: Path) -> str:
    """The ground truth of the HiRISE set: the crop a tile was exported from."""
    return path.name.split("_png.rf.")[0].replace("_mirrored", "")


@pytest.fixture(scope="module")
def hirise_set(hirise):
    """train + valid of the HiRISE set: paths, crop names, number of train tiles, descriptors
    and content groups, read once for the module."""
    train = sorted((hirise / "train" / "images").glob("*.jpg"))
    valid = sorted((hirise / "valid" / "images").glob("*.jpg"))
    paths = train + valid
    desc = groups.tile_descriptors(paths, progress=False)
    ids = np.array(groups.group_descriptors(desc))
    return paths, np.array([crop_of(p) for p in paths]), len(train), desc, ids


def same_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]]


# -- the HiRISE set -----------------------------------------------------------------------


def test_every_copy_pair_of_the_valid_split_is_grouped_and_no_other(hirise_set):
    paths, truth, n_train, desc, _ = hirise_set
    valid_truth = truth[n_train:]
    ids = np.array(groups.group_descriptors(desc[n_train:]))
    pairs = same_pairs(valid_truth)
    assert pairs, "the valid split holds copies (mirror images): nothing to test otherwise"
    apart = [(paths[n_train + i].name, paths[n_train + j].name) for i, j in pairs if ids[i] != ids[j]]
    assert not apart, f"copies in different groups: {apart}"
    merged = [(i, j) for i, j in same_pairs(ids) if valid_truth[i] != valid_truth[j]]
    assert not merged, f"different crops grouped together: {merged}"


def test_the_sets_own_split_leaks_and_leakage_counts_it_from_content(hirise_set):
    _, truth, n_train, _, ids = hirise_set
    train, valid = np.arange(n_train), np.arange(n_train, len(truth))
    by_name = groups.leakage(truth[valid], truth[train])
    assert by_name > 0  # the set's README: most valid crops also appear in train
    assert groups.leakage(ids[valid], ids[train]) == by_name
    assert groups.leaked(ids[valid], ids[train]).tolist() == groups.leaked(truth[valid], truth[train]).tolist()


def test_no_validation_tile_chosen_by_split_groups_has_a_copy_in_the_pool(hirise_set):
    _, truth, n_train, _, ids = hirise_set
    count = len(truth) - n_train
    largest = np.bincount(ids).max()
    for seed in range(SEEDS):
        validation, pool = groups.split_groups(ids, count, np.random.default_rng(seed))
        assert sorted(validation.tolist() + pool.tolist()) == list(range(len(truth)))
        assert groups.leakage(truth[validation], truth[pool]) == 0, f"seed {seed}"
        assert abs(len(validation) - count) < largest


def test_blocked_pair_search_finds_what_the_full_score_matrix_holds(hirise_set):
    _, _, _, desc, _ = hirise_set
    some = desc[:120]
    scores = groups.similarity(some, some)
    assert np.allclose(scores, scores.T, atol=1e-5)  # the 8 orientations make it symmetric
    rows, cols = np.nonzero(np.triu(scores >= groups.THRESHOLD, k=1))
    expected = sorted(zip(rows.tolist(), cols.tolist(), strict=False))
    assert expected, "the first train tiles include copies of one another"
    for block in (7, 64, 1000):
        found = groups.content_pairs(some, block=block)
        assert sorted(map(tuple, found.tolist())) == expected


# -- made copies --------------------------------------------------------------------------


def jpeg_bytes(grey: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def edited_copies(grey: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    noisy = grey.copy()
    hit = rng.random(grey.shape) < 0.05
    noisy[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), int(hit.sum()))
    brighter = np.clip(grey * 0.7 + 70, 0, 255).astype(np.uint8)
    return {"mirror": grey[:, ::-1], "flip": grey[::-1], "rot90": np.rot90(grey), "rot180": np.rot90(grey, 2),
            "rot270+mirror": np.rot90(grey, 3)[:, ::-1], "brighter, less contrast": brighter,
            "darker, more contrast": np.clip(grey * 1.4 - 50, 0, 255).astype(np.uint8),
            "salt and pepper": noisy, "rot90+brighter": np.rot90(brighter)}


def test_a_mirrored_rotated_brightened_reencoded_noisy_copy_is_grouped_and_an_unrelated_tile_is_not(tmp_path):
    from al_loop.data.synthetic import generate_tile

    original = generate_tile(11, 256).image
    paths = [tmp_path / "original.png"]
    Image.fromarray(original).save(paths[0])
    for k, (_name, grey) in enumerate(edited_copies(original).items()):
        paths.append(tmp_path / f"copy-{k}.png")
        Image.fromarray(np.ascontiguousarray(grey)).save(paths[-1])
    for quality in (85, 30):  # re-encoded: read back through the JPEG path
        paths.append(tmp_path / f"copy-q{quality}.jpg")
        paths[-1].write_bytes(jpeg_bytes(original, quality))
    unrelated = [tmp_path / f"other-{seed}.png" for seed in (12, 13)]
    for seed, path in zip((12, 13), unrelated, strict=False):
        Image.fromarray(generate_tile(seed, 256).image).save(path)
    ids = groups.group_tiles(paths + unrelated, progress=False)
    missed = [p.name for p, i in zip(paths, ids, strict=False) if i != ids[0]]
    assert not missed, f"copies not grouped with the original: {missed}"
    assert len({ids[0], *ids[len(paths):]}) == 3, "unrelated tiles joined the copies' group or each other"


def test_unrelated_tiles_along_one_product_edge_stay_apart_and_copies_of_each_do_not(tmp_path):
    from al_loop.data.synthetic import generate_tile

    rows, cols = np.mgrid[:256, :256]
    wedge = cols * 0.8 + rows < 180  # the no-data corner of a map-projected product, 0 as tiled
    tiles = [np.where(wedge, 0, generate_tile(seed, 256).image).astype(np.uint8) for seed in (21, 22, 23)]
    copies = []
    for tile in tiles:  # mirrored, more contrast (0 stays 0), re-encoded
        path = tmp_path / f"copy-{len(copies)}.jpg"
        path.write_bytes(jpeg_bytes(np.ascontiguousarray(np.clip(tile * 1.2, 0, 255).astype(np.uint8)[:, ::-1]), 60))
        copies.append(groups.read_grey(path))
    ids = groups.group_descriptors(np.stack([groups.descriptor(t) for t in tiles + copies]))
    assert len(set(ids[:3])) == 3, "tiles that share only the product edge were grouped"
    assert ids[3:] == ids[:3], "a copy lost its original"
    # brightened, its no-data is no longer 0 and no longer left out: it must still find its original
    lifted = np.clip(tiles[0] * 0.8 + 40, 0, 255).astype(np.uint8)[::-1]
    pair = groups.group_descriptors(np.stack([groups.descriptor(tiles[0]), groups.descriptor(lifted)]))
    assert pair[0] == pair[1]


def test_read_grey_refuses_a_truncated_file_with_the_projects_error(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes(np.full((64, 64), 100, dtype=np.uint8), 90)[:300])
    with pytest.raises(ImageError, match="cut.jpg"):
        groups.tile_descriptors([path], progress=False)


# -- tiles of one product -----------------------------------------------------------------


def grid(product: str, gap: int, side: int = 100, across: int = 3, down: int = 2) -> list[Footprint]:
    """Windows of one product in rows, ``gap`` pixels apart (0: touching, negative: overlapping)."""
    step = side + gap
    return [Footprint(product, c * step, r * step, side, side) for r in range(down) for c in range(across)]


def test_overlapping_or_touching_windows_never_straddle_the_split_and_windows_apart_can():
    from al_loop.data.tiling import tile_windows

    overlapping = [Footprint("A", w.col, w.row, w.width, w.height) for w in tile_windows(3000, 2000, 1024, 256)]
    touching = grid("B", gap=0)
    apart = grid("C", gap=1)
    corner = [Footprint("D", 0, 0, 50, 50), Footprint("D", 50, 50, 50, 50)]  # a shared corner only
    footprints = overlapping + touching + apart + corner + [None]
    ids = np.array(groups.components(len(footprints), groups.overlap_pairs(footprints)))
    linked = [(i, j) for block in (overlapping, touching, corner)
              for i in range(footprints.index(block[0]), footprints.index(block[0]) + len(block))
              for j in range(i + 1, footprints.index(block[0]) + len(block))]
    first_apart = len(overlapping) + len(touching)
    straddled = set()
    for seed in range(SEEDS):
        validation, _ = groups.split_groups(ids, 4, np.random.default_rng(seed))
        side = np.isin(np.arange(len(footprints)), validation)
        assert all(side[i] == side[j] for i, j in linked), f"seed {seed}: neighbours on both sides"
        straddled.update((i, j) for i in range(first_apart, first_apart + len(apart))
                         for j in range(i + 1, first_apart + len(apart)) if side[i] != side[j])
    assert straddled, "windows 1 px apart were always kept together"


def test_windows_of_different_products_are_not_linked_however_they_lie():
    same_place = [Footprint("A", 0, 0, 100, 100), Footprint("B", 0, 0, 100, 100), None, Footprint("A", 100, 0, 100, 100)]
    assert groups.overlap_pairs(same_place).tolist() == [[0, 3]]


def test_group_tiles_joins_content_copies_and_neighbouring_windows(tmp_path):
    from al_loop.data.synthetic import generate_tile

    paths = []
    for seed in (31, 32, 33, 34):
        paths.append(tmp_path / f"tile-{seed}.png")
        Image.fromarray(generate_tile(seed, 128).image).save(paths[-1])
    footprints = [Footprint("P", 0, 0, 128, 128), Footprint("P", 128, 0, 128, 128), None, Footprint("P", 400, 0, 128, 128)]
    ids = groups.group_tiles(paths, footprints, progress=False)
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    with pytest.raises(ValueError, match="footprints"):
        groups.group_tiles(paths, footprints[:2], progress=False)


def test_footprints_come_from_the_manifest_al_loop_tile_writes(tmp_path):
    from al_loop.data.tiling import ProductEntry, TileRecord, save_manifest

    records = [TileRecord(f"P1/t{k}.png", "P1", 768 * k, 0, 1024, 1024, (1.0, 0.0, 768.0 * k, 0.0, -1.0, 0.0), "0" * 64, 0.0)
               for k in range(3)]
    entry = ProductEntry("P1", "p1.tif", 2560, 1024, None, (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), 0.0, (0.0, 1.0), 1024, 256, records)
    save_manifest(tmp_path, {"P1": entry})
    paths = [tmp_path / r.file for r in records] + [tmp_path / "elsewhere.png"]
    footprints = groups.tile_footprints(paths, tmp_path)
    assert footprints[:3] == [Footprint("P1", r.col, r.row, r.width, r.height) for r in records]
    assert footprints[3] is None
    assert len(set(groups.components(3, groups.overlap_pairs(footprints[:3])))) == 1


# -- split_groups -------------------------------------------------------------------------


def test_split_groups_fills_exactly_with_small_groups_and_never_splits_one():
    ids = [0] * 6 + [1] * 4 + list(range(2, 9))  # groups of 6 and 4, and seven single tiles
    for seed in range(SEEDS):
        validation, pool = groups.split_groups(ids, 5, seed)
        assert len(validation) == 5
        chosen = {ids[i] for i in validation}
        assert not chosen & {ids[i] for i in pool}, f"seed {seed}: a group on both sides"


def test_split_groups_overshoots_only_when_that_lands_closer():
    three_threes = [0] * 3 + [1] * 3 + [2] * 3
    assert len(groups.split_groups(three_threes, 4, 0)[0]) == 3  # 3 is 1 short, 6 would be 2 over
    assert len(groups.split_groups(three_threes, 5, 0)[0]) == 6  # 3 is 2 short, 6 is 1 over
    assert len(groups.split_groups([0] * 5, 3, 0)[0]) == 5
    assert len(groups.split_groups([0] * 5, 2, 0)[0]) == 0
    assert len(groups.split_groups(three_threes, 0, 0)[0]) == 0
    with pytest.raises(UsageError):
        groups.split_groups(three_threes, 10, 0)
