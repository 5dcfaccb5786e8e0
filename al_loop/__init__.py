"""Active learning for mapping Martian pits and skylights: SAM, a domain decoder, Label Studio.

The flow, one sub-package per step: ``settings`` (every setting and its one resolver)
-> ``data`` (tiles, YOLO datasets, near-duplicate groups) -> ``models`` (geometry, SAM,
encoders, the domain decoder) -> ``embeddings`` (the content-addressed cache) ->
``training`` (boxes -> masks, decoder training, the decoder store) -> ``query``
(uncertainty, strategies, selection) -> ``evaluation`` -> ``studio`` (the Label Studio
edge, and the one training path on its answers) -> ``loop`` (workspace, init, next-batch)
-> ``mapping`` (products to a GIS pit map), ``experiment`` (the paper's experiment,
``al-loop simulate``) and ``demo`` (``al-loop demo``, its local servers, the simulated
expert). ``errors`` holds every user-fixable error.

The names below are the public API; they are imported on first use, so
``import al_loop`` stays cheap (the command line starts without loading torch).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "AlLoopError": "al_loop.errors",
    "EmbeddingCache": "al_loop.embeddings.cache",
    "embed_files": "al_loop.embeddings.embed",
    "TileRef": "al_loop.embeddings.embed",
    "build_encoder": "al_loop.models.encoders",
    "ENCODERS": "al_loop.models.encoders",
    "DomainDecoder": "al_loop.models.decoder",
    "predict_tile": "al_loop.models.decoder",
    "predict_tile_classes": "al_loop.models.decoder",
    "load_decoder": "al_loop.models.decoder",
    "PromptSegmenter": "al_loop.models.sam",
    "load_sam": "al_loop.models.sam",
    "TrainingSet": "al_loop.training.train",
    "train_decoder": "al_loop.training.train",
    "select": "al_loop.query.select",
    "STRATEGIES": "al_loop.query.strategies",
    "evaluate": "al_loop.evaluation.arrays",
    "typed_label_config": "al_loop.studio.label_config",
    "Workspace": "al_loop.loop.workspace",
    "init_workspace": "al_loop.loop.init",
    "next_batch": "al_loop.loop.next_batch",
    "open_product": "al_loop.data.products",
    "tile_products": "al_loop.data.tiling",
    "DatasetTraining": "al_loop.mapping.from_dataset",
    "train_from_dataset": "al_loop.mapping.from_dataset",
    "TrainingRecipe": "al_loop.training.fit",
    "DecoderCard": "al_loop.models.card",
    "MapJob": "al_loop.mapping.run",
    "measure_layer": "al_loop.science.pit_measures",
    "compare_map": "al_loop.science.compare",
    "write_yolo_dataset": "al_loop.data.synthetic",
    "write_sample_product": "al_loop.data.sample_products",
    "map_products": "al_loop.mapping.run",
    "SimulationConfig": "al_loop.experiment.simulate",
    "run_simulation": "al_loop.experiment.simulate",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'al_loop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
