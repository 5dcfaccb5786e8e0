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


def test_init_binds_an_existing_project_from_a_tasks_file(label_studio, tiles, tmp_path, capsys):
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
    assert "round 0 sends the validation tiles" in capsys.readouterr().out
    # A project that already holds answers: the hint says the first next-batch learns from them.
    task = next(iter(client.tasks.list(project=project.id)))
    client.annotations.create(id=task.id, result=[], project=project.id)
    assert run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--project", project.id,
               "--val-size", 2, "--workspace", tmp_path / "ws2") == 0
    assert "already holds answers on 1 task(s)" in capsys.readouterr().out


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

    pixels = sp.mosaic([generate_tile(i, 256).image for i in range(16)], columns=4)  # 1024 x 1024
    tif = sp.write_geotiff(pixels, tmp_path / "P1.tif", sp.equirectangular_wkt(0.0, 10.0), (0.0, 0.0), 0.25)
    tiles = label_studio.document_root / "product-tiles"
    assert run("tile", tif, "--out", tiles, "--tile-size", "256", "--overlap", "64", "--quiet") == 0
    manifest = load_manifest(tiles)["P1"]
    ws = tmp_path / "ws"
    assert run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--images", tiles,
               "--workspace", ws, "--val-size", 2) == 0
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    data = [t.data for t in client.tasks.list(project=Workspace(ws).config().project)]
    assert len(data) == len(manifest.tiles) == 25
    positions = {(d["product_id"], d["tile_col"], d["tile_row"]) for d in data}
    assert positions == {("P1", t.col, t.row) for t in manifest.tiles}
    assert all(d["image"].startswith("/data/local-files/?d=") for d in data)
    # Every tile overlaps its neighbours: validation is a patch, and the tiles touching it are
    # kept apart (buffer), so no pool tile shows ground a validation tile shows.
    window = {t.file.rsplit("/", 1)[-1]: (t.col, t.row, t.col + t.width, t.row + t.height) for t in manifest.tiles}
    role = {r["image"].rsplit("/", 1)[-1]: r["role"] for r in Workspace(ws).tasks()}
    touch = lambda a, b: a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]  # noqa: E731
    assert sorted(role.values()).count("validation") == 2 and "pool" in role.values()
    assert not [(v, p) for v in role if role[v] == "validation" for p in role if role[p] == "pool"
                and touch(window[v], window[p])]


def _crop(image_url: str) -> str:
    """The HiRISE set's ground truth for copies (never used by al-loop): the crop a file name names."""
    return image_url.rsplit("/", 1)[-1].split("_png.rf.")[0].replace("_mirrored", "")


def test_no_validation_tile_has_a_copy_in_the_pool(label_studio, hirise, tmp_path):
    """The real valid split holds mirrored copies: whatever the seed, copies stay on one side."""
    import shutil

    from al_loop.loop.init import init_workspace

    folder = label_studio.document_root / "hirise-valid"
    shutil.copytree(hirise / "valid" / "images", folder)
    first = tmp_path / "ws0"
    assert run("init", "--label-studio-url", label_studio.url, "--token", label_studio.token, "--images", folder,
               "--workspace", first, "--val-size", 5, "--quiet") == 0
    project = Workspace(first).config().project
    workspaces = [Workspace(first)]
    for seed in range(1, 6):  # the same project bound again: each seed draws its own validation set
        workspaces.append(Workspace(tmp_path / f"ws{seed}"))
        init_workspace(workspaces[-1], label_studio.url, label_studio.token, project=project, val_size=5, seed=seed,
                       progress=False)
    drawn = set()
    for workspace in workspaces:
        rows = workspace.tasks()
        validation = {_crop(r["image"]) for r in rows if r["role"] == "validation"}
        pool = {_crop(r["image"]) for r in rows if r["role"] == "pool"}
        assert validation and not validation & pool
        assert 4 <= sum(r["role"] == "validation" for r in rows) <= 6  # whole groups: about the size asked
        drawn.add(frozenset(r["task_id"] for r in rows if r["role"] == "validation"))
    assert len(drawn) > 1, "the seeds draw different validation sets"
    copies = sum(1 for r in workspaces[0].tasks() if [_crop(o["image"]) for o in workspaces[0].tasks()].count(_crop(r["image"])) > 1)
    assert copies >= 12  # the 6 mirrored pairs of the valid split, at least
