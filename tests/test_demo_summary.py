"""What `al-loop demo` prints at its end (issue 36): a live address only when the servers stay up;
otherwise how to keep them up, and no address that is already dead. The demo's own run is in
test_demo_browser.py; this holds its closing lines on real, unstarted server records."""
from __future__ import annotations

from pathlib import Path

import pytest

from al_loop.cli.demo import _show_demo
from al_loop.demo.run import DemoRun
from al_loop.demo.servers import BackendServer, LabelStudioServer
from al_loop.loop.next_batch import RoundReport
from al_loop.loop.workspace import Workspace, WorkspaceConfig


@pytest.fixture
def finished(tmp_path) -> DemoRun:
    workspace = Workspace(tmp_path / "workspace")
    workspace.create(WorkspaceConfig("http://127.0.0.1:8080", 3), [(1, "a", "validation"), (2, "b", "pool")])
    studio = LabelStudioServer(tmp_path / "ls", tmp_path / "files", port=8080)
    backend = BackendServer(workspace.root, tmp_path / "cache", port=9090)
    last = RoundReport("pushed", 2, "round-2", "entropy", 6, 1, {}, [(2, 0.4)], view_id=5)
    return DemoRun(studio, backend, workspace, 3, reports=[last], report=tmp_path / "report" / "index.html")


def test_a_demo_that_stops_prints_no_address_and_says_how_to_keep_it(finished, capsys):
    _show_demo(finished, keep=False)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8080" not in out and "password" not in out
    assert f"report: {finished.report}" in out


def test_a_demo_that_keeps_running_prints_the_login_and_the_tab(finished, capsys):
    _show_demo(finished, keep=True)
    out = capsys.readouterr().out
    assert "Label Studio: http://127.0.0.1:8080" in out and "/projects/3/data?tab=5" in out
    assert Path(finished.report).name == "index.html"
