"""Every script in examples/ runs as a scientist would run it, on generated data, and exits 0.

Each runs in a child process from a fresh folder (so it sees only the public API and the
environment a user has), with a private embedding cache."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples_to_start_from():
    assert {"train_and_map.py", "measure_and_compare.py"} <= {p.name for p in EXAMPLES}


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_example_runs_and_exits_0(script: Path, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AL_LOOP_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "work")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} said nothing of what it did"
