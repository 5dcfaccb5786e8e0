"""The README cannot rot: every command it shows must still exist with the flags it shows."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from al_loop.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def shell_lines() -> list[str]:
    """Command lines of the README's bash blocks, continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line.rstrip("&").strip())
    return lines


def commands(program: str) -> list[list[str]]:
    found = []
    for line in shell_lines():
        for part in re.split(r"&&|;", line):
            words = shlex.split(part)
            if words and words[0] == program:
                found.append(words[1:])
    return found


@pytest.mark.parametrize("argv", commands("al-loop"), ids=lambda argv: " ".join(argv)[:60])
def test_every_al_loop_command_parses(argv):
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`al-loop {' '.join(argv)}` from the README does not parse (exit {exc.code})")


def test_the_readme_shows_every_subcommand():
    shown = {argv[0] for argv in commands("al-loop")}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= shown, f"not in the README: {set(sub.choices) - shown}"


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    used = {argv[0] for argv in commands("make") if argv} | {"demo", "test"}
    assert used <= targets, used - targets
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")  # CI runs the README's test command


def test_the_two_commands_are_the_first_ones_shown():
    first = shell_lines()[:2]
    assert first == ["make demo", "make test"]
