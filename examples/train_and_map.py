"""Train a decoder on a YOLO data set of pit boxes, then map a HiRISE product with it.

Start here to map pits from Python with labels you already have: the boxes of a YOLO set
become training masks (the inscribed ellipse; SAM's box masks with ``oracle="sam"`` once its
weights are downloaded), the decoder learns on the tiles' embeddings, a share of the tiles is
held back to score it, and the map is a GeoPackage of pit outlines with their measures.

The ``filterbank`` encoder needs no weights. Here the data set and the product are generated:

    python examples/train_and_map.py [WORK_FOLDER]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import al_loop


def main(work: Path) -> int:
    # a product of 2 x 2 tiles, and a YOLO set of other tiles (small, so that the example runs in seconds)
    sample = al_loop.write_sample_product(work / "sample", columns=2, rows=2, side=256)

    # 1. Train: epochs, encoder, oracle... default to the settings' defaults (al-loop config lists them).
    job = al_loop.DatasetTraining(sample["training"], encoder="filterbank", epochs=10, held_out=0.25)
    trained = al_loop.train_from_dataset(job, work / "decoder.pt", al_loop.EmbeddingCache(work / "cache"),
                                         progress=False)
    fit = trained.held_out["metrics"]
    print(f"decoder trained on {trained.tiles} tiles ({trained.boxes} boxes); on {len(trained.held_out['tiles'])} "
          f"held-out tiles: object recall {fit['object_recall']:.2f}, pixel IoU of pits {fit['iou_pit']:.2f}")

    # 2. Map: the product is tiled like the training tiles, each tile embedded, the decoder's
    # probabilities blended across tiles, and each pit written with its outline and measures.
    report = al_loop.map_products(al_loop.MapJob(products=[sample["product"]], out=work / "pits.gpkg",
                                                 tiles=work / "tiles", decoder=work / "decoder.pt",
                                                 cache_dir=work / "cache", progress=False, quicklook=False))
    for failure in report.failures:
        print(f"not mapped: {failure}")
    print(f"mapped {sum(report.pits.values())} pit(s) in {len(report.pits)} product(s): {work / 'pits.gpkg'}")
    return 0 if not report.failures else 1


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="al-loop-example-"))
    sys.exit(main(folder))
