"""How far a team's experts agree on a tile, and the one answer the decoder learns from.

Pure functions on masks and type names; the Label Studio side (overlap, per-user answers,
the review tab) lives in ``studio``.

An expert's answer on a tile is an :class:`Outlines`: one boolean mask per pit drawn and
the pit's type. Pits are matched *pit by pit* between two experts, one to one (the
Hungarian method on mask IoU), and a pair counts only at IoU >= 0.5 (``MATCH_IOU``, the
rule object recall uses). Across a team, matched pits are joined into *clusters* (one per
pit on the ground, holding at most one outline per expert).

What is reported (:class:`TileAgreement`):

- ``mask_iou``: the mean IoU of matched pits over every pair of experts;
- ``pits_by_one``: clusters only one expert drew (a missed pit, or a pit one expert sees);
- ``type_kappa``: agreement on the type of matched pits beyond chance: Cohen's kappa for two
  experts; for more, the mean of the pairs' kappas (Light's kappa). Where both experts gave
  every matched pit the one same type, chance agreement is 1 and kappa is undefined; it is
  reported as 1.0 when they also agree (nothing to disagree on) and None when no pit matched.

The consensus (:func:`consensus`) keeps a pit where more than half of the experts drew it,
with the pixels more than half of *those* experts painted (for two experts: where both did,
so the looser outline does not win) and the type most of them gave. A pit exactly half the
team drew, or whose type vote is tied, is *disputed*: a reviewer decides it.
"""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from al_loop.evaluation.metrics import MATCH_IOU


@dataclass(frozen=True)
class Outlines:
    """One expert's pits on one tile: ``masks`` (N, H, W) bool, ``types`` N names."""

    annotator: str
    masks: np.ndarray
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or len(self.types) != self.masks.shape[0]:
            raise ValueError(f"{self.annotator}: masks must be (N, H, W) with one type per pit, "
                             f"got {self.masks.shape} and {len(self.types)} types")

    @classmethod
    def empty(cls, annotator: str, size: tuple[int, int]) -> Outlines:
        return cls(annotator, np.zeros((0, *size), bool), ())


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of every mask of ``a`` (N, H, W) with every mask of ``b`` (M, H, W)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_outlines(a: np.ndarray, b: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """One-to-one pairs (i, j, IoU) of the masks of ``a`` and ``b`` with IoU >= ``min_iou``,
    chosen to maximise the total IoU (two pits never match one outline)."""
    if not len(a) or not len(b):
        return []
    iou = mask_ious(a, b)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= min_iou]


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels for the same items; None without items, 1.0 where
    both gave every item one same label (chance agreement 1: nothing to disagree on)."""
    if len(first) != len(second):
        raise ValueError("the two raters must label the same items")
    if not first:
        return None
    _, codes = np.unique(np.array([*first, *second], dtype=object).astype(str), return_inverse=True)
    return kappa_of_codes(codes[: len(first)], codes[len(first):])


def kappa_of_codes(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa between two arrays of non-negative integer labels of one shape (pixels'
    classes, or raters' labels as codes): (observed - chance agreement) / (1 - chance). Two
    identical constant arrays agree fully (1.0); the one implementation, also the stopping rule's."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"kappa of arrays of different sizes: {a.size} and {b.size}")
    if not a.size:
        return 1.0
    classes = int(max(a.max(), b.max())) + 1
    observed = float((a == b).mean())
    chance = float((np.bincount(a, minlength=classes) / a.size) @ (np.bincount(b, minlength=classes) / b.size))
    if chance >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - chance) / (1.0 - chance)


@dataclass
class PairAgreement:
    """Two experts on one tile: matched pits, those only one drew, and their types."""

    first: str
    second: str
    matches: list[tuple[int, int, float]]
    only_first: int
    only_second: int
    kappa: float | None
    types: list[tuple[str, str]] = field(default_factory=list)  # the matched pits' (first's, second's) types

    @property
    def mean_iou(self) -> float | None:
        return float(np.mean([m[2] for m in self.matches])) if self.matches else None

    def as_dict(self) -> dict:
        """What a round's figures are pooled from (:func:`pooled_agreement`)."""
        return {"first": self.first, "second": self.second, "ious": [m[2] for m in self.matches],
                "types": [list(t) for t in self.types], "only_first": self.only_first, "only_second": self.only_second}


def pair_agreement(a: Outlines, b: Outlines, min_iou: float = MATCH_IOU) -> PairAgreement:
    matches = match_outlines(a.masks, b.masks, min_iou)
    types = [(a.types[i], b.types[j]) for i, j, _ in matches]
    kappa = cohen_kappa([t[0] for t in types], [t[1] for t in types])
    return PairAgreement(a.annotator, b.annotator, matches, len(a.types) - len(matches),
                         len(b.types) - len(matches), kappa, types)


@dataclass
class Cluster:
    """One pit on the ground: the outline (index into the expert's masks) each expert drew of it."""

    members: dict[int, int] = field(default_factory=dict)  # expert index -> pit index


def pit_clusters(answers: Sequence[Outlines], min_iou: float = MATCH_IOU) -> list[Cluster]:
    """The team's pits joined across experts: each expert's pit matched to the clusters so far
    (one to one, IoU of the pit with the cluster's first outline), or a new cluster."""
    clusters: list[Cluster] = []
    for e, answer in enumerate(answers):
        reps = np.stack([answers[next(iter(c.members))].masks[next(iter(c.members.values()))] for c in clusters]) \
            if clusters else np.zeros((0, *answer.masks.shape[1:]), bool)
        matched = {i: j for i, j, _ in match_outlines(answer.masks, reps, min_iou)}
        for i in range(len(answer.types)):
            if i in matched:
                clusters[matched[i]].members[e] = i
            else:
                clusters.append(Cluster({e: i}))
    return clusters


@dataclass
class TileAgreement:
    """A team on one tile (see the module's docstring for each figure)."""

    annotators: tuple[str, ...]
    pairs: list[PairAgreement]
    pits: int  # clusters: distinct pits the team drew
    pits_by_one: int

    @property
    def mask_iou(self) -> float | None:
        ious = [m[2] for p in self.pairs for m in p.matches]
        return float(np.mean(ious)) if ious else None

    @property
    def type_kappa(self) -> float | None:
        kappas = [p.kappa for p in self.pairs if p.kappa is not None]
        return float(np.mean(kappas)) if kappas else None

    def as_dict(self) -> dict:
        return {"annotators": list(self.annotators), "pits": self.pits, "pits_by_one": self.pits_by_one,
                "mask_iou": self.mask_iou, "type_kappa": self.type_kappa,
                "matched_pairs": sum(len(p.matches) for p in self.pairs), "pairs": [p.as_dict() for p in self.pairs]}


def tile_agreement(answers: Sequence[Outlines], min_iou: float = MATCH_IOU) -> TileAgreement:
    """Every pair of experts compared, and the team's pits counted once (needs two experts)."""
    if len(answers) < 2:
        raise ValueError("agreement needs the answers of at least two experts")
    pairs = [pair_agreement(a, b, min_iou) for a, b in itertools.combinations(answers, 2)]
    clusters = pit_clusters(answers, min_iou)
    return TileAgreement(tuple(a.annotator for a in answers), pairs, len(clusters),
                         sum(len(c.members) == 1 for c in clusters))


@dataclass
class Consensus:
    """The answer the decoder learns from: ``mask`` (H, W) int, 0 background and k for the
    k-th of ``types``; ``disputed`` pits (their masks, (D, H, W)) wait for a reviewer."""

    mask: np.ndarray
    types: tuple[str, ...]
    disputed: np.ndarray
    support: tuple[int, ...]  # how many experts drew each kept pit
    left_out: int = 0  # pits fewer than half of the team drew

    @property
    def needs_review(self) -> bool:
        return len(self.disputed) > 0


def _majority_type(types: list[str]) -> str | None:
    counts = Counter(types).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    return counts[0][0]


def consensus(answers: Sequence[Outlines], min_iou: float = MATCH_IOU) -> Consensus:
    """The team's consensus on a tile (the rules are in the module's docstring)."""
    if not answers:
        raise ValueError("a consensus needs at least one answer")
    size = answers[0].masks.shape[1:]
    mask, kept_types, support, disputed, left_out = np.zeros(size, np.int32), [], [], [], 0
    for cluster in pit_clusters(answers, min_iou):
        outlines = np.stack([answers[e].masks[i] for e, i in cluster.members.items()])
        votes = outlines.sum(0)
        pixels = votes * 2 > len(outlines)
        kind = _majority_type([answers[e].types[i] for e, i in cluster.members.items()])
        drawn_by = len(cluster.members)
        if drawn_by * 2 < len(answers):
            left_out += 1  # most of the team did not draw it
            continue
        if drawn_by * 2 == len(answers) or kind is None or not pixels.any():
            disputed.append(votes > 0)
            continue
        kept_types.append(kind)
        support.append(drawn_by)
        mask[pixels & (mask == 0)] = len(kept_types)
    stack = np.stack(disputed) if disputed else np.zeros((0, *size), bool)
    return Consensus(mask, tuple(kept_types), stack, tuple(support), left_out)


def agreement_with(answer: Outlines, reference: Consensus, min_iou: float = MATCH_IOU) -> dict:
    """One expert against the consensus: pits matched, missed and extra, and the matched IoU."""
    ref = np.stack([reference.mask == k + 1 for k in range(len(reference.types))]) if reference.types \
        else np.zeros((0, *reference.mask.shape), bool)
    matches = match_outlines(answer.masks, ref, min_iou)
    return {"annotator": answer.annotator, "matched": len(matches), "missed": len(ref) - len(matches),
            "extra": len(answer.types) - len(matches),
            "mask_iou": float(np.mean([m[2] for m in matches])) if matches else None}


def outlines_of(annotator: str, labels: np.ndarray, type_names: Sequence[str]) -> Outlines:
    """An expert's answer as outlines: every 4-connected patch of one type in ``labels`` ((H, W)
    int, 0 none, k the k-th of ``type_names``) is one pit. Two pits an expert painted touching,
    of one type, count as one: the loop's masks keep no region identity (a box answer's SAM
    masks and a brush answer alike end as a map of types)."""
    masks, types = [], []
    for k in np.unique(labels[labels > 0]):
        parts, count = ndimage.label(labels == k)
        masks += [parts == i for i in range(1, count + 1)]
        types += [type_names[int(k) - 1]] * count
    stack = np.stack(masks) if masks else np.zeros((0, *labels.shape), bool)
    return Outlines(annotator, stack, tuple(types))


def consensus_labels(agreed: Consensus, type_names: Sequence[str]) -> np.ndarray:
    """The consensus as the loop's training mask: (H, W) uint8, 0 none, k the k-th of ``type_names``."""
    index = {name: k + 1 for k, name in enumerate(type_names)}
    lookup = np.array([0] + [index[name] for name in agreed.types], dtype=np.uint8)
    return lookup[agreed.mask]


def pooled_agreement(tiles: Sequence[dict]) -> dict:
    """A round's figures from its tiles' records (:meth:`TileAgreement.as_dict`): the mean IoU of
    every matched pit, the pits only one expert drew, and each pair of experts' Cohen's kappa on
    the types of all the pits they both drew (pooled over the tiles: one tile rarely holds enough
    pits for a kappa of its own), averaged over the pairs. None where nothing matched."""
    ious = [iou for tile in tiles for pair in tile.get("pairs", []) for iou in pair["ious"]]
    by_pair: dict[tuple[str, str], list] = {}
    for tile in tiles:
        for pair in tile.get("pairs", []):
            by_pair.setdefault((pair["first"], pair["second"]), []).extend(pair["types"])
    kappas = [k for types in by_pair.values()
              if (k := cohen_kappa([t[0] for t in types], [t[1] for t in types])) is not None]
    return {"tasks": len(tiles), "pits": sum(t.get("pits", 0) for t in tiles),
            "pits_by_one": sum(t.get("pits_by_one", 0) for t in tiles),
            "mask_iou": float(np.mean(ious)) if ious else None,
            "type_kappa": float(np.mean(kappas)) if kappas else None}
