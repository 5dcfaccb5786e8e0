"""The README and the documentation site cannot rot: every command they show must still exist with
the flags they show, every Python block must run, the generated reference pages must be current,
and the site must build with no broken link and no page outside the navigation."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from al_loop.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# The README and every page of the site, docs/research's records included.
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
README_LIMIT = 10_000  # bytes: the details live in the site


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^[ \t]*```{language}\n(.*?)^[ \t]*```", page.read_text(), flags=re.S | re.M)


def shell_lines(page: Path) -> list[str]:
    """Command lines of a page's bash blocks, continuations joined, comments dropped."""
    lines = []
    for block in blocks(page, "bash"):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line.rstrip("&").strip())
    return lines


def commands(program: str, pages: list[Path] = PAGES) -> list[tuple[str, list[str]]]:
    """(page, arguments) of every call of ``program`` (a word, or words such as "docker compose")."""
    found = []
    words_of = program.split()
    for page in pages:
        for line in shell_lines(page):
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                if words[:len(words_of)] == words_of:
                    found.append((_name(page), words[len(words_of):]))
    return found


def _ids(found):
    return [f"{page}: {' '.join(argv)}"[:90] for page, argv in found]


def _parses(page: str, argv: list[str]) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help and --version exit 0
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
                pytest.fail(f"`al-loop {' '.join(argv)}` in {page} does not parse (exit {exc.code})")


def _in_docker(found) -> list[tuple[str, list[str]]]:
    """``docker compose [-f F]... run --rm al-loop ARGS`` -> (page, ARGS)."""
    calls = []
    for page, argv in found:
        while argv[:1] == ["-f"]:
            argv = argv[2:]
        if argv[:3] == ["run", "--rm", "al-loop"]:
            calls.append((page, argv[3:]))
    return calls


AL_LOOP = commands("al-loop") + _in_docker(commands("docker compose"))


@pytest.mark.parametrize("page,argv", AL_LOOP, ids=_ids(AL_LOOP))
def test_every_al_loop_command_parses(page, argv):
    _parses(page, argv)


def _subcommands(parser=None, prefix=()) -> list[tuple[str, ...]]:
    found = []
    for name, _, sub in GEN._subparsers(parser or build_parser()):
        found.append((*prefix, name))
        found += _subcommands(sub, (*prefix, name))
    return found


def test_the_pages_show_every_subcommand():
    shown = {argv[0] for _, argv in AL_LOOP if argv}
    top = {path[0] for path in _subcommands()}
    assert top <= shown, f"no page shows: {sorted(top - shown)}"


def test_the_cli_page_has_a_section_for_every_subcommand():
    headings = set(re.findall(r"^#+ (al-loop[\w -]*)$", GEN.CLI_PAGE.read_text(), flags=re.M))
    wanted = {" ".join(("al-loop", *path)) for path in _subcommands()}
    assert wanted <= headings, f"no section in docs/reference/cli.md for {sorted(wanted - headings)}"


def test_the_generated_reference_pages_are_current():
    stale = [str(page.relative_to(ROOT)) for page in GEN.stale()]
    assert not stale, f"out of date: {stale}; regenerate with `{GEN.REGENERATE}` and commit them"


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    used = {argv[0] for _, argv in commands("make") if argv} | {"demo", "test", "docs", "docs-serve"}
    assert used <= targets, used - targets
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")  # CI runs the README's test command


def test_docker_compose_services_exist():
    services = set()
    for compose in (ROOT / "docker").glob("compose*.yaml"):
        services |= set((yaml.safe_load(compose.read_text()) or {}).get("services", {}))
    for page, argv in commands("docker compose"):
        found = re.search(r"(?:run --rm|up -d|logs|stop|down)\s+([\w-]+)", " ".join(argv))
        if found and not found[1].startswith("-"):
            assert found[1] in services, f"{page} runs unknown service {found[1]}"


def test_pip_extras_and_scripts_exist():
    tomllib = pytest.importorskip("tomllib")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for page, argv in commands("pip"):
        for word in argv:
            for named in re.findall(r"^\.\[([\w,-]+)\]$", word):
                assert set(named.split(",")) <= extras, f"{page}: pip extra {named} not in pyproject.toml"
    for page, argv in commands("python"):
        if argv and argv[0].endswith(".py"):
            assert (ROOT / argv[0]).is_file(), f"{page}: python {argv[0]}: no such script"


def test_the_two_commands_are_the_first_ones_shown():
    assert shell_lines(README)[:2] == ["make demo", "make test"]


def test_the_readme_is_short_and_its_links_exist():
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move details into docs/ (limit {README_LIMIT})"
    for target in re.findall(r"\]\(([^)#\s]+)", README.read_text()):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


PYTHON = [(page, block) for page in PAGES for block in blocks(page, "python")]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder holding a small workspace (al-workspace), as a page's Python block may read one."""
    from al_loop.loop.workspace import Workspace, WorkspaceConfig

    Workspace(tmp_path / "al-workspace").create(WorkspaceConfig("http://127.0.0.1:9", 3, settings={}),
                                               [(1, "a.png", "validation"), (2, "b.png", "pool")])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page,block", PYTHON, ids=[f"{_name(p)}:{i}" for i, (p, _) in enumerate(PYTHON)])
def test_every_python_block_runs(page, block, scratch):
    code = compile(block, _name(page), "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, {"__name__": "__docs__"})


def test_the_site_builds_strictly(tmp_path):
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' (the test extra has it)")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
