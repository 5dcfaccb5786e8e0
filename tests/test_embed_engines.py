"""`al-loop embed` on the local engine and on a real local Ray (issue 16): the same entries,
byte for byte; reruns encode nothing; a run killed midway is finished by the rerun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from al_loop.embeddings.cache import EmbeddingCache
from al_loop.embeddings.engine import CACHED, ENCODED, FAILED, EmbedConfig, run_local, tile_sources

from .conftest import write_tiles

ray = pytest.importorskip("ray", reason='the Ray engine needs Ray: pip install -e ".[ray]" (CI installs it)')
pytestmark = pytest.mark.timeout(600)  # a hung cluster fails this module, not the whole CI run


@pytest.fixture(scope="module")
def local_ray():
    # Two CPUs, as CI has: two actors of one CPU each take them all, with no read task beside them.
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started_here:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engine-tiles")
    write_tiles(folder, 8, size=128)
    (folder / "notes.png").write_text("field notes, not an image")
    return folder


def entries(cache_root: Path) -> dict[str, bytes]:
    return {p.relative_to(cache_root).as_posix(): p.read_bytes() for p in cache_root.rglob("*.npy")}


@pytest.mark.parametrize("encoder", ["sam-tiny"])  # the kill test below runs filterbank on Ray
def test_ray_and_local_engines_write_byte_identical_entries(local_ray, tiles, tmp_path, encoder):
    from al_loop.embeddings.ray_engine import run_ray

    sources = tile_sources([tiles])
    local = run_local(sources, EmbedConfig(encoder, cache=str(tmp_path / "local")), batch_size=3, progress=False)
    on_ray = run_ray(sources, EmbedConfig(encoder, cache=str(tmp_path / "ray")), workers=2, batch_size=2, progress=False)
    for run in (local, on_ray):
        assert run.counts == {ENCODED: 8, FAILED: 1}
        (failure,) = run.failures
        assert failure["source"].endswith("notes.png") and "not an image" in failure["reason"]
    written = entries(tmp_path / "local")
    assert len(written) == 8 and written == entries(tmp_path / "ray")
    assert sorted(r["sha256"] for r in local.rows if r["sha256"]) == sorted(r["sha256"] for r in on_ray.rows if r["sha256"])
    again = run_ray(sources, EmbedConfig(encoder, cache=str(tmp_path / "ray")), workers=1, batch_size=4, progress=False)
    assert again.counts == {CACHED: 8, FAILED: 1} and again.phases["model load"] == 0.0


def test_sources_come_from_folders_manifests_and_lists(tiles, tmp_path):
    listed = tmp_path / "tiles.txt"
    names = sorted(str(p) for p in tiles.glob("tile-*.png"))
    listed.write_text("# tiles to encode\n" + "\n".join(names[:3]) + "\n\n")
    assert tile_sources([listed]) == names[:3]
    assert tile_sources([listed, names[0], tiles]) == list(dict.fromkeys(names[:3] + sorted(str(p) for p in tiles.glob("*.png"))))
    assert tile_sources(["s3://bucket/tiles/a.png"]) == ["s3://bucket/tiles/a.png"]


def _embed(tiles: Path, cache: Path, report: Path) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "al-loop"), "embed", str(tiles), "--engine", "ray", "--workers", "1",
        "--batch-size", "1", "--encoder", "filterbank", "--cache-dir", str(cache), "--report", str(report), "--quiet",
    ]
    env = dict(os.environ, RAY_ADDRESS="")  # its own local Ray, not the test's
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _settled(cache: Path) -> int:
    """The entry count once it has stopped changing for 3 s."""
    count, since = len(entries(cache)), time.monotonic()
    while time.monotonic() - since < 3:
        time.sleep(0.5)
        if len(entries(cache)) != count:
            count, since = len(entries(cache)), time.monotonic()
    return count


def test_a_ray_run_killed_midway_is_finished_by_the_rerun(tmp_path):
    folder = tmp_path / "tiles"
    write_tiles(folder, 12, size=160)
    cache = tmp_path / "cache"
    first = _embed(folder, cache, tmp_path / "first.json")
    deadline = time.monotonic() + 240
    while len(entries(cache)) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    done = _settled(cache)  # the cluster's worker may finish the tile in hand before it notices
    assert 2 <= done < 12, f"the kill should land midway ({done} of 12 encoded)"
    second = _embed(folder, cache, tmp_path / "second.json")
    output = second.communicate(timeout=400)[0].decode()
    assert second.returncode == 0, output[-2000:]
    report = json.loads((tmp_path / "second.json").read_text())
    statuses = [row["status"] for row in report["tiles"]]
    assert statuses.count(CACHED) == done and statuses.count(ENCODED) == 12 - done
    assert len(entries(cache)) == 12 and not list(cache.rglob("*.tmp"))
    assert all(EmbeddingCache(cache).contains(row["sha256"], "filterbank-v1") for row in report["tiles"])
