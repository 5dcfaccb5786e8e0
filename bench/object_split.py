"""Do split and scored objects match the expert better? Mapped objects against expert boxes held out from training.

On ../shared/data/hirise-pits (train + valid, 443 tiles): tiles are grouped by content
(al_loop.data.groups: mirrored and re-encoded copies of one crop are one group), ``--held``
whole groups are set aside, and a decoder is trained on the filter-bank (no-weights)
embeddings of every other tile, with the expert's boxes as ellipse masks (``al-loop train``'s
recipe, ``--epochs``). One tile of each held-out group goes into a 3 x 3 mosaic, written as
a HiRISE-style product (JP2 + PDS3 label, 0.25 m/px), and mapped by ``al-loop map``'s own path
(``mapping.run.map_products``: tiled at the decoder's tile side, blended, assembled). The
blended probability strips are recorded and assembled again four ways:

- ``labels``: today's map (4-connected components of p >= 0.5);
- ``split``: components cut at their saddles (mapping/objects.py);
- ``labels+score`` / ``split+score``: and objects scoring under the rule's ``min_score`` dropped.

Each keeps the map's size rules (``min_object_pixels``, the area limits from the training
pits' sizes) and is compared with the held-out tiles' expert boxes: one-to-one matches at box
IoU >= 0.5 and with the object's centre inside the box (Hungarian assignment), precision,
recall and F1 over all mosaics; the objects' count, the share of the product they cover and
the largest one's share. The held-out mosaics are reported in two halves: the first (tuning) is
where ``min_score`` was chosen (the sweep printed first), the second chose nothing. A mosaic of
nine training tiles (the decoder has seen them: the issue's setting) is reported apart.

    python bench/object_split.py [--held 36] [--epochs 20] [--seed 0] [--out /tmp/object-split] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from al_loop.models.engines import cpu_summary as cpu  # the CPU's model and the flags that decide speed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
COLUMNS = 3  # mosaics of 3 x 3 tiles
VARIANTS = {"labels": (False, False), "split": (True, False), "labels+score": (False, True), "split+score": (True, True)}


def split_tiles(held: int, seed: int) -> tuple[list, list[list[int]], list[int]]:
    """(tiles, held-out groups as lists of tile indices, training tile indices): whole groups of copies."""
    from al_loop.data.groups import group_tiles
    from al_loop.data.yolo import load_split

    tiles = [t for split in ("train", "valid") for t in load_split(HIRISE, split)[0]]
    ids = np.asarray(group_tiles([t.image for t in tiles], progress=False))
    groups = [np.flatnonzero(ids == g).tolist() for g in np.unique(ids)]
    boxed = [g for g in groups if any(len(tiles[i].boxes) for i in g)]
    order = np.random.default_rng(seed).permutation(len(boxed))
    chosen = [boxed[k] for k in order[:held]]
    out = {i for g in chosen for i in g}
    return tiles, chosen, [i for i in range(len(tiles)) if i not in out]


def train(tiles: list, fit: list[int], out: Path, epochs: int, seed: int) -> Path:
    """A filter-bank decoder on the ``fit`` tiles, saved at ``out`` with its card (pit sizes, tile side)."""
    from al_loop.data.radiometry import file_statistics
    from al_loop.embeddings.cache import EmbeddingCache
    from al_loop.models.card import DecoderCard
    from al_loop.models.decoder import save_decoder
    from al_loop.models.pits import size_record, tile_side
    from al_loop.training.fit import OracleMasks, TrainingRecipe, embed_tiles, train_on_tiles

    recipe = TrainingRecipe(encoder="filterbank", oracle="box", epochs=epochs)
    cache, encoder = EmbeddingCache(), recipe.lazy_encoder()
    embedded = embed_tiles([tiles[i] for i in fit], encoder, cache, progress=False)
    masks = OracleMasks(recipe.build_oracle(cache), embedded.tiles, 1)
    chosen = range(len(embedded))
    decoder = train_on_tiles(embedded, masks, chosen, types=1, encoder_id=encoder.id, cache=cache, recipe=recipe,
                             seed=seed, progress=False)
    values = file_statistics(t.image for t in embedded.tiles)
    card = DecoderCard(encoder.id, "filterbank", precision=encoder.precision, runtime=encoder.runtime,
                       version="bench-object-split", type_names=["pit"], tiles=len(embedded), epochs=epochs,
                       oracle="box", dataset=str(HIRISE), pit_sizes=size_record([masks[i] for i in chosen]),
                       radiometry=values.to_meta() if values else None,
                       tile_side=tile_side([t.size for t in embedded.tiles]))
    save_decoder(decoder, out, card)
    return out


def mosaic_product(tiles: list, picks: list[int], folder: Path, name: str) -> tuple[Path, np.ndarray]:
    """A product of the picked tiles (3 per row) and their expert boxes (N, 4) x0, y0, x1, y1 in its pixels."""
    from PIL import Image

    from al_loop.data import sample_products as sp

    grey = [np.asarray(Image.open(tiles[i].image).convert("L")) for i in picks]
    side = grey[0].shape[0]
    boxes = [tiles[i].boxes + np.tile([(k % COLUMNS) * side, (k // COLUMNS) * side], 2) for k, i in enumerate(picks)]
    label = sp.write_hirise_rdr(sp.mosaic(grey, COLUMNS, null_corner=False), folder, name, -10.0, 130.0)
    return label, np.concatenate(boxes).reshape(-1, 4)


def mapped_strips(label: Path, decoder: Path, work: Path) -> tuple[list, object, int, dict, int]:
    """Map the product through ``map``'s path, recording the blended strips the assembler gets:
    (strips, entry, the map's min_object_pixels, the decoder's pit sizes, the pits ``map`` wrote)."""
    from al_loop.mapping import assemble, run
    from al_loop.models.pits import min_object_pixels

    strips: list = []

    class Recorder(assemble.PitAssembler):
        def add(self, strip):
            strips.append(strip)
            super().add(strip)

    run.PitAssembler = Recorder
    try:
        job = run.MapJob([label], work / "pits.gpkg", work / "tiles", decoder=decoder, quicklook=False, progress=False)
        model = run.load_map_model(decoder, None, None, run.EmbeddingCache(), run.resolve())
        report = run.map_products(job)
    finally:
        run.PitAssembler = assemble.PitAssembler
    if report.failures:
        raise SystemExit(str(report.failures[0]))
    product, count = next(iter(report.pits.items()))
    entry = run.load_manifest(job.tiles)[product]
    minimum = min_object_pixels((entry.tile_size, entry.tile_size), model.encoder.grid)
    return strips, entry, minimum, model.pit_sizes, count


def objects(strips: list, entry, minimum: int, sizes: dict, split: bool, score: bool, rule=None) -> list:
    """The map's objects from recorded strips, one variant, within the map's area limits (in pixels)."""
    from al_loop.mapping.assemble import PitAssembler
    from al_loop.mapping.objects import DEFAULT_RULE
    from al_loop.models.pits import MAX_AREA_FACTOR, MIN_AREA_FACTOR

    assembler = PitAssembler(entry.transform, entry.width, entry.height, split=split, rule=rule or DEFAULT_RULE)
    for strip in strips:
        assembler.add(strip)
    pits = assembler.finish(min_pixels=minimum, sizes=sizes, drop_flagged=score)
    low, high = MIN_AREA_FACTOR * sizes["p5_pixels"], MAX_AREA_FACTOR * sizes["max_pixels"]
    return [p for p in pits if low <= p.n_pixels <= high]


def pixel_boxes(pits: list, transform: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) x0, y0, x1, y1 boxes and (N, 2) outline centroids, in product pixels."""
    a, _, c, _, e, f = transform
    boxes = np.array([p.bbox for p in pits], float).reshape(-1, 4)
    centres = np.array([((p.polygon.centroid.x - c) / a, (p.polygon.centroid.y - f) / e) for p in pits]).reshape(-1, 2)
    return boxes, centres


def matches(boxes: np.ndarray, centres: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """One-to-one matches (at box IoU >= 0.5, with the centre in the box) of objects to expert boxes."""
    from scipy.optimize import linear_sum_assignment

    from al_loop.evaluation.metrics import match_boxes

    if not len(boxes) or not len(truth):
        return 0, 0
    inside = ((centres[:, None, 0] >= truth[None, :, 0]) & (centres[:, None, 0] < truth[None, :, 2])
              & (centres[:, None, 1] >= truth[None, :, 1]) & (centres[:, None, 1] < truth[None, :, 3]))
    rows, cols = linear_sum_assignment(-inside.astype(float))
    return match_boxes(boxes, truth, 0.5), int(inside[rows, cols].sum())


def scores(rows: list[dict]) -> dict:
    """Totals over mosaics: precision, recall and F1 at IoU >= 0.5 and centre-in-box; count, cover, largest."""
    n, truth = sum(r["objects"] for r in rows), sum(r["truth"] for r in rows)
    out = {"objects": n, "truth": truth, "cover": float(np.mean([r["cover"] for r in rows])),
           "largest": float(max(r["largest"] for r in rows))}
    for key in ("iou", "centre"):
        hit = sum(r[key] for r in rows)
        p, r = hit / max(n, 1), hit / max(truth, 1)
        out.update({f"{key}_p": p, f"{key}_r": r, f"{key}_f1": 2 * p * r / max(p + r, 1e-9)})
    return out


def measured(mapped: tuple, truth: np.ndarray, split: bool, score: bool, rule=None) -> dict:
    """One variant's figures on one mapped mosaic (``mapped``: :func:`mapped_strips`'s answer)."""
    from al_loop.mapping.objects import size_fit

    strips, entry, minimum, sizes, _ = mapped
    pits = objects(strips, entry, minimum, sizes, split, score, rule)
    boxes, centres = pixel_boxes(pits, entry.transform)
    iou, centre = matches(boxes, centres, truth)
    pixels = np.array([p.n_pixels for p in pits])
    area = entry.width * entry.height
    return {"objects": len(pits), "truth": len(truth), "iou": iou, "centre": centre,
            "cover": float(pixels.sum() / area), "largest": float(pixels.max(initial=0) / area),
            "off_size": int((size_fit(pixels, sizes) < 1).sum()), "cut": int(sum(p.parts > 1 for p in pits))}


def table(title: str, rows: dict[str, list[dict]]) -> dict[str, dict]:
    print(f"\n{title}")
    print(f"{'variant':<14}{'objects':>8}{'boxes':>7}{'P@IoU.5':>9}{'R@IoU.5':>9}{'F1':>6}{'P@ctr':>7}{'R@ctr':>7}"
          f"{'F1':>6}{'cover %':>9}{'largest %':>11}")
    out = {}
    for name, per_mosaic in rows.items():
        s = out[name] = scores(per_mosaic)
        print(f"{name:<14}{s['objects']:>8}{s['truth']:>7}{s['iou_p']:>9.2f}{s['iou_r']:>9.2f}{s['iou_f1']:>6.2f}"
              f"{s['centre_p']:>7.2f}{s['centre_r']:>7.2f}{s['centre_f1']:>6.2f}{100 * s['cover']:>9.1f}"
              f"{100 * s['largest']:>11.1f}")
    return out


def variants(mosaics: list[tuple]) -> dict[str, list[dict]]:
    """Every variant's per-mosaic figures (``mosaics``: (mapped, truth) pairs)."""
    return {name: [measured(m, truth, split, score) for m, truth in mosaics] for name, (split, score) in VARIANTS.items()}


def sweep(mosaics: list[tuple]) -> None:
    """min_score on the tuning mosaics (components not cut): what the default was chosen on."""
    from al_loop.mapping.objects import DEFAULT_RULE

    print("\nmin_score on the tuning half (labels+score): objects, F1 at IoU >= 0.5, F1 centre-in-box")
    for value in (0.1, 0.2, 0.3, 0.4):
        rule = replace(DEFAULT_RULE, min_score=value)
        s = scores([measured(m, truth, False, True, rule) for m, truth in mosaics])
        print(f"  {value:.1f}: {s['objects']:>4} {s['iou_f1']:.2f} {s['centre_f1']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=36, help="held-out groups of copies (one tile each in the mosaics)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/object-split"))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not (HIRISE / "data.yaml").is_file():
        raise SystemExit(f"no HiRISE pits set at {HIRISE} (set HIRISE_PITS_DIR)")
    os.environ.setdefault("AL_LOOP_CACHE_DIR", str(args.out / "cache"))
    started = time.perf_counter()
    print(f"CPU: {cpu()}")
    tiles, held, fit = split_tiles(args.held, args.seed)
    decoder = train(tiles, fit, args.out / f"decoder-{args.seed}-{args.held}-{args.epochs}.pt", args.epochs, args.seed)
    print(f"trained on {len(fit)} tiles ({len(tiles) - len(fit)} held out, {len(held)} groups), "
          f"{args.epochs} epochs: {time.perf_counter() - started:.0f} s")
    picks = [g[0] for g in held]
    mosaics = []
    for k in range(len(picks) // (COLUMNS * COLUMNS)):
        label, truth = mosaic_product(tiles, picks[k * 9 : (k + 1) * 9], args.out / f"held{k}", f"HELD_{args.seed}_{k}_RED")
        mosaics.append((mapped_strips(label, decoder, args.out / f"work-held{k}"), truth))
    label, truth = mosaic_product(tiles, fit[::3][:9], args.out / "seen", f"SEEN_{args.seed}_RED")
    seen = [(mapped_strips(label, decoder, args.out / "work-seen"), truth)]
    print(f"mapped {len(mosaics) + 1} mosaics: {time.perf_counter() - started:.0f} s")
    half = len(mosaics) // 2
    results = {}
    sweep(mosaics[:half])
    for title, part in ((f"held out, tuning half ({half} mosaics of 9 tiles the decoder never saw)", mosaics[:half]),
                        (f"held out, test half ({len(mosaics) - half} mosaics, not used to choose anything)", mosaics[half:]),
                        ("seen (one mosaic of 9 training tiles: the issue's setting)", seen)):
        rows = variants(part)
        results[title] = {"totals": table(title, rows), "per_mosaic": rows}
        print(f"  pits `map` itself wrote: {sum(m[4] for m, _ in part)}; "
              f"objects outside the training sizes: {sum(r['off_size'] for r in rows['labels'])}; "
              f"objects cut from a larger blob (split): {sum(r['cut'] for r in rows['split'])}")
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        from dataclasses import asdict

        from al_loop.mapping.objects import DEFAULT_RULE

        args.json.write_text(json.dumps({"cpu": cpu(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "rule": asdict(DEFAULT_RULE), "results": results}, indent=1))


if __name__ == "__main__":
    main()
