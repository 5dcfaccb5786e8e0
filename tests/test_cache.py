import multiprocessing as mp
import shutil

import numpy as np
import pytest

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.embed import embed_files
from al_loop.errors import ImageError
from al_loop.models.filterbank import FilterbankEncoder

from .conftest import write_png


class CountingEncoder:
    """The filter bank, counting its passes: proves what is cached is never re-encoded."""

    id = FilterbankEncoder.id
    grid = FilterbankEncoder.grid
    channels = FilterbankEncoder.channels

    def __init__(self):
        self.inner = FilterbankEncoder()
        self.calls = 0

    def encode(self, tile):
        self.calls += 1
        return self.inner.encode(tile)


def _tiles(directory, n, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_png(directory / f"t{i}.png", rng.integers(0, 255, (96, 80), dtype=np.uint8)) for i in range(n)]


def test_each_tile_encoded_once_ever(tmp_path):
    paths = _tiles(tmp_path / "img", 4)
    enc = CountingEncoder()
    first = embed_files(paths, enc, EmbeddingCache(tmp_path / "c"), progress=False)
    assert (first.hits, first.misses, enc.calls) == (0, 4, 4)
    # a new process would build a new cache object: same directory, no re-encoding
    fresh = EmbeddingCache(tmp_path / "c")
    again = embed_files(paths, enc, fresh, progress=False)
    assert (again.hits, again.misses, enc.calls) == (4, 0, 4)
    assert fresh.stats.encodes == 0


def test_key_is_content_not_name(tmp_path):
    (a,) = _tiles(tmp_path / "img", 1)
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path / "c")
    embed_files([a], enc, cache, progress=False)
    shutil.copy(a, tmp_path / "renamed.png")
    assert embed_files([tmp_path / "renamed.png"], enc, cache, progress=False).hits == 1
    other = write_png(tmp_path / "changed.png", np.full((96, 80), 7, np.uint8))
    assert embed_files([other], enc, cache, progress=False).misses == 1
    assert enc.calls == 2


def test_stored_float16_and_memory_mapped(tmp_path):
    paths = _tiles(tmp_path / "img", 1)
    cache = EmbeddingCache(tmp_path / "c")
    ref = embed_files(paths, FilterbankEncoder(), cache, progress=False).refs[0]
    arr = cache.load(ref.sha256, FilterbankEncoder.id)
    assert arr.dtype == np.float16 and isinstance(arr, np.memmap)
    assert arr.shape == (FilterbankEncoder.channels, 64, 64)
    assert ref.size == (96, 80)


def test_encoder_id_separates_entries(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    assert cache.path("ab" * 32, "filterbank-v1") != cache.path("ab" * 32, "sam-vit_b-01ec64")


def test_failed_encode_leaves_no_entry(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")

    def boom():
        raise RuntimeError("killed mid-encode")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("cd" * 32, "enc", boom)
    assert not cache.contains("cd" * 32, "enc")
    assert not list((tmp_path / "c").rglob("*.npy")) and not list((tmp_path / "c").rglob("*.tmp"))


def test_bad_files_reported_batch_goes_on(tmp_path):
    _tiles(tmp_path / "img", 2)
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    report = embed_files(sorted((tmp_path / "img").iterdir()), FilterbankEncoder(), EmbeddingCache(tmp_path / "c"), progress=False)
    assert len(report.refs) == 2
    assert sorted(f.source.rsplit("/", 1)[-1] for f in report.failures) == ["broken.png", "empty.png"]
    assert all(isinstance(f, ImageError) and f.reason for f in report.failures)


def _race(args):
    root, sha, counter_dir = args
    import os
    import time

    cache = EmbeddingCache(root)

    def slow():
        (counter_dir / f"encode-{os.getpid()}").write_text("1")
        time.sleep(0.5)
        return np.ones((4, 2, 2), np.float32)

    return float(cache.get_or_compute(sha, "enc", slow).sum())


def test_two_processes_missing_at_once_encode_once(tmp_path):
    counter = tmp_path / "counter"
    counter.mkdir()
    with mp.get_context("spawn").Pool(3) as pool:
        sums = pool.map(_race, [(tmp_path / "c", "ef" * 32, counter)] * 3)
    assert sums == [16.0, 16.0, 16.0]
    assert len(list(counter.iterdir())) == 1


def test_threads_missing_at_once_encode_once(tmp_path):
    import time
    from concurrent.futures import ThreadPoolExecutor

    cache = EmbeddingCache(tmp_path / "c")
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.3)
        return np.zeros((2, 2, 2), np.float32)

    with ThreadPoolExecutor(6) as ex:
        list(ex.map(lambda _: cache.get_or_compute("01" * 32, "enc", slow), range(6)))
    assert len(calls) == 1 and cache.stats.encodes == 1 and cache.stats.hits == 5
