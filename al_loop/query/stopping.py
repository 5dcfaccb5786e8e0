"""When to stop labelling: stabilizing predictions (Bloodgood & Vijay-Shanker 2009).

Each round's decoder predicts a fixed *stop set* of tiles nobody labels (in ``simulate`` the
evaluation tiles' images, in ``next-batch`` the validation tiles' images: only their pixels
are used, never their labels). The agreement between consecutive decoders on it, Cohen's
kappa over the pixels' classes and the F1 of their predicted objects, rises as labels stop
teaching the decoder anything new. The rule fires when the agreement stays at or above a
threshold for ``window`` consecutive rounds: the decoder stopped changing, so more labels of
the kind the strategy picks are unlikely to help.

Pure functions of arrays; the callers record the agreement per round.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from al_loop.evaluation.agreement import kappa_of_codes

STOP_WINDOW = 3  # rounds; Bloodgood & Vijay-Shanker's three consecutive model pairs
STOP_THRESHOLD = 0.99  # see docs/reference/strategies.md for why (and the measured agreement)
STOP_MEASURE = "kappa"
STOP_MESSAGE = "the decoder stopped changing: more labels of this kind are unlikely to help"


@dataclass(frozen=True)
class Agreement:
    """How much two decoders agree on the stop set."""

    kappa: float  # Cohen's kappa over every pixel's class
    object_f1: float  # F1 of one decoder's predicted objects against the other's (overlap matches)
    tiles: int  # stop-set tiles compared

    def value(self, measure: str = STOP_MEASURE) -> float:
        return {"kappa": self.kappa, "object_f1": self.object_f1}[measure]


def pixel_classes(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Each pixel's predicted class: (N, H, W) ints from (N, H, W) pit probabilities (pit where
    p > ``threshold``) or (N, K+1, H, W) class probabilities (argmax, 0 = background)."""
    p = np.asarray(probabilities)
    if p.ndim == 3:
        return (p > threshold).astype(np.int64)
    if p.ndim == 4:
        return p.argmax(axis=1).astype(np.int64)
    raise ValueError(f"probabilities must be (N, H, W) or (N, K+1, H, W), got shape {p.shape}")


def object_f1(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """F1 between the objects (connected foreground pixels, per tile) of two stacks of masks,
    (N, H, W) or a sequence of (H, W): an object counts as found when it overlaps an object of
    the other stack. 1.0 when neither has an object."""
    found_a = found_b = total_a = total_b = 0
    for ma, mb in zip(a, b, strict=True):
        ma, mb = np.asarray(ma) > 0, np.asarray(mb) > 0
        la, na = ndimage.label(ma)
        lb, nb = ndimage.label(mb)
        total_a, total_b = total_a + na, total_b + nb
        found_a += len(np.setdiff1d(np.unique(la[mb]), [0]))
        found_b += len(np.setdiff1d(np.unique(lb[ma]), [0]))
    if total_a + total_b == 0:
        return 1.0
    recall = found_a / total_a if total_a else 0.0
    precision = found_b / total_b if total_b else 0.0
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def agreement(previous: Sequence[np.ndarray], current: Sequence[np.ndarray]) -> Agreement:
    """Agreement of two decoders' predictions on the same stop-set tiles: each a stack (N, H, W)
    of pit probabilities or (N, K+1, H, W) of class probabilities, or a sequence of per-tile
    arrays (H, W) / (K+1, H, W) when the tiles differ in size."""
    if len(previous) != len(current):
        raise ValueError(f"the two decoders predicted {len(previous)} and {len(current)} stop-set tiles")
    a = [pixel_classes(np.asarray(t)[None])[0] for t in previous]
    b = [pixel_classes(np.asarray(t)[None])[0] for t in current]
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"the two decoders predicted different shapes: {x.shape} and {y.shape}")
    flat_a = np.concatenate([x.ravel() for x in a]) if a else np.zeros(0, np.int64)
    flat_b = np.concatenate([y.ravel() for y in b]) if b else np.zeros(0, np.int64)
    return Agreement(kappa_of_codes(flat_a, flat_b), object_f1(a, b), len(a))


def stop_round(history: Sequence[float | None], threshold: float = STOP_THRESHOLD, window: int = STOP_WINDOW) -> int | None:
    """The first position in ``history`` (agreement per round, None where there was no decoder
    before) at which the last ``window`` values are all at or above ``threshold``; None if the
    rule never fires."""
    if window < 1:
        raise ValueError("the stopping window must be at least one round")
    run = 0
    for i, value in enumerate(history):
        run = run + 1 if value is not None and value >= threshold else 0
        if run >= window:
            return i
    return None


def should_stop(history: Sequence[float | None], threshold: float = STOP_THRESHOLD, window: int = STOP_WINDOW) -> bool:
    """Whether the rule fires on the latest round: the last ``window`` agreements all reach ``threshold``."""
    tail = list(history)[-window:]
    return len(tail) == window and all(v is not None and v >= threshold for v in tail)


@dataclass(frozen=True)
class StopCheck:
    """The rule over a workspace's rounds: the agreement per round and whether it fired."""

    history: list[tuple[int, int, float | None]]  # (round, labelled tiles, agreement; None: no decoder before)
    fired: bool
    threshold: float
    window: int
    measure: str

    @property
    def message(self) -> str | None:
        """The line ``status`` and ``next-batch`` print when the rule fires, else None."""
        return STOP_MESSAGE if self.fired else None

    def describe(self) -> str:
        """One line: the last agreements and what they say."""
        seen = [f"{v:.3f}" for _, _, v in self.history[-self.window :] if v is not None]
        if not seen:
            return f"stopping rule: no two consecutive decoders compared yet ({self.measure})"
        head = f"decoder agreement ({self.measure}, last {len(seen)} round(s)): {', '.join(seen)}"
        return f"{head}: {STOP_MESSAGE}" if self.fired else f"{head} (stops after {self.window} at >= {self.threshold})"


def check_stopping(
    rounds: Sequence[dict], threshold: float = STOP_THRESHOLD, window: int = STOP_WINDOW, measure: str = STOP_MEASURE
) -> StopCheck:
    """The rule over rounds as :meth:`al_loop.loop.workspace.Workspace.agreements` gives them (each
    with ``round``, ``labelled``, ``decoder`` and ``stopping``: a dict with ``kappa`` and
    ``object_f1``, or None)."""
    history = [(r["round"], r["labelled"], (r.get("stopping") or {}).get(measure)) for r in rounds if r.get("decoder")]
    return StopCheck(history, should_stop([v for _, _, v in history], threshold, window), threshold, window, measure)
