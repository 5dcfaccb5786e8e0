from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HIRISE = Path(os.environ.get("HIRISE_PITS_DIR", ROOT.parent / "shared" / "data" / "hirise-pits"))
# Without a named runtime a CPU machine with the openvino extra (CI's) encodes on OpenVINO; the
# suite pins torch so that its exact comparisons hold everywhere, and test_runtimes.py tests
# the other engines and the default by name.
os.environ.setdefault("AL_LOOP_RUNTIME", "torch")

# Markers put on at collection, so that a new test gets them from what it uses, without anyone
# remembering: `make check` deselects studio, server and slow (the Makefile's CHECK_MARKERS), `make
# test` runs everything; tests/test_make_targets.py checks that no server-using module slips through.
# A test whose fixtures (the whole closure, not only its own arguments) include one of these.
FIXTURE_MARKERS = {"label_studio": "studio", "hirise": "hirise"}
# A module holding, at its top level, a class or module of one of these starts a server process or
# a cluster: the gunicorn backend or Label Studio (al_loop.demo.servers), moto's S3 server, Ray, a browser.
SERVER_MODULES = ("al_loop.demo.servers", "moto", "ray", "playwright")
# What the rules above cannot see, with the reason.
MODULE_MARKERS = {
    "test_demo_browser": ("studio", "server"),  # runs `al-loop demo` in a child: Label Studio, the backend, Chromium
    "test_candidates": ("server",),  # the candidates page in headless Chromium (playwright imported in the test)
    "test_report": ("server",),  # the report page in headless Chromium
    "test_team_demo": ("studio", "server"),  # runs `al-loop demo --annotators 2` in a child, PostgreSQL, Chromium
}
# slow: what keeps `make check` under 3 minutes on a 2-core CPU (seconds measured there; a test named
# here that no longer exists fails tests/test_make_targets.py). By fixture: every test that uses it.
SLOW_FIXTURES = {
    "mapped": 61,  # test_map.py: train (in process), then map in a child process
    "products": 63,  # test_products.py: a 3600 x 2700 JP2 and GeoTIFF, tiled again by each test
    "upstream": 19,  # test_mobilesam.py: upstream MobileSAM built and run on a 1024 px image
    "sample": 104,  # test_map_outputs.py: sample --product, train on its 38 tiles, map
}
SLOW_TESTS = {
    "test_simulate.py::test_simulate_cli_synthetic_filterbank": 179,
    "test_simulate.py::test_simulate_on_real_hirise": 70,  # a 40-tile pool, the shared cache
    "test_simulate.py::test_round_two_takes_what_the_round_one_decoder_is_least_sure_of": 16,
    "test_simulate.py::test_simulate_tiny_sam_encoder_and_sam_oracle_never_train_the_encoder": 26,
    "test_pit_types.py::test_decoder_trained_on_typed_masks_of_the_real_valid_split_predicts_several_types": 243,
    "test_pit_types.py::test_simulate_classes_reports_per_type_figures": 70,
    "test_runtimes.py::test_two_processes_converting_at_once_leave_one_whole_model": 19,
    "test_cache.py::test_two_processes_missing_at_once_encode_once": 14,
    "test_map.py::test_train_holds_out_tiles_and_a_decoder_says_what_it_is": 55,
    "test_simulate.py::test_a_data_sets_own_leaky_split_is_measured_and_regrouped": 12,
    "test_loop_init.py::test_no_validation_tile_has_a_copy_in_the_pool": 40,
    "test_map_radiometry.py::test_a_mosaic_of_the_training_tiles_maps_like_the_tiles": 75,
    "test_vit_t.py::test_vit_t_on_a_runtime_gives_torch_fp32_embeddings": 70,
    "test_vit_t.py::test_train_and_map_with_vit_t": 40,
    "test_vit_t.py::test_the_backends_smart_box_on_vit_t_is_sam_predictors_mask": 25,
}


def _starts_servers(module) -> bool:
    for value in vars(module).values():
        if inspect.ismodule(value):
            name = value.__name__
        elif inspect.isclass(value):
            name = value.__module__
        else:
            continue
        if any(name == prefix or name.startswith(prefix + ".") for prefix in SERVER_MODULES):
            return True
    return False


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        names = {FIXTURE_MARKERS[f] for f in fixtures & FIXTURE_MARKERS.keys()}
        if fixtures & SLOW_FIXTURES.keys() or f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW_TESTS:
            names.add("slow")
        module = getattr(item, "module", None)
        if module is not None:
            if _starts_servers(module):
                names.add("server")
            names.update(MODULE_MARKERS.get(module.__name__.rpartition(".")[2], ()))
        for name in sorted(names - {mark.name for mark in item.iter_markers()}):
            item.add_marker(name)


@pytest.fixture(scope="session")
def hirise() -> Path:
    if not (HIRISE / "data.yaml").is_file():
        pytest.skip(f"real HiRISE data not found at {HIRISE} (set HIRISE_PITS_DIR or place ../shared/data/hirise-pits)")
    return HIRISE


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One embedding cache for the session's tests that encode the same real HiRISE tiles with the
    filter bank (the valid split, the first train tiles): an entry is keyed by the image's bytes and
    the encoder, so a later test reads what an earlier one encoded (about 0.7 s a 900 px tile on CI's
    2 cores) instead of encoding it again. What a test asserts about encoding or the cache itself
    stays on a cache of its own."""
    return tmp_path_factory.mktemp("shared-embeddings")


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from al_loop.data.synthetic import write_yolo_dataset

    return write_yolo_dataset(tmp_path_factory.mktemp("synthetic"), train=24, valid=6, seed=3, size=256)


@pytest.fixture
def cache(tmp_path):
    from al_loop.embeddings.cache import EmbeddingCache

    return EmbeddingCache(tmp_path / "cache")


@pytest.fixture(scope="session")
def tiny_sam():
    from al_loop.models.sam import build_tiny_sam

    return build_tiny_sam()


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio on loopback for the whole session, on PostgreSQL (the database a team
    runs it on, issue 39) where the system has a PostgreSQL server (`make postgres`), else SQLite;
    test_studio_postgres.py fails the PostgreSQL case apart, so CI cannot fall back unseen."""
    import shutil
    import sys

    from al_loop.demo.servers import LabelStudioServer, PostgresServer, postgres_bin
    from al_loop.errors import ServerError

    if not (Path(sys.executable).parent / "label-studio").exists() and not shutil.which("label-studio"):
        pytest.skip("label-studio is not installed (pip install -e '.[test]')")
    try:
        postgres_bin()
        postgres = PostgresServer().start()
    except ServerError:
        postgres = None
    root = tmp_path_factory.mktemp("label-studio")
    try:
        server = LabelStudioServer(root / "data", root / "files", postgres=postgres).start()
        yield server
        server.stop()
    finally:
        if postgres:
            postgres.stop()


def write_tiles(directory: Path, count: int, size: int = 256, seed: int = 0) -> list[Path]:
    """Generated Mars-like tiles as PNG files, with their expert boxes kept beside (``.boxes.npy``)."""
    from al_loop.data.synthetic import generate_tile

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        tile = generate_tile(seed + i, size)
        path = write_png(directory / f"tile-{seed + i:03d}.png", tile.image)
        np.save(path.with_suffix(".boxes.npy"), tile.boxes)
        paths.append(path)
    return paths


def cli_here(*argv, env: dict | None = None, cwd: Path | None = None):
    """An al-loop command run by ``al_loop.cli.main`` in the test's own process, as a child would run
    it: the same parsing, settings, work and exit code, under exactly ``env`` (the whole environment,
    as for subprocess; os.environ is restored after) and in ``cwd``; its stdout and stderr captured.
    Returns a ``subprocess.CompletedProcess``. A child costs CI some 6-10 s of imports (torch,
    segment_anything, Label Studio's SDK) and proves nothing more where the test is about what the
    command does, not about the process; every command keeps real child runs elsewhere in the suite."""
    import contextlib
    import io
    import subprocess

    from al_loop.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if env is not None:
            for key in set(os.environ) - set(env):
                mp.delenv(key)
            for key, value in env.items():
                if os.environ.get(key) != value:
                    mp.setenv(key, value)
        if cwd is not None:
            mp.chdir(cwd)
        code = main([str(a) for a in argv])
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@contextmanager
def serving(handler: type) -> Iterator[str]:
    """A real threaded HTTP server on loopback with ``handler``; yields its base URL."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a handler still trickling bytes must not hold the test's exit
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
