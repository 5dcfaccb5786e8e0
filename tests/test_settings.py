"""The one settings resolver: flag over environment over workspace over default, typed once,
its sources shown by `al-loop config`, its table on the documentation site, and every flag with help."""
from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest

from al_loop.cli import build_parser, main
from al_loop.errors import UsageError
from al_loop.loop.workspace import Workspace, WorkspaceConfig
from al_loop.settings import KEPT, Settings, markdown_table, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_a_flag_beats_the_environment_beats_the_workspace_beats_the_default():
    env = {"AL_LOOP_EPOCHS": "9", "AL_LOOP_STRATEGY": "bald"}
    saved = {"epochs": 7, "strategy": "margin", "batch_size": 4}
    s = resolve({"epochs": 3}, saved, env)
    assert (s.epochs, s.strategy, s.batch_size, s.encoder) == (3, "bald", 4, "filterbank")
    assert [s.source(n) for n in ("epochs", "strategy", "batch_size", "encoder")] == \
        ["flag", "environment", "workspace", "default"]


def test_values_are_typed_and_checked_once_naming_where_they_came_from():
    assert resolve({}, {}, {"AL_LOOP_BATCH_SIZE": "12"}).batch_size == 12
    with pytest.raises(UsageError, match=r"\$AL_LOOP_EPOCHS must be a int, not 'many'"):
        resolve({}, {}, {"AL_LOOP_EPOCHS": "many"})
    with pytest.raises(UsageError, match="the workspace's strategy is 'greedy'; choose one of entropy"):
        resolve({}, {"strategy": "greedy"}, {})
    with pytest.raises(UsageError, match="--batch-size must be positive"):
        resolve({"batch_size": 0}, {}, {})
    with pytest.raises(UsageError, match="half-configured"):
        resolve({}, {}, {"BASIC_AUTH_USER": "ann"})


def test_only_kept_settings_come_from_a_workspace():
    # A workspace file cannot set the backend's port or a token: those are not the loop's to keep.
    s = resolve({}, {"port": 1, "label_studio_api_key": "x", "epochs": 5}, {})
    assert (s.port, s.label_studio_api_key, s.epochs) == (9090, None, 5)


def test_init_keeps_what_was_given_and_what_embeddings_depend_on(tmp_path):
    s = resolve({"strategy": "margin"}, {}, {"HOME": str(tmp_path)})
    kept = s.to_keep()
    assert kept["strategy"] == "margin" and set(kept) == {"strategy", "encoder", "model", "precision", "cache_dir"}
    assert not kept["cache_dir"].startswith("~")  # where the backend must look too: an absolute place


def test_backend_limits_default_to_the_modules_own():
    from al_loop.data.images import MIN_SIDE
    from al_loop.studio.fetch import DOWNLOAD_DEADLINE, PARALLEL_DOWNLOADS
    from al_loop.studio.regions import MAX_REGIONS

    s = Settings()
    assert (s.min_image_side, s.download_deadline, s.parallel_downloads, s.max_regions) == \
        (MIN_SIDE, DOWNLOAD_DEADLINE, PARALLEL_DOWNLOADS, MAX_REGIONS)


def test_the_readme_settings_table_is_the_resolvers():
    """The table now lives on the site's generated Configuration page (the README links to it)."""
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    found = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", page, re.S)
    assert found, "docs/reference/configuration.md lacks the settings table: python docs/gen_reference.py"
    assert found.group(1).strip() == markdown_table().strip(), "regenerate it: python docs/gen_reference.py"


def _workspace(root: Path, **settings) -> Workspace:
    workspace = Workspace(root)
    workspace.create(WorkspaceConfig("http://127.0.0.1:9", 3, settings=settings), [(1, "a.png", "pool")])
    return workspace


def test_config_says_where_each_value_came_from(tmp_path, capsys, monkeypatch):
    ws = _workspace(tmp_path / "ws", strategy="margin", epochs=7, cache_dir=str(tmp_path / "D"))
    monkeypatch.setenv("AL_LOOP_BATCH_SIZE", "6")
    monkeypatch.delenv("AL_LOOP_EPOCHS", raising=False)
    assert main(["config", "--workspace", str(ws.root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["strategy"] == {"value": "margin", "source": "workspace", "env": "AL_LOOP_STRATEGY", "kept": True}
    assert (shown["epochs"]["value"], shown["epochs"]["source"]) == (7, "workspace")
    assert (shown["batch_size"]["value"], shown["batch_size"]["source"]) == (6, "environment")
    assert shown["encoder"]["source"] == "default"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-token-value")
    assert main(["config", "--workspace", str(ws.root)]) == 0
    text = capsys.readouterr().out
    assert "secret-token-value" not in text and "(set, hidden)" in text
    assert re.search(r"strategy\s+margin\s+workspace \(the workspace's strategy\)", text)
    assert re.search(r"batch_size\s+6\s+environment \(\$AL_LOOP_BATCH_SIZE\)", text)


def test_an_old_workspace_config_keeps_its_settings(tmp_path):
    ws = tmp_path / "old"
    _workspace(ws)
    # config.yaml as written before it had a settings section: encoder/model at the top level
    (ws / "config.yaml").write_text("label_studio_url: http://127.0.0.1:9\nproject: 3\nencoder: sam-vit_b\n"
                                    "model: vit_b\ncheckpoint: null\nprecision: fp32\n")
    assert Workspace(ws).config().settings == {"encoder": "sam-vit_b", "model": "vit_b", "checkpoint": None,
                                               "precision": "fp32"}


def _subparsers(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield path + (name,), child
                yield from _subparsers(child, path + (name,))


def test_the_settings_some_command_takes_as_a_flag_are_the_ones_marked_so():
    """The configuration table's flag column says "none" exactly where no command takes the setting."""
    from al_loop.settings import flag_of, setting_fields

    taken = {a.dest for _, p in _subparsers(build_parser()) for a in p._actions if a.option_strings}
    for f in setting_fields():
        assert (f.name in taken) == f.metadata["flag"], f"{f.name}: flag={f.metadata['flag']} but taken={f.name in taken}"
        if f.metadata["flag"]:
            assert any(flag_of(f.name) in a.option_strings for _, p in _subparsers(build_parser()) for a in p._actions
                       if a.dest == f.name), f.name


def test_every_command_and_every_flag_has_help():
    parser = build_parser()
    commands = list(_subparsers(parser))
    assert {"config", "init", "next-batch", "map", "serve-backend"} <= {c[-1] for c, _ in commands}
    missing = [f"{' '.join(c)} {a.option_strings or a.dest}" for c, p in commands for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, missing
    assert not [" ".join(c) for c, p in commands if not (p.description or "").strip()]


def test_one_meaning_per_flag_across_commands():
    """--batch-size is tasks per round, --tile-size pixels, --json a switch that prints JSON."""
    for path, parser in _subparsers(build_parser()):
        for action in parser._actions:
            flags = set(action.option_strings)
            if "--json" in flags and not isinstance(action, argparse._StoreTrueAction):
                # simulate's old `--json FILE` (deprecated), compare's and map's `--json SUMMARY.json` and demo's
                # `--json FILE` (issue 39's spelling): bare, each is the same switch that prints JSON
                assert path in {("simulate",), ("compare",), ("map",), ("demo",)} and action.const is True
            if "--batch-size" in flags and "deprecated" not in action.help:
                assert "per round" in action.help or "pushes per round" in action.help, path
            if "--tile-size" in flags:
                assert "pixels" in action.help, path


def test_old_spellings_still_work_with_a_word(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--train", "1", "--valid", "1", "--size", "96"]) == 0
    err = capsys.readouterr().err
    assert "--size is deprecated" in err and "--tile-size" in err
    from PIL import Image

    assert Image.open(next((tmp_path / "s" / "train" / "images").iterdir())).size == (96, 96)
    args = build_parser().parse_args(["next-batch", "--size", "4"])
    assert args.batch_size == 4


def _environment_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each use of the process environment other than copying it whole for a
    child process (``dict(os.environ)``, ``dict(os.environ, X=...)``, ``{**os.environ, ...}``)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names if a.name in ("environ", "getenv")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                and node.attr in ("environ", "getenv", "environb", "putenv", "unsetenv")):
            continue
        parent = parents.get(node)
        copied = node.attr == "environ" and (
            (isinstance(parent, ast.Call) and node in parent.args)  # dict(os.environ), a copy
            or (isinstance(parent, ast.keyword) and parent.arg is None)  # f(**os.environ)
            or (isinstance(parent, ast.Dict) and any(k is None and v is node for k, v in zip(parent.keys, parent.values,
                                                                                           strict=True))))
        if not copied:
            found.append((node.lineno, ast.unparse(parent if parent is not None else node)[:80]))
    return found


def test_only_settings_reads_the_environment():
    """Every environment read is a setting resolved in settings.py; elsewhere the environment is
    only copied whole for a child process (whose own dict may then be written)."""
    offenders = []
    for package in ("al_loop", "ml_backend"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "al_loop" / "settings.py":
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}: {what}"
                          for line, what in _environment_uses(ast.parse(path.read_text()))]
    assert not offenders, "read the environment through al_loop.settings:\n" + "\n".join(offenders)


def test_the_environment_check_tells_a_read_from_a_copy():
    reads = ['os.environ.get("X")', 'os.environ["X"]', 'os.getenv("X")', '"X" in os.environ',
             'os.environ.setdefault("X", "1")', 'os.environ["X"] = "1"', "from os import environ"]
    copies = ["env = dict(os.environ)", "env = dict(os.environ, X='1')", "env = {**os.environ, 'X': '1'}",
              "env = dict(os.environ); env['X'] = '1'", "run(cmd, env=dict(os.environ))"]  # as a child process is started
    assert all(_environment_uses(ast.parse(code)) for code in reads)
    assert not any(_environment_uses(ast.parse(code)) for code in copies)


def test_deep_defaults_come_from_the_settings_environment(tmp_path, monkeypatch):
    """The weights folder, the converted-encoder cache, the embedding cache and the engine keep
    their variables' names and meaning, now read by the one resolver."""
    from al_loop.embeddings.cache import default_cache_dir
    from al_loop.models.runtimes import converted_root, default_prompt_runtime
    from al_loop.models.weights import weights_dir

    for name, value in (("AL_LOOP_WEIGHTS_DIR", "w"), ("AL_LOOP_RUNTIME_CACHE", "r"), ("AL_LOOP_CACHE_DIR", "c")):
        monkeypatch.setenv(name, str(tmp_path / value))
    monkeypatch.setenv("AL_LOOP_RUNTIME", "onnx")
    assert (weights_dir(), converted_root(), default_cache_dir()) == (tmp_path / "w", tmp_path / "r", tmp_path / "c")
    assert default_prompt_runtime() == "onnx"
    monkeypatch.setenv("AL_LOOP_CACHE_DIR", "s3://bucket/prefix")
    assert default_cache_dir() == "s3://bucket/prefix"
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("AL_LOOP_WEIGHTS_DIR", "AL_LOOP_RUNTIME_CACHE", "AL_LOOP_RUNTIME"):
        monkeypatch.delenv(name)
    assert weights_dir() == tmp_path / ".cache" / "al-loop" / "weights" and default_prompt_runtime() == "torch"
    assert converted_root() == tmp_path / ".cache" / "al-loop" / "runtimes"
    monkeypatch.setenv("AL_LOOP_RUNTIME", "tensorflow")
    with pytest.raises(UsageError, match=r"\$AL_LOOP_RUNTIME is 'tensorflow'"):
        default_prompt_runtime()


def test_kept_settings_are_the_loops():
    assert set(KEPT) == {"encoder", "model", "checkpoint", "precision", "runtime", "cache_dir", "strategy",
                         "batch_size", "epochs", "stop_threshold", "stop_window", "annotators", "review",
                         "review_below"}


def test_a_backend_started_for_a_workspace_shares_its_cache_and_encoder(tmp_path, monkeypatch):
    from ml_backend.settings import BackendSettings

    for name in ("AL_LOOP_CACHE_DIR", "AL_LOOP_ENCODER", "AL_LOOP_MODEL", "AL_LOOP_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    ws = _workspace(tmp_path / "ws", cache_dir=str(tmp_path / "shared"), encoder="sam-tiny", model="tiny")
    s = BackendSettings.resolve(workspace=str(ws.root))
    assert (s.cache_location, s.encoder, s.model) == (str(tmp_path / "shared"), "sam-tiny", "tiny")
    assert s.source("cache_dir") == "workspace" and s.predict_slots == 7
    assert BackendSettings.resolve(workspace=str(ws.root), cache_dir="/elsewhere").cache_dir == "/elsewhere"
    monkeypatch.setenv("AL_LOOP_WORKSPACE", str(ws.root))  # the workspace named by the environment, as docker does
    assert BackendSettings.resolve().encoder == "sam-tiny"


def test_config_shows_the_label_studio_the_loop_uses_and_the_backend_apart(tmp_path, capsys, monkeypatch):
    """Issue 36: config printed label_studio_url None while the workspace's config.yaml named the
    Label Studio every loop command talks to; it shows that one, within 100 columns, and the
    backend server's own settings in a table of their own."""
    ws = _workspace(tmp_path / "ws")
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    assert main(["config", "--workspace", str(ws.root), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["label_studio_url"]["value"] == "http://127.0.0.1:9"
    assert shown["label_studio_url"]["source"] == "workspace-config"
    assert main(["config", "--workspace", str(ws.root)]) == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 100
    loop, backend = text.split("the ML backend server's own")
    assert re.search(r"label_studio_url\s+http://127.0.0.1:9\s+workspace config.yaml", loop)
    assert "port " in backend and "port " not in loop and "strategy" not in backend
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://elsewhere:8080")  # a variable still wins, and says so
    assert main(["config", "--workspace", str(ws.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label_studio_url"]["source"] == "environment"
