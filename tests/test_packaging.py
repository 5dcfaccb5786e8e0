"""A wheel (what `pip install .` and the Docker image without `-e` get) carries the labelling config."""
from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_install_finds_the_labelling_config(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    venv.create(tmp_path / "env", with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    # Run from elsewhere so the checkout's label_config/ cannot be the one found.
    shown = subprocess.run([python, "-c", "from al_loop.studio.label_config import default_label_config, SEARCH_PATH;"
                            "import sys; print(default_label_config()[:200])"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "<View>" in shown


def test_a_missing_config_names_where_it_looked(tmp_path, monkeypatch):
    import al_loop.studio.label_config as lc

    monkeypatch.setattr(lc, "SEARCH_PATH", (tmp_path / "checkout", tmp_path / "prefix"))
    with pytest.raises(FileNotFoundError, match="checkout"):
        lc.default_label_config()
