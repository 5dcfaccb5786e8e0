"""How well al_loop.data.groups finds copies of a tile, on the HiRISE pits set (train + valid).

The file names are the ground truth (the grouping never sees them): the part before
``_png.rf.``, without ``_mirrored``, names the crop; tiles of one crop are copies. Prints

  - the CPU (model, SIMD flags, cores, BLAS threads) and the time to read and describe the
    tiles, to score all pairs and to group them;
  - the best correlation of copies and of non-copies (the margin the threshold sits in),
    and pairwise precision and recall of the groups (after joining linked tiles) at the
    chosen threshold and around it;
  - the lowest score of a tile against itself after each edit the grouping must survive
    (mirror, rotation, brightness, contrast, gamma, JPEG, salt-and-pepper), on valid tiles;
  - leakage: valid tiles with a copy in train, for the set's own split and for splits of
    train + valid made by ``split_groups`` (many seeds), beside a plain random split.

    python bench/near_duplicates.py [--dataset DIR] [--seeds 200]
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from al_loop.data import groups

ROOT = Path(__file__).resolve().parents[1]
SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = " ".join(f for f in SIMD if f in flags) or "-"
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"cpu: {model}; {os.cpu_count()} cores; SIMD flags: {simd}; BLAS threads: {threads}; load average {load}"


def crop_of(path: Path) -> str:
    return path.name.split("_png.rf.")[0].replace("_mirrored", "")


def pair_scores(ids: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of grouping ``ids`` against ``truth`` labels."""
    upper = np.triu_indices(len(ids), 1)
    together = (ids[:, None] == ids[None, :])[upper]
    copies = (truth[:, None] == truth[None, :])[upper]
    hits = int((together & copies).sum())
    return hits / max(int(together.sum()), 1), hits / max(int(copies.sum()), 1)


def weakest_link(scores: np.ndarray, members: np.ndarray) -> float:
    """The lowest threshold that still joins ``members`` into one group: the weakest edge of
    their maximum spanning tree (1.0 for a single tile)."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    if len(members) < 2:
        return 1.0
    tree = minimum_spanning_tree(2.0 - scores[np.ix_(members, members)]).toarray()
    return float(2.0 - tree[tree > 0].max())


def separation(desc: np.ndarray, truth: np.ndarray) -> None:
    scores = groups.similarity(desc, desc)
    upper = np.triu_indices(len(desc), 1)
    copies = (truth[:, None] == truth[None, :])[upper]
    pos, neg = scores[upper][copies], scores[upper][~copies]
    print(f"copy pairs {len(pos)}: lowest score {pos.min():.3f}, 1st percentile {np.percentile(pos, 1):.3f}, "
          f"median {np.median(pos):.3f}")
    tail = ", ".join(f">= {t}: {int((neg >= t).sum())}" for t in (0.15, 0.2, 0.25, 0.3, 0.35))
    print(f"non-copy pairs {len(neg)}: highest score {neg.max():.3f}, 99.99th percentile {np.percentile(neg, 99.99):.3f}, "
          f"99th {np.percentile(neg, 99):.3f}; how many {tail}")
    joined = min(weakest_link(scores, np.flatnonzero(truth == crop)) for crop in set(truth))
    print(f"every crop's copies are joined through links of {joined:.3f} or more")
    for threshold in (0.3, 0.35, 0.4, groups.THRESHOLD, 0.5, 0.55, 0.6, 0.7, 0.8):
        ids = np.array(groups.group_descriptors(desc, threshold=threshold))
        precision, recall = pair_scores(ids, truth)
        mark = "  <- THRESHOLD" if threshold == groups.THRESHOLD else ""
        print(f"  threshold {threshold:.2f}: {ids.max() + 1} groups (truth {len(set(truth))}), "
              f"pairwise precision {precision:.3f} recall {recall:.3f}{mark}")


def edits(grey: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def jpeg(a: np.ndarray, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("L"))

    noisy = grey.copy()
    hit = rng.random(grey.shape) < 0.05
    noisy[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), int(hit.sum()))
    def scaled(a: np.ndarray, gain: float, offset: float) -> np.ndarray:
        return np.clip(a * gain + offset, 0, 255).astype(np.uint8)

    return {"mirror": grey[:, ::-1], "flip": grey[::-1], "rot90": np.rot90(grey), "rot270+mirror": np.rot90(grey, 3)[:, ::-1],
            "brighter x0.6+90": scaled(grey, 0.6, 90), "contrast x1.5-60": scaled(grey, 1.5, -60),
            "gamma 0.5": (255 * (grey / 255.0) ** 0.5).astype(np.uint8), "jpeg q30": jpeg(grey, 30),
            "jpeg q10": jpeg(grey, 10), "salt-and-pepper 5%": noisy, "brighter +50 (clips)": scaled(grey, 1.0, 50),
            "rot90+mirror+x1.2-20+jpeg q40": jpeg(np.ascontiguousarray(np.rot90(scaled(grey, 1.2, -20))[:, ::-1]), 40)}


def robustness(paths: list[Path]) -> None:
    rng = np.random.default_rng(0)
    lowest: dict[str, float] = {}
    for path in paths:
        grey = groups.read_grey(path)
        base = groups.descriptor(grey)[None]
        for name, edited in edits(grey, rng).items():
            score = float(groups.similarity(base, groups.descriptor(edited)[None])[0, 0])
            lowest[name] = min(lowest.get(name, 1.0), score)
    print(f"a tile against itself edited (lowest over {len(paths)} valid tiles; threshold {groups.THRESHOLD}):")
    print("  " + "; ".join(f"{name} {score:.3f}" for name, score in lowest.items()))


def product_edges(paths: list[Path]) -> None:
    """Unrelated tiles cut along the same straight edge of a map-projected product (the same
    no-data wedge, 0, set into each): they must not score as copies."""
    greys = [groups.read_grey(p) for p in paths]
    rows, cols = np.mgrid[: greys[0].shape[0], : greys[0].shape[1]]
    out = []
    for reach in (0.3, 1.0, 1.45):
        wedge = cols * 0.8 + rows < reach * greys[0].shape[0]
        desc = np.stack([groups.descriptor(np.where(wedge, 0, g).astype(np.uint8)) for g in greys if g.shape == wedge.shape])
        scores = groups.similarity(desc, desc)
        np.fill_diagonal(scores, -1)
        out.append(f"{wedge.mean():.0%} no-data: {scores.max():.3f}")
    print(f"{len(greys)} unrelated tiles given the same no-data wedge, best score between two: " + "; ".join(out))


def leakage(ids: np.ndarray, truth: np.ndarray, n_train: int, seeds: int) -> None:
    valid, train = np.arange(n_train, len(ids)), np.arange(n_train)
    count = len(valid)
    print(f"the set's own split: {groups.leakage(truth[valid], truth[train])} of {count} valid tiles have a copy in "
          f"train by name, {groups.leakage(ids[valid], ids[train])} by content groups")
    grouped, plain, sizes = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen, pool = groups.split_groups(ids, count, rng)
        grouped.append(groups.leakage(truth[chosen], truth[pool]))
        sizes.append(len(chosen))
        order = rng.permutation(len(ids))  # the baseline: tiles drawn one by one
        plain.append(groups.leakage(truth[order[:count]], truth[order[count:]]))
    print(f"train+valid regrouped, {count} tiles set aside, {seeds} seeds: split_groups leaves "
          f"{np.mean(grouped):.2f} valid tiles with a copy in the pool (max {max(grouped)}), validation size "
          f"{min(sizes)}..{max(sizes)}; a random tile split leaves {np.mean(plain):.1f} (max {max(plain)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "hirise-pits")
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    train = sorted((args.dataset / "train" / "images").glob("*.jpg"))
    valid = sorted((args.dataset / "valid" / "images").glob("*.jpg"))
    paths = train + valid
    truth = np.array([crop_of(p) for p in paths])
    print(cpu_line())
    start = time.perf_counter()
    desc = groups.tile_descriptors(paths, progress=False)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    pairs = groups.content_pairs(desc)
    pairs_s = time.perf_counter() - start
    ids = np.array(groups.components(len(paths), pairs))
    print(f"{len(paths)} tiles ({len(train)} train, {len(valid)} valid): read + describe {read_s:.2f} s "
          f"({read_s / len(paths) * 1000:.1f} ms/tile), score all pairs {pairs_s:.3f} s, {len(pairs)} links, "
          f"{ids.max() + 1} groups")
    separation(desc, truth)
    start = time.perf_counter()
    robustness(valid)
    print(f"  ({time.perf_counter() - start:.1f} s)")
    product_edges(valid[::3])
    leakage(ids, truth, len(train), args.seeds)


if __name__ == "__main__":
    main()
