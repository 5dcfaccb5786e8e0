import json
import os

import numpy as np
import pytest

from al_loop.cli import build_parser, main
from al_loop.errors import ImageError, LabelStudioError

from .conftest import write_png


def test_help_names_tiny_as_tests_only(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    assert "tiny" in text and "tests and CI only" in text and "filterbank" in text


@pytest.mark.parametrize("command", [["embed"], ["sample"], ["simulate"], ["weights", "download"], ["weights", "list"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0 and "usage: al-loop" in capsys.readouterr().out


def test_embed_reports_hits_and_misses_and_resumes(tmp_path, capsys):
    images = tmp_path / "tiles"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(images / f"{i}.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    args = ["embed", str(images), "--encoder", "filterbank", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    assert "3 encoded, 0 already cached, 0 failed" in capsys.readouterr().out
    write_png(images / "new.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    (images / "bad.png").write_bytes(b"not a png")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "1 encoded, 3 already cached, 1 failed" in captured.out
    assert "bad.png" in captured.err


def test_embed_errors_are_clear(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "missing")]) == 2
    assert "no such file, folder or manifest" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["embed", str(tmp_path / "empty")]) == 2
    assert "no PNG/JPEG/TIFF" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse names the choices
        main(["embed", str(tmp_path / "empty"), "--encoder", "sam-vit_x"])
    assert refused.value.code == 2 and "invalid choice: 'sam-vit_x'" in capsys.readouterr().err


def test_missing_weights_exit_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AL_LOOP_WEIGHTS_DIR", str(tmp_path / "w"))
    images = tmp_path / "tiles"
    images.mkdir()
    write_png(images / "a.png", np.zeros((32, 32), np.uint8))
    assert main(["embed", str(images), "--encoder", "sam-vit_b"]) == 2
    assert "al-loop weights download vit_b" in capsys.readouterr().err


def test_console_script_declared():
    from pathlib import Path

    import tomllib

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["al-loop"] == "al_loop.cli:main"
    assert build_parser().prog == "al-loop"


def test_sample_writes_a_yolo_dataset(tmp_path, capsys):
    from al_loop.data.yolo import load_split

    assert main(["sample", str(tmp_path / "s"), "--train", "3", "--valid", "2", "--tile-size", "128"]) == 0
    tiles, report = load_split(tmp_path / "s", "train")
    assert len(tiles) == 3 and tiles[0].size == (128, 128)
    again = tmp_path / "again"
    main(["sample", str(again), "--train", "3", "--valid", "2", "--tile-size", "128"])
    assert (again / "train/images/tile_0000.png").read_bytes() == (tmp_path / "s/train/images/tile_0000.png").read_bytes()


def test_the_names_the_parser_offers_are_the_registries_names():
    """al_loop.settings spells these out so `--help` need not import torch; the registries must hold the same."""
    from al_loop import settings
    from al_loop.models.encoders import ENCODERS, PRECISIONS
    from al_loop.models.runtimes import RUNTIMES
    from al_loop.models.sam import MODEL_TYPES
    from al_loop.models.weights import CHECKPOINTS
    from al_loop.query.strategies import STRATEGIES

    assert tuple(MODEL_TYPES) == settings.MODELS
    assert tuple(CHECKPOINTS) == settings.OFFICIAL_MODELS
    assert tuple(ENCODERS) == settings.ENCODERS
    assert PRECISIONS is settings.PRECISIONS and RUNTIMES is settings.RUNTIMES  # one copy, imported
    assert tuple(s for s in STRATEGIES if s != "cold_start") == settings.STRATEGIES
    assert settings.Settings().strategy in settings.STRATEGIES


def test_building_the_parser_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from al_loop.cli import build_parser; build_parser(); print(sorted({'torch', 'modAL'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("raised, code, message", [
    (LabelStudioError("Label Studio at x did not answer"), 2,
     "al-loop: error: Label Studio at x did not answer"),
    (ImageError("a.png", "not an image"), 2, "al-loop: error: a.png: not an image"),
    (KeyboardInterrupt(), 130, "al-loop: interrupted; finished work is kept, run the same command to resume"),
])
def test_exit_codes_come_from_one_table(raised, code, message, monkeypatch, capsys):
    from al_loop.cli import status

    def command(args):
        raise raised

    monkeypatch.setattr(status, "run", command)
    assert main(["status"]) == code
    assert capsys.readouterr().err.strip() == message


def test_a_bug_is_not_turned_into_a_user_error(monkeypatch):
    from al_loop.cli import status

    def command(args):
        raise ValueError("a bug")

    monkeypatch.setattr(status, "run", command)
    with pytest.raises(ValueError, match="a bug"):
        main(["status"])


def test_usage_errors_found_by_the_cli_exit_2(tmp_path, monkeypatch, capsys):
    assert main(["sample", str(tmp_path / "s"), "--train", "0"]) == 2
    assert "--train and --valid must be at least 1" in capsys.readouterr().err
    assert main(["status", "--workspace", str(tmp_path / "none")]) == 2
    assert "not an al-loop workspace" in capsys.readouterr().err
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main(["init", "--label-studio-url", "http://127.0.0.1:9", "--workspace", str(tmp_path / "w")]) == 2
    assert "no Label Studio token" in capsys.readouterr().err


def test_status_says_when_the_workspace_decoder_is_damaged(tmp_path, capsys):
    from al_loop.loop.workspace import Workspace, WorkspaceConfig

    Workspace(tmp_path).create(WorkspaceConfig("http://127.0.0.1:1", 3), [(1, "/data/local-files/?d=a.png", "pool")])
    assert main(["status", "--workspace", str(tmp_path)]) == 0
    assert "DAMAGED" not in capsys.readouterr().out
    (tmp_path / "decoders").mkdir()
    (tmp_path / "decoders" / "latest.json").write_text('{"version": "round-2", "fi')
    assert main(["status", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "decoder: DAMAGED" in out and "latest.json is damaged" in out and "next training run" in out
    assert main(["status", "--workspace", str(tmp_path), "--json"]) == 0
    assert "latest.json is damaged" in json.loads(capsys.readouterr().out)["decoder_problem"]


@pytest.mark.parametrize(("argv", "suggested"), [
    (["stauts"], "did you mean `status`?"),
    (["status", "--worksapce", "ws"], "did you mean `--workspace`?"),
    (["weights", "downlod", "vit_b"], "did you mean `download`?"),
    (["map", "p.LBL", "--out", "x.gpkg", "--decoder", "d.pt", "--treshold", "0.5"], "did you mean `--threshold`?"),
])
def test_a_mistyped_command_or_flag_gets_the_nearest_name(argv, suggested, capsys):
    """Issue 36: argparse's bare 'invalid choice' / 'unrecognized arguments' now name what was meant,
    with the command's own flags (the top-level parser knows none of them)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert suggested in capsys.readouterr().err


def test_nothing_close_suggests_nothing(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--zzz"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzz" in err and "did you mean" not in err


def test_status_run_from_inside_a_workspace_finds_it(tmp_path):
    """Issue 36: `al-loop status` from inside the workspace folder (or a folder in it) used to look
    for ./al-workspace and fail; it finds the workspace it stands in. A named one still wins."""
    from al_loop.loop.workspace import Workspace, WorkspaceConfig

    from .conftest import cli_here

    ws = Workspace(tmp_path / "campaign")
    ws.create(WorkspaceConfig("http://127.0.0.1:8080", 42), [(1, "a", "validation"), (2, "b", "pool")])
    (ws.root / "report").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AL_LOOP_WORKSPACE")}
    for where in (ws.root, ws.root / "report"):
        run = cli_here("status", env=env, cwd=where)
        assert run.returncode == 0, run.stderr
        assert "project 42" in run.stdout
    elsewhere = cli_here("status", env=env, cwd=tmp_path)
    assert elsewhere.returncode == 2 and "not an al-loop workspace" in elsewhere.stderr


def test_damaged_files_a_command_reads_are_one_line_each(tmp_path):
    """Issue 36: a damaged decoder (.pt) gave a 20-line traceback in map and status --decoder; a
    damaged config.yaml a YAML traceback. Each is one line naming the file, exit 2, nothing written."""
    from al_loop.loop.workspace import Workspace, WorkspaceConfig

    from .conftest import cli_here

    bad = tmp_path / "decoder.pt"
    bad.write_bytes(b"\x80\x04garbage, not a decoder")
    for argv in (["status", "--decoder", bad], ["map", tmp_path / "p.LBL", "--decoder", bad, "--out", tmp_path / "m.gpkg"]):
        run = cli_here(*argv)
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and str(bad) in run.stderr and "not a decoder file" in run.stderr
    assert not (tmp_path / "m.gpkg").exists()
    ws = Workspace(tmp_path / "ws")
    ws.create(WorkspaceConfig("http://127.0.0.1:8080", 1), [(1, "a", "pool")])
    ws.config_path.write_text("project: [\n")
    run = cli_here("status", "--workspace", ws.root)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "config.yaml is damaged" in run.stderr
