"""Groups of tiles that must stay on one side of a train/validation split.

A validation tile that has a copy in the training pool measures memory, not skill: the
HiRISE pits set exports every crop in 2 to 6 versions (mirrored, re-encoded, brightened,
with salt-and-pepper noise), and tiles that ``al-loop tile`` cuts from one product
overlap by design. This module links tiles that are

- near-duplicates by content, whatever the mirroring, 90-degree rotation, JPEG
  re-encoding, brightness/contrast change or impulse noise between them; file names are
  never used (a real product has no names that tell);
- windows of one product that overlap or touch (from the tiling manifest);

and makes the connected components of those links the groups: ``split_groups`` then
moves whole groups, never parts of one, and ``leakage`` counts how many tiles of a split
have a group-mate in another split.

How copies are found (measured on the HiRISE set: bench/near_duplicates.py and
docs/near-duplicates.md). Each tile becomes a 64x64 descriptor: a 3x3 median of the
full-resolution grey image (removes impulse noise, which otherwise dominates a
featureless tile), area-averaged to 64x64 cells, minus its Gaussian blur of one cell
(a band-pass at pit and small-crater scale: drops illumination gradients and brightness
offsets, which a plain standardised 32x32 thumbnail let dominate: unrelated tiles scored
0.88 there, copies as low as 0.09), then standardised (zero mean, unit norm: removes
brightness and contrast). Where both tiles hold a no-data area (the edge of a
map-projected product) they compare without it, or its straight edge would make
unrelated tiles look alike. Two tiles are copies
when the best correlation of one's descriptor with the other's under the 8 rotations
and mirrorings of a square is at least ``THRESHOLD``.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from al_loop.data.images import as_grey_float, decode_image, image_size, read_bytes
from al_loop.errors import ImageError, UsageError

if TYPE_CHECKING:
    from al_loop.data.tiling import TileRecord

DESCRIPTOR_SIDE = 64
# Band-pass width in cells of the descriptor (1 cell = 1/64 of the tile, 14 px of a 900 px
# tile). On the 443 HiRISE tiles (worst pair of copies / best pair of different crops):
# 1 cell 0.58 / 0.31; 2 cells 0.59 / 0.45; 4 cells, which keeps more of the illumination
# and of the product-edge wedges, 0.59 / 0.64: no threshold separates them. Without the
# 3x3 median, salt-and-pepper copies fall to 0.15.
BAND_SIGMA = 1.0
# On the HiRISE set copies of one crop score 0.576 or more pair by pair (median 0.97; the
# worst is a copy brightened until 88% of it is white, against a plain one) and every
# crop's copies are joined through pairs of 0.684 or more; different crops score 0.310 or
# less over 97,000 pairs, in a tail that thins fast (121 pairs >= 0.2, 22 >= 0.25, 1 >= 0.3).
# 0.45 is mid-way between 0.576 and 0.310: copies may lose 0.13 more to harsher edits, and
# by that tail (extrapolated) a pool of 5,000 tiles, 130 times the pairs, holds about one
# unrelated pair that high at most. A missed copy leaks into validation while a false link
# only makes a group larger: if a pool needs it, lower it rather than raise it.
THRESHOLD = 0.45
# A no-data area must cover this many descriptor cells (1% of the tile) to be masked.
NULL_MIN_CELLS = 41
# Rows of the pool compared at once: with 64x64 descriptors, 8 orientations of 256 tiles
# (32 MiB) against the pool, and a 256 x N score block; the whole N x N is never held.
BLOCK = 256


@dataclass(frozen=True)
class Footprint:
    """Where a tile lies in its product: a pixel window of the product's own grid."""

    product_id: str
    col: int
    row: int
    width: int
    height: int

    @classmethod
    def from_record(cls, record: TileRecord) -> Footprint:
        """From a :class:`al_loop.data.tiling.TileRecord` (what ``al-loop tile`` writes)."""
        return cls(record.product_id, record.col, record.row, record.width, record.height)


# -- content descriptors ----------------------------------------------------------------


def read_grey(path: str | Path) -> np.ndarray:
    """A tile file as a 2-D grey array (H, W): :func:`grey_of` its bytes."""
    return grey_of(read_bytes(path), path)


def grey_of(data: bytes, path: str | Path) -> np.ndarray:
    """A tile's bytes as a 2-D grey array (H, W) (uint8, or float32 in [0, 1] for 16-bit/float data).

    8-bit files are decoded straight to grey: for a JPEG that is its luma plane, without
    the RGB copy and float mean of ``decode_image`` + ``as_grey_float`` (5 ms instead of
    40 ms for a 900x900 tile, which is most of the time over a pool). The header checks
    (empty, corrupt, too small, too large) are the project's; other modes take the
    project's decoder and its 16-bit stretch."""
    height, width = image_size(data, path)
    with Image.open(io.BytesIO(data)) as img:
        if img.mode in ("L", "RGB", "RGBA", "P", "LA", "YCbCr", "CMYK", "1"):
            img.draft("L", (width, height))  # JPEG: decode grey at full size; others: no-op
            try:
                return np.asarray(img.convert("L"))
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageError(path, f"corrupt or truncated image ({exc})") from None
    return as_grey_float(decode_image(data, path).pixels)


def descriptor(grey: np.ndarray) -> np.ndarray:
    """The content descriptor of one grey tile (H, W): (2, DESCRIPTOR_SIDE, DESCRIPTOR_SIDE)
    float32, each layer zero mean and unit norm (all zeros for a featureless tile, which
    then links to nothing). Layer 0 is the band-pass of the whole tile; layer 1 leaves out
    a no-data area at the edge of a map-projected product, and is layer 0 itself where
    the tile has none (see :func:`similarity` for which layer compares)."""
    if grey.ndim != 2:
        raise ValueError(f"descriptor wants a 2-D grey array, got shape {grey.shape}")
    clean = _median3(grey)  # impulse noise, removed before it is averaged in
    plain = _band(_cells(clean), None)
    null = _no_data(clean)
    if null is None:
        return np.stack([plain, plain])
    valid = (~null).astype(np.float32)
    weight = _cells(valid)
    cells = _cells(clean.astype(np.float32) * valid) / np.maximum(weight, 1e-6)  # mean of the data pixels
    return np.stack([plain, _band(cells, weight >= 0.5)])  # a cell mostly of no-data carries nothing


def _band(cells: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Cells (S, S) minus their Gaussian background, zero mean and unit norm over ``keep``
    (S, S bool; None: all). The background comes from kept cells only (a normalised
    convolution), so the edge of what is left out leaves no step."""
    weight = np.ones_like(cells) if keep is None else keep.astype(np.float32)
    blur = ndimage.gaussian_filter(cells * weight, BAND_SIGMA, mode="reflect")
    background = blur / np.maximum(ndimage.gaussian_filter(weight, BAND_SIGMA, mode="reflect"), 1e-6)
    band = (cells - background) * weight
    if weight.any():
        band = (band - band[weight > 0].mean()) * weight
    norm = float(np.linalg.norm(band))
    return (band / norm if norm > 1e-6 else np.zeros_like(band)).astype(np.float32)


def _cells(a: np.ndarray) -> np.ndarray:
    """Area average of an (H, W) array to (DESCRIPTOR_SIDE, DESCRIPTOR_SIDE) float32."""
    # uint8 goes through Pillow's own conversion: 1 ms where handing it float32 costs 4
    image = Image.fromarray(a).convert("F") if a.dtype == np.uint8 else Image.fromarray(a.astype(np.float32))
    return np.asarray(image.resize((DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), Image.BOX))


def _no_data(clean: np.ndarray) -> np.ndarray | None:
    """Pixels outside a map-projected product's footprint, (H, W) bool, or None when there
    are none: a region of 0 (the value ``al-loop tile`` keeps for null) of at least
    NULL_MIN_CELLS cells that touches the tile's edge. A pit's shadow at 0 inside the tile
    stays data."""
    zero = clean == 0
    if not zero.any():
        return None
    labels, _ = ndimage.label(_cells(zero.view(np.uint8)) >= 0.5)
    sizes = np.bincount(labels.ravel())
    rim = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = [k for k in rim if k and sizes[k] >= NULL_MIN_CELLS]
    if not keep:
        return None
    region = ndimage.binary_dilation(np.isin(labels, keep))  # a cell more: the pixels along the edge
    height, width = clean.shape
    region = np.asarray(Image.fromarray(region.astype(np.uint8)).resize((width, height), Image.NEAREST)) > 0
    # two pixels more: JPEG and the median smear the edge's zeros into the data next to it
    return ndimage.binary_dilation(zero & region, iterations=2)


def _median3(a: np.ndarray) -> np.ndarray:
    # A 3x3 median made separable (3 taps across, then 3 down) from min/max on views: 2 ms
    # for a 900x900 tile where scipy's or Pillow's true 3x3 median takes 30 to 75 ms; it
    # removes isolated salt-and-pepper pixels as well. Edge rows and columns keep their values.
    out = a.copy()
    for view in (out, out.T):  # the transpose is a view: the second pass runs down the columns
        if view.shape[1] >= 3:
            lo, mid, hi = view[:, :-2], view[:, 1:-1], view[:, 2:]  # read whole before the write
            view[:, 1:-1] = np.maximum(np.minimum(lo, mid), np.minimum(np.maximum(lo, mid), hi))
    return out


def tile_descriptors(paths: Sequence[str | Path], progress: bool = True) -> np.ndarray:
    """Descriptors of many tiles: (N, 2, DESCRIPTOR_SIDE, DESCRIPTOR_SIDE) float32, in order."""
    from tqdm import tqdm

    out = np.zeros((len(paths), 2, DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), dtype=np.float32)
    for i, path in enumerate(tqdm(paths, desc="tile descriptors", unit="tile", disable=not progress)):
        out[i] = descriptor(read_grey(path))
    return out


def dihedral(layer: np.ndarray) -> np.ndarray:
    """The 8 rotations and mirror images of square arrays (N, S, S) -> (8, N, S, S); view 0
    is the identity."""
    views = []
    for quarter_turns in range(4):
        turned = np.rot90(layer, quarter_turns, axes=(1, 2))
        views += [turned, turned[:, :, ::-1]]
    return np.stack(views)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best correlation of each descriptor of ``a`` (Na, 2, S, S) with each of ``b``
    (Nb, 2, S, S) over the 8 orientations: (Na, Nb) float32 in [-1, 1].

    Two tiles that both have a no-data area compare without it (layer 1): unrelated tiles
    cut along one straight product edge would otherwise score as copies (0.82 for a wedge
    of 7% of the tile, 0.99 past half; 0.24 at most without it). Any other pair compares
    whole (layer 0), so a copy whose no-data was brightened from 0, and is no longer
    recognised as such, still matches its original (0.39 if it were compared on layer 1).
    Symmetric: turning ``a`` by T scores as turning ``b`` by T's inverse, among the 8 too."""
    best = _best(a[:, 0], b[:, 0])
    edged_a, edged_b = _edged(a), _edged(b)
    if edged_a.any() and edged_b.any():
        best[np.ix_(edged_a, edged_b)] = _best(a[edged_a, 1], b[edged_b, 1])
    return best


def _edged(desc: np.ndarray) -> np.ndarray:
    """(N,) bool: which descriptors (N, 2, S, S) left a no-data area out."""
    return np.any(desc[:, 0] != desc[:, 1], axis=(1, 2))


def _best(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max over the 8 orientations of ``a`` (Na, S, S) of its dot products with ``b`` (Nb, S, S)."""
    flat_b = b.reshape(len(b), -1)
    views = dihedral(a).reshape(8, len(a), -1)
    best = views[0] @ flat_b.T
    for view in views[1:]:
        np.maximum(best, view @ flat_b.T, out=best)
    return best


def content_pairs(desc: np.ndarray, threshold: float = THRESHOLD, block: int = BLOCK) -> np.ndarray:
    """Index pairs (i < j) of descriptors (N, 2, S, S) whose :func:`similarity` is at least
    ``threshold``: (K, 2) int64. Blocks of ``block`` rows against the rows after them, so
    memory stays O(block x N) and each pair is scored once."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, len(desc), block):
        stop = min(start + block, len(desc))
        scores = similarity(desc[start:stop], desc[start:])
        rows, cols = np.nonzero(scores >= threshold)
        keep = cols > rows  # upper triangle: skips self-pairs and the mirrored half of the block
        found.append(np.stack([rows[keep] + start, cols[keep] + start], axis=1).astype(np.int64))
    return np.concatenate(found)


# -- tiles of one product -----------------------------------------------------------------


def overlap_pairs(footprints: Sequence[Footprint | None]) -> np.ndarray:
    """Index pairs (i < j) of tiles of one product whose windows overlap or touch (a shared
    edge or corner: neighbours cut with no overlap still show the same pit cut in two):
    (K, 2) int64. ``None`` marks a tile with no known footprint; it pairs with nothing."""
    by_product: dict[str, list[int]] = {}
    for index, footprint in enumerate(footprints):
        if footprint is not None:
            by_product.setdefault(footprint.product_id, []).append(index)
    found = [np.zeros((0, 2), dtype=np.int64)]
    for members in by_product.values():
        idx = np.asarray(members, dtype=np.int64)
        box = np.array([[footprints[i].col, footprints[i].row, footprints[i].width, footprints[i].height]
                        for i in members], dtype=np.int64)
        x0, y0, x1, y1 = box[:, 0], box[:, 1], box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]
        for start in range(0, len(idx), BLOCK):  # a product can have thousands of tiles
            s = slice(start, start + BLOCK)
            near = ((x0[s, None] <= x1[None, :]) & (x0[None, :] <= x1[s, None])
                    & (y0[s, None] <= y1[None, :]) & (y0[None, :] <= y1[s, None]))
            rows, cols = np.nonzero(near)
            keep = cols > rows + start
            found.append(np.stack([idx[rows[keep] + start], idx[cols[keep]]], axis=1))
    return np.concatenate(found)


def tile_footprints(paths: Sequence[str | Path], tiles_folder: str | Path) -> list[Footprint | None]:
    """The footprint of each path from the manifest ``al-loop tile`` wrote in ``tiles_folder``;
    ``None`` for a path the manifest does not list (a tile from elsewhere)."""
    from al_loop.data.tiling import load_manifest

    folder = Path(tiles_folder)
    known = {(folder / record.file).resolve(): Footprint.from_record(record)
             for entry in load_manifest(folder).values() for record in entry.tiles}
    return [known.get(Path(path).resolve()) for path in paths]


# -- groups -------------------------------------------------------------------------------


def components(count: int, *pairs: np.ndarray) -> list[int]:
    """Connected components of ``count`` items linked by index pairs ((K, 2) arrays): a group
    id per item, numbered 0, 1, ... in order of first appearance."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    for array in pairs:
        for a, b in np.asarray(array, dtype=np.int64).reshape(-1, 2).tolist():
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(i), len(numbers)) for i in range(count)]


def group_descriptors(desc: np.ndarray, footprints: Sequence[Footprint | None] | None = None,
                      threshold: float = THRESHOLD) -> list[int]:
    """Group ids for tiles given their descriptors (N, 2, S, S) and, optionally, their footprints
    (N, in the same order): copies by content and overlapping windows share a group."""
    links = [content_pairs(desc, threshold)]
    if footprints is not None:
        if len(footprints) != len(desc):
            raise ValueError(f"{len(footprints)} footprints for {len(desc)} tiles")
        links.append(overlap_pairs(footprints))
    return components(len(desc), *links)


def group_tiles(paths: Sequence[str | Path], footprints: Sequence[Footprint | None] | None = None,
                threshold: float = THRESHOLD, progress: bool = True) -> list[int]:
    """A group id per tile (N paths -> N ints): tiles that are copies of each other by content,
    or overlapping/touching windows of one product (``footprints``, aligned with ``paths``;
    see :func:`tile_footprints`), share a group."""
    return group_descriptors(tile_descriptors(paths, progress), footprints, threshold)


# -- splits -------------------------------------------------------------------------------


def split_groups(group_ids: Sequence[int], validation_count: int,
                 rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, pool indices), each sorted, moving whole groups only.

    Groups are taken in random order (each group, not each tile, is equally likely: a crop
    exported six times is one scene), skipping any that would overshoot what is still
    wanted, so small groups fill the last places and the count is met exactly whenever
    the group sizes allow. When they do not (every group left is larger than the gap), the
    smallest group left is added only if that ends closer to ``validation_count`` than
    stopping short; a group is never split."""
    ids = np.asarray(group_ids, dtype=np.int64)
    if not 0 <= validation_count <= len(ids):
        raise UsageError(f"cannot set {validation_count} tiles aside for validation out of {len(ids)}")
    rng = np.random.default_rng(rng)
    labels, sizes = np.unique(ids, return_counts=True)
    chosen, left, wanted = [], [], validation_count
    for k in rng.permutation(len(labels)):
        if sizes[k] <= wanted:
            chosen.append(labels[k])
            wanted -= int(sizes[k])
        else:
            left.append(k)
    if wanted and left:
        smallest = min(left, key=lambda k: sizes[k])
        if sizes[smallest] - wanted < wanted:
            chosen.append(labels[smallest])
    in_validation = np.isin(ids, chosen)
    return np.flatnonzero(in_validation), np.flatnonzero(~in_validation)


def leaked(split: Sequence[int], other: Sequence[int]) -> np.ndarray:
    """Which tiles of one split (their group ids, N) have a group-mate in another split
    (group ids): (N,) bool."""
    return np.isin(np.asarray(split), np.asarray(other))


def leakage(split: Sequence[int], other: Sequence[int]) -> int:
    """How many tiles of ``split`` have a copy (a group-mate) in ``other``, from group ids:
    0 for a clean split. ``leakage(ids[valid], ids[train])`` tells whether a dataset's own
    validation split measures memory."""
    return int(leaked(split, other).sum())


def split_apart(group_ids: Sequence[int], neighbours: np.ndarray, validation_count: int,
                rng: np.random.Generator | int | None = None, blocks: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation, buffer, pool) indices, each sorted: whole content groups only, and no pool
    tile overlapping or touching a validation tile (``neighbours``: (K, 2) index pairs, e.g.
    :func:`overlap_pairs`).

    Tiles cut from one product all overlap their neighbours, so their overlap graph is one
    piece: grouping by it would put a whole product on one side. Instead validation grows
    as up to ``blocks`` compact patches (breadth-first over the neighbours, a content group at
    a time), and the ring of tiles that touch a patch, with their copies, is the buffer:
    neither trained on nor scored. Compact patches keep that ring small (a 14 x 14 patch
    has a ring of about 60 tiles, 200 scattered tiles one of about 1,600). Without
    neighbours (a YOLO set) there is no buffer and this is :func:`split_groups`' draw."""
    ids = np.asarray(group_ids, dtype=np.int64)
    if not 0 <= validation_count <= len(ids):
        raise UsageError(f"cannot set {validation_count} tiles aside for validation out of {len(ids)}")
    rng = np.random.default_rng(rng)
    adjacent = _adjacency(len(ids), neighbours)
    members = {g: np.flatnonzero(ids == g) for g in np.unique(ids)}
    state = np.zeros(len(ids), np.int8)  # 0 free (pool), 1 validation, 2 buffer
    # Up to ``blocks`` patches, none under 25 tiles unless fewer are wanted: every patch costs a ring.
    patch_size = max(-(-validation_count // max(1, blocks)), min(validation_count, 25))
    for group in rng.permutation(list(members)):
        wanted = validation_count - int((state == 1).sum())
        if wanted <= 0:
            break
        if state[members[group]].any() or len(members[group]) > wanted:
            continue
        _grow_patch(group, min(patch_size, wanted), ids, members, adjacent, state)
    return np.flatnonzero(state == 1), np.flatnonzero(state == 2), np.flatnonzero(state == 0)


def _adjacency(count: int, pairs: np.ndarray) -> list[set[int]]:
    adjacent: list[set[int]] = [set() for _ in range(count)]
    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
        adjacent[a].add(b)
        adjacent[b].add(a)
    return adjacent


def _grow_patch(seed: int, size: int, ids: np.ndarray, members: dict, adjacent: list[set[int]], state: np.ndarray) -> None:
    """Validation from content group ``seed`` outwards over free neighbours, up to ``size`` tiles;
    then the free tiles touching it, and their copies, become buffer (``state`` in place)."""
    frontier, taken = [seed], 0
    while frontier:
        group = frontier.pop(0)
        tiles = members[group]
        if state[tiles].any() or taken + len(tiles) > size:
            continue
        state[tiles] = 1
        taken += len(tiles)
        frontier += sorted({int(ids[j]) for t in tiles for j in adjacent[t] if state[j] == 0})
    ring = {j for t in np.flatnonzero(state == 1) for j in adjacent[t] if state[j] == 0}
    for j in ring:
        copies = members[int(ids[j])]
        state[copies[state[copies] == 0]] = 2


@dataclass(frozen=True)
class SplitCheck:
    """How a data set's own split leaks: ``leaked`` of the ``held_out`` tiles have a copy among
    the training tiles; after regrouping (``regrouped``), ``leaked_after`` of them do."""

    held_out: int
    leaked: int
    regrouped: bool = False
    leaked_after: int | None = None

    def describe(self, what: str = "valid") -> str:
        text = f"{self.leaked} of the {self.held_out} {what} tiles have a near-duplicate among the training tiles"
        if self.regrouped:
            return text + f"; regrouped (whole groups of copies on one side): {self.leaked_after}"
        return text + ("" if not self.leaked else ": the scores measure memory as much as learning (--regroup)")


def check_split(train: Sequence[str | Path], held_out: Sequence[str | Path], regroup: bool = False, seed: int = 0,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, SplitCheck]:
    """(training indices, held-out indices) into ``train + held_out`` and how the split leaks.
    ``regroup`` draws a held-out set of the same size again from whole groups of copies."""
    ids = np.asarray(group_tiles([*train, *held_out], progress=progress))
    first, second = np.arange(len(train)), np.arange(len(train), len(ids))
    check = SplitCheck(len(held_out), leakage(ids[second], ids[first]))
    if not regroup:
        return first, second, check
    second, first = split_groups(ids, len(held_out), seed)
    return first, second, SplitCheck(len(second), check.leaked, True, leakage(ids[second], ids[first]))
