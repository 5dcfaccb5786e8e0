"""The Makefile's targets: `make check` leaves out every test that needs a server, `make demo`
installs only the demo extra and a later `make test` the rest, and the test extra holds every
optional part (CI installs it so that no test skips there)."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SLOW_FIXTURES, SLOW_TESTS

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# What in a test module's text shows that it starts a server process, a cluster or a browser.
SERVER_SIGNS = {
    "the label_studio fixture": r"\blabel_studio\b",
    "a server of al_loop.demo.servers": r"\b(BackendServer|LabelStudioServer|PostgresServer)\b",
    "moto's S3 server": r"\bmoto\b",
    "Ray": r"^import ray\b|^from ray\b|importorskip\(['\"]ray['\"]",
    "a browser": r"\bplaywright\b|\bchromium\b",
}
CHILD_SIGN = r"(al_loop\.cli|al-loop)[\"'],\s*[\"']demo[\"']|serve-backend"  # ... with subprocess: al-loop demo or the backend as a child


def check_markers() -> str:
    found = re.search(r"^CHECK_MARKERS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile sets CHECK_MARKERS, the marker expression `make check` runs"
    return found[1].strip()


def server_signs(path: Path) -> list[str]:
    text = path.read_text()
    signs = [name for name, pattern in SERVER_SIGNS.items() if re.search(pattern, text, re.M | re.I)]
    if "subprocess" in text and re.search(CHILD_SIGN, text):
        signs.append("al-loop demo or serve-backend in a child process")
    return signs


def test_make_check_collects_no_test_of_a_module_that_starts_servers():
    expression = check_markers()
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", expression, str(TESTS)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    collected = [line.split("::")[0] for line in out.stdout.splitlines() if "::" in line]
    assert "tests/test_layout.py" in collected  # the expression selects the fast tests, not nothing
    leaks = {}
    for path in sorted(set(TESTS.glob("test_*.py")) - {Path(__file__).resolve()}):  # this one names the signs
        signs = server_signs(path)
        count = collected.count(f"tests/{path.name}")
        if signs and count:
            leaks[path.name] = f"{count} tests collected; it uses {', '.join(signs)}"
    assert not leaks, (f"`make check` (-m '{expression}') runs tests that start servers; mark them through "
                       f"tests/conftest.py (FIXTURE_MARKERS, SERVER_MODULES or MODULE_MARKERS): {leaks}")


def test_the_slow_tests_named_in_conftest_exist():
    defined: dict[str, set[str]] = {}
    for path in TESTS.glob("*.py"):
        tree = ast.parse(path.read_text())
        defined[path.name] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    missing = [name for name in SLOW_TESTS if name.partition("::")[2] not in defined.get(name.partition("::")[0], ())]
    missing += [name for name in SLOW_FIXTURES if not any(name in names for names in defined.values())]
    assert not missing, f"tests/conftest.py marks slow what no longer exists (renamed?): {missing}"


def extra_requirements(extras: dict[str, list[str]], name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """An extra's requirements, with the project's own extras it names (mars-pits-al[a,b]) spelt out."""
    requirements = set()
    for requirement in extras[name]:
        own = re.fullmatch(r"mars-pits-al\[([\w,\s-]+)\]", requirement)
        if not own:
            requirements.add(requirement)
            continue
        for part in (p.strip() for p in own[1].split(",")):
            assert part in extras and part not in seen, f"extra {name!r} names {part!r}: unknown or circular"
            requirements |= extra_requirements(extras, part, seen | {name})
    return requirements


def test_the_test_extra_holds_every_optional_part_and_the_demo_extra_only_label_studio():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    everything = extra_requirements(extras, "test")
    for name in extras:
        assert extra_requirements(extras, name) <= everything, f"CI (the test extra) lacks a part of {name!r}"
    assert {r.split(">")[0].split("<")[0].split("=")[0] for r in extra_requirements(extras, "demo")} == {"label-studio"}


def dry_run(venv: Path, target: str) -> str:
    out = subprocess.run(["make", "-n", f"VENV={venv}", target], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="no make on this machine")
def test_make_demo_installs_the_demo_extra_and_make_test_then_the_rest(tmp_path):
    venv = tmp_path / "venv"
    demo = dry_run(venv, "demo")  # a clean clone: a new venv with the demo extra only
    assert "-m venv" in demo and '-e ".[demo]"' in demo and ".[test]" not in demo
    assert '-e ".[test]"' in dry_run(venv, "test") and '-e ".[test]"' in dry_run(venv, "check")
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-demo").touch()  # after `make demo`
    assert "pip install" not in dry_run(venv, "demo")
    after_demo = dry_run(venv, "test")
    assert '-e ".[test]"' in after_demo and "-m venv" not in after_demo
    (venv / ".installed").touch()  # after `make test`, which also stands for the demo's install
    (venv / ".installed-demo").touch()
    assert "pip install" not in dry_run(venv, "test") + dry_run(venv, "demo")


def test_install_says_torch_is_the_large_cuda_build_before_it_starts(tmp_path):
    """Issue 36: a fresh `make install` pulled ~5 GB of CUDA torch without a word; it says so before
    the download starts, and TORCH_INDEX installs torch from another index (PyTorch's CPU builds) first."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    plain = subprocess.run(["make", "-n", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True).stdout
    note, project = plain.find("about 5 GB"), plain.find('pip install --quiet -e ".[test]"')
    assert 0 <= note < project, plain
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in plain
    cpu = subprocess.run(["make", "-n", "install", f"VENV={venv}", "TORCH_INDEX=https://example.org/whl/cpu"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    torch_first = cpu.find('torch torchvision --index-url "https://example.org/whl/cpu"')
    assert 0 <= torch_first < cpu.find('pip install --quiet -e ".[test]"'), cpu
