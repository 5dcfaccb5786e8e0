"""`al-loop init` and `al-loop status` against a real Label Studio."""
from __future__ import annotations

import json

import pytest

from al_loop.cli import main
from al_loop.loop.workspace import Workspace

from .conftest import write_tiles


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiles(label_studio):
    write_tiles(label_studio.document_root / "init-tiles", 12, size=128, seed=70)
    return label_studio.document_root / "init-tiles"


def test_init_imports_tiles_and_sets_aside_validation(label_studio, tiles, tmp_path, capsys):
    from label_studio_sdk import LabelStudio

    ws = tmp_path / "ws"
    assert run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--images", tiles, "--workspace", ws) == 0
    workspace = Workspace(ws)
    config = workspace.config()
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    ls_tasks = {t.id: t.data["image"] for t in client.tasks.list(project=config.project)}
    assert len(ls_tasks) == 12 and all(u.startswith("/data/local-files/?d=") for u in ls_tasks.values())
    rows = workspace.read("SELECT task_id, image, role FROM tasks")
    assert {r["task_id"]: r["image"] for r in rows} == ls_tasks
    assert sum(r["role"] == "validation" for r in rows) == 5  # 10 % of 12, at least 5
    assert "<BrushLabels" in client.projects.get(config.project).label_config
    capsys.readouterr()
    assert run("status", "--workspace", ws, "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["validation"] == 5 and status["counts"]["unlabelled"] == 7 and status["rounds"] == []


def test_init_binds_an_existing_project_from_a_tasks_file(label_studio, tiles, tmp_path):
    from label_studio_sdk import LabelStudio

    from al_loop.studio.label_config import default_label_config

    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = client.projects.create(title="existing", label_config=default_label_config())
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([{"image": f"https://example.org/tile-{i}.png"} for i in range(8)]))
    ws = tmp_path / "ws"
    code = run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--project", project.id,
               "--tasks", tasks, "--val-size", 2, "--workspace", ws)
    assert code == 0
    rows = Workspace(ws).read("SELECT role, image FROM tasks")
    assert len(rows) == 8 and sum(r["role"] == "validation" for r in rows) == 2
    assert Workspace(ws).config().project == project.id


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("wrong-token", "refused the token (401)"),
        ("unreachable", "unreachable"),
        ("no-project", "404"),
        ("empty-dir", "holds no readable"),
        ("non-images", "holds no readable"),
    ],
)
def test_init_bad_input_leaves_no_workspace(label_studio, tiles, tmp_path, capsys, case, words):
    url, token, images, extra = label_studio.url, label_studio.token, tiles, []
    if case == "wrong-token":
        token = "0" * 40
    elif case == "unreachable":
        url = "http://127.0.0.1:9"
    elif case == "no-project":
        extra = ["--project", 999999]
    elif case == "empty-dir":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "non-images":
        images = tmp_path / "notes"
        images.mkdir()
        (images / "a.png").write_text("not a picture")
    ws = tmp_path / "ws"
    capsys.readouterr()
    code = run("init", "--label-studio-url", url, "--token", token, "--images", images, "--workspace", ws, *extra)
    err = capsys.readouterr().err
    assert code == 2 and words in err
    assert not ws.exists() or not any(ws.iterdir())


def test_init_tags_tiles_of_a_product_with_its_id_and_position(label_studio, tmp_path):
    """Tiles cut by `al-loop tile` become tasks that carry product_id, tile_col and tile_row."""
    from label_studio_sdk import LabelStudio

    from al_loop.data import sample_products as sp
    from al_loop.data.synthetic import generate_tile
    from al_loop.data.tiling import load_manifest

    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(4)], columns=2)  # 512 x 512
    tif = sp.write_geotiff(pixels, tmp_path / "P1.tif", sp.equirectangular_wkt(0.0, 10.0), (0.0, 0.0), 0.25)
    tiles = label_studio.document_root / "product-tiles"
    assert run("tile", tif, "--out", tiles, "--tile-size", "256", "--overlap", "64", "--quiet") == 0
    manifest = load_manifest(tiles)["P1"]
    ws = tmp_path / "ws"
    assert run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--images", tiles,
               "--workspace", ws, "--val-size", 2) == 0
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    data = [t.data for t in client.tasks.list(project=Workspace(ws).config().project)]
    assert len(data) == len(manifest.tiles) == 9
    positions = {(d["product_id"], d["tile_col"], d["tile_row"]) for d in data}
    assert positions == {("P1", t.col, t.row) for t in manifest.tiles}
    assert all(d["image"].startswith("/data/local-files/?d=") for d in data)
