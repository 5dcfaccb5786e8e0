"""``al-loop init``: bind a workspace to a Label Studio project, with its tiles and validation set.

Everything that can be checked locally is checked before Label Studio is touched, and
the workspace is written only once Label Studio has done its part, so a failure
leaves the workspace exactly as it was. A project is made with a marker (kept in
``<workspace>/init-marker`` and in the project's description): ``init`` run again after
a failure finds the project it made and binds it, instead of making a second one.
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from al_loop.data.groups import (
    DESCRIPTOR_SIDE,
    Footprint,
    descriptor,
    grey_of,
    group_descriptors,
    overlap_pairs,
    split_apart,
)
from al_loop.data.images import IMAGE_SUFFIXES, image_size, list_images
from al_loop.data.tiling import load_manifest
from al_loop.errors import FetchError, ImageError, LoopError, SchemaError
from al_loop.loop.import_labels import ImportReport, check_classes, import_labels, read_label_dir
from al_loop.loop.workspace import Workspace, WorkspaceConfig
from al_loop.studio.client import (
    annotated_tasks,
    check_project,
    connect,
    connect_backend,
    create_project,
    find_backend,
    find_project,
    import_directory,
    import_tasks,
    list_tasks,
    update_task_data,
)
from al_loop.studio.fetch import task_file_path
from al_loop.studio.label_config import LabelSchema, default_label_config, parse_label_config
from al_loop.studio.pull import TileSource
from al_loop.studio.team import set_overlap

MIN_VALIDATION = 5
MARKER = "init-marker"  # in the workspace folder while init has not finished


@dataclass
class InitReport:
    project: int
    tasks: int
    validation: list[int]
    skipped_files: list[str]
    ml_backend: int | None
    imported: ImportReport | None = None
    resumed: bool = False  # bound the project an earlier, failed init had made
    groups: TaskGroups | None = None  # how the tiles were grouped before the validation split
    buffer: list[int] = field(default_factory=list)  # tasks touching a validation tile: neither trained nor scored
    answered: int = 0  # tasks of a bound project that already held answers


def validation_count(total: int, requested: int | None) -> int:
    """10 % of the tiles, at least 5, unless asked otherwise; always leaves a pool to learn from."""
    count = requested if requested is not None else max(MIN_VALIDATION, math.ceil(0.1 * total))
    if count < 1 or count >= total:
        raise LoopError(f"a validation set of {count} leaves no tiles to learn from among {total}; ask for fewer",
                        param="val_size")
    return count


def check_images(directory: Path) -> tuple[list[Path], list[str]]:
    """Readable tiles under ``directory`` and the reasons for the files that are not."""
    try:
        paths = list_images(directory)
    except ImageError as exc:
        raise LoopError(f"{exc}: the images must be a folder of PNG/JPEG/TIFF tiles", param="images") from None
    good, bad = [], []
    for path in paths:
        try:
            image_size(path.read_bytes(), path)
            good.append(path)
        except ImageError as exc:
            bad.append(str(exc))
    if not good:
        detail = f" ({len(bad)} unreadable: {bad[0]})" if bad else ""
        raise LoopError(f"{directory} holds no readable PNG/JPEG/TIFF tiles{detail}")
    return good, bad


def read_tasks_file(path: Path) -> list[dict]:
    try:
        tasks = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoopError(f"cannot read tasks from {path}: {exc}") from None
    if not isinstance(tasks, list) or not tasks:
        raise LoopError(f"{path} must hold a non-empty JSON list of tasks")
    return [t if isinstance(t, dict) and "data" in t else {"data": t} for t in tasks]


def init_workspace(
    workspace: Workspace,
    url: str,
    token: str,
    images: Path | None = None,
    tasks_file: Path | None = None,
    project: int | None = None,
    title: str = "Mars pits (al-loop)",
    backend_url: str | None = None,
    settings: dict | None = None,
    val_size: int | None = None,
    seed: int = 0,
    label_config: str | None = None,
    labels_dir: Path | None = None,
    local_root: str | None = None,
    progress: bool = True,
) -> InitReport:
    """Create or bind the project (with ``label_config``, the binary config by default),
    import the tiles and any existing labels, set the validation set aside, and only then
    write the workspace with the loop's ``settings`` to keep (see the module doc)."""
    _check_request(workspace, project, title, images, tasks_file)
    check_weights(settings or {})
    local = _local_checks(project, label_config, labels_dir, images, tasks_file)
    images = local.images
    bound = _bind_project(url, token, project, title, images, local.new_tasks, backend_url, local.config_xml,
                          None if project is not None else Marker(workspace.root / MARKER))
    if (settings or {}).get("annotators", 1) > 1:  # Label Studio hands each task to that many experts
        set_overlap(connect(url, token), url, bound.project, settings["annotators"])
    imported = _import(workspace, url, token, bound, local.labels, images)
    source = TileSource(url, token, str(images) if images else None, local_root, _image_of(bound.tasks[0], bound.schema))
    groups = task_groups(bound.tasks, bound.schema, source.read, images, progress)
    count = validation_count(len(bound.tasks), val_size)
    validation, buffer, pool = split_apart(groups.ids, groups.neighbours, count, seed)
    if not len(pool) or not len(validation):
        raise LoopError(f"the {len(bound.tasks)} tiles cannot be split: they overlap or copy each other so much that "
                        "no validation tile can be kept apart from a pool to learn from; import more tiles (or tiles "
                        "of more products)")
    role = {**dict.fromkeys(validation, "validation"), **dict.fromkeys(buffer, "buffer")}
    rows = [(int(t["id"]), _image_of(t, bound.schema), role.get(i, "pool")) for i, t in enumerate(bound.tasks)]
    validation, buffer = (sorted(int(bound.tasks[i]["id"]) for i in part) for part in (validation, buffer))
    config = WorkspaceConfig(
        label_studio_url=url, project=bound.project, images=str(images) if images else None, storage=bound.storage,
        backend_url=backend_url, ml_backend=bound.ml_backend, title=title, settings=dict(settings or {}),
    )
    workspace.create(config, rows)
    (workspace.root / MARKER).unlink(missing_ok=True)
    return InitReport(bound.project, len(bound.tasks), validation, local.skipped + groups.unreadable, bound.ml_backend,
                      imported, bound.resumed, groups, buffer, bound.answered)


@dataclass
class LocalChecks:
    """What init checked before touching Label Studio."""

    config_xml: str
    labels: object | None  # the --labels catalogue, read
    images: Path | None  # resolved
    skipped: list[str]  # unreadable files under --images
    new_tasks: list[dict] | None


def _local_checks(project: int | None, label_config: str | None, labels_dir: Path | None, images: Path | None,
                  tasks_file: Path | None) -> LocalChecks:
    if label_config is not None and project is not None:
        raise LoopError("a labelling config or types make a new project; a bound project keeps its own",
                        param="label_config")
    config_xml = label_config if label_config is not None else default_label_config()
    try:
        schema = parse_label_config(config_xml)
    except SchemaError as exc:
        raise LoopError(f"the labelling config: {exc}", param="label_config") from None
    labels = read_label_dir(labels_dir) if labels_dir is not None else None
    if labels is not None and project is None:
        check_classes(labels, schema)
    skipped: list[str] = []
    if images is not None:
        images = images.resolve()
        _, skipped = check_images(images)
    new_tasks = read_tasks_file(tasks_file) if tasks_file is not None else None
    return LocalChecks(config_xml, labels, images, skipped, new_tasks)


def _import(workspace: Workspace, url: str, token: str, bound: BoundProject, labels, images: Path | None):
    """The --labels catalogue as annotations; None without one."""
    if labels is None:
        return None
    if bound.resumed and bound.answered:
        raise LoopError(f"project {bound.project}, made by an earlier `init` of this workspace that failed, already "
                        "holds annotations: its --labels import went part of the way. Delete that project in Label "
                        f"Studio and {workspace.root / MARKER}, then run init again")
    check_classes(labels, bound.schema)  # a bound project's own config
    return import_labels(connect(url, token), url, bound.tasks, bound.schema, labels, images)


@dataclass
class TaskGroups:
    """What keeps tasks apart across the validation split: a content group id per task (copies
    share one; in the order of the tasks), the pairs of tasks whose tiles overlap or touch in
    their product, and the tiles that could not be read to compare (each its own group)."""

    ids: list[int]
    neighbours: np.ndarray  # (K, 2) task indices
    unreadable: list[str]

    @property
    def copies(self) -> int:
        """Tasks with a near-duplicate among the others."""
        sizes = np.bincount(self.ids) if self.ids else np.zeros(0, int)
        return int(sum(sizes[g] > 1 for g in self.ids))


def task_groups(tasks: list[dict], schema: LabelSchema, read: Callable[[str], bytes], images: Path | None,
                progress: bool = True) -> TaskGroups:
    """Group the tasks' tiles by content (copies, mirrored, rotated, re-encoded, re-stretched) and
    find, for tiles cut by ``al-loop tile``, the windows of one product that overlap or touch, so
    that no pool tile shows ground a validation tile shows (al_loop.data.groups.split_apart)."""
    desc = np.zeros((len(tasks), 2, DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), np.float32)  # zeros link to nothing
    unreadable = []
    for i, task in enumerate(tqdm(tasks, desc="comparing tiles", unit="tile", disable=not progress)):
        url = _image_of(task, schema)
        try:
            desc[i] = descriptor(grey_of(read(url), url))
        except (ImageError, FetchError) as exc:
            unreadable.append(f"task {task['id']}: {getattr(exc, 'message', exc)} (not compared with the others)")
    footprints = _footprints(tasks, schema, images)
    neighbours = overlap_pairs(footprints) if footprints else np.zeros((0, 2), np.int64)
    return TaskGroups(group_descriptors(desc), neighbours, unreadable)


def _image_of(task: dict, schema: LabelSchema) -> str:
    return str((task.get("data") or {}).get(schema.image_key, ""))


def _footprints(tasks: list[dict], schema: LabelSchema, images: Path | None) -> list[Footprint | None] | None:
    """Each task's window in its product, from the manifest of ``al-loop tile`` (None: not a cut tile)."""
    if images is None:
        return None
    by_name = {Path(t.file).name: Footprint.from_record(t) for entry in load_manifest(images).values() for t in entry.tiles}
    return [by_name.get(Path(task_file_path(_image_of(t, schema))).name) for t in tasks] if by_name else None


def check_weights(settings: dict) -> str | None:
    """What the workspace's encoder and SAM need, checked before Label Studio is touched: a
    ``sam-*`` encoder needs its weights (a WeightsError naming the download); SAM for the
    expert's boxes may go without (a note: boxes then train as their inscribed ellipses)."""
    from al_loop.models.encoders import encoder_spec
    from al_loop.models.weights import has_weights, resolve_checkpoint

    spec = encoder_spec(settings.get("encoder", "filterbank"))
    if spec.sam_model not in (None, "tiny"):
        resolve_checkpoint(spec.sam_model, settings.get("checkpoint"))
    model = settings.get("model", "vit_b")
    if has_weights(model, settings.get("checkpoint")):
        return None
    return (f"no SAM weights for {model}: boxes drawn without a mask train as the ellipse inscribed in them, and the "
            f"backend's smart box answers that ellipse (`al-loop weights download {model}` gives SAM's masks)")


class Marker:
    """This workspace's project marker: the one an earlier, failed ``init`` kept in ``path``, else a
    new one, written there just before Label Studio is asked to make the project."""

    def __init__(self, path: Path):
        self.path = path
        self.value = path.read_text().strip() if path.is_file() else uuid.uuid4().hex

    def keep(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.value + "\n")
        return self.value


def _check_request(
    workspace: Workspace, project: int | None, title: str, images: Path | None, tasks_file: Path | None
) -> None:
    """Everything that can be refused before Label Studio is touched (settings are checked by
    their resolver)."""
    if workspace.exists():
        raise LoopError(f"{workspace.root} already holds a workspace; pick another", param="workspace")
    if project is None and not 3 <= len(title.strip()) <= 50:
        raise LoopError(f"the title must be 3 to 50 characters (Label Studio's limits), not {title!r}", param="title")
    if (images is None) == (tasks_file is None) and project is None:
        raise LoopError("give the tiles as exactly one of a folder of images or a tasks file (or bind an existing "
                        "project)", param="images")


def tag_product_tiles(client, url: str, tasks: list[dict], images: Path, image_key: str) -> list[dict]:
    """Tasks of tiles cut by ``al-loop tile`` get their product id and position as data fields,
    so an expert can filter one product, or one strip of it, in the Data Manager."""
    by_name = {Path(tile.file).name: tile for entry in load_manifest(images).values() for tile in entry.tiles}
    if not by_name:
        return tasks
    tagged = []
    for task in tasks:
        data = dict(task.get("data") or {})
        tile = by_name.get(Path(task_file_path(str(data.get(image_key, "")))).name)
        if tile is not None:
            data.update(product_id=tile.product_id, tile_col=tile.col, tile_row=tile.row)
            update_task_data(client, url, int(task["id"]), data)
        tagged.append({**task, "data": data})
    return tagged


@dataclass
class BoundProject:
    project: int
    tasks: list[dict]
    schema: LabelSchema
    storage: int | None
    ml_backend: int | None
    resumed: bool = False  # the project an earlier, failed init made
    answered: int = 0  # tasks it already holds annotations on


def _bind_project(
    url: str, token: str, project: int | None, title: str, images: Path | None, new_tasks: list[dict] | None,
    backend_url: str | None, label_config: str, marker: Marker | None,
) -> BoundProject:
    """Label Studio's part: the project (created, found by its marker, or checked usable), its
    tasks, the backend. A project found by its marker gets only what it lacks."""
    client = connect(url, token)
    try:
        resumed = marker is not None and (found := find_project(client, url, marker.value)) is not None
        if resumed:
            project = found
        elif project is None:
            project = create_project(client, url, title, label_config, marker.keep())
        schema = parse_label_config(check_project(client, url, project))  # it must be usable: image + brush
        tasks = list_tasks(client, url, project) if resumed else []
        storage = None
        if images is not None and not tasks:
            suffixes = "|".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            storage = import_directory(client, url, project, str(images), rf"(?i).*\.({suffixes})$")
        if new_tasks is not None and not tasks:
            import_tasks(client, url, project, new_tasks)
        tasks = list_tasks(client, url, project)
        if not tasks:
            raise LoopError(f"project {project} holds no tasks after the import")
        if images is not None:
            tasks = tag_product_tiles(client, url, tasks, images, schema.image_key)
    except SchemaError as exc:  # a labelling config without image or brush
        raise LoopError(f"project {project}: {exc}") from None
    ml_backend = _backend(client, url, project, backend_url)
    # A project made by an earlier init, or bound with --project, may hold answers already.
    answered = len(annotated_tasks(client, project, url)) if resumed or marker is None else 0
    return BoundProject(project, tasks, schema, storage, ml_backend, resumed, answered)


def _backend(client, url: str, project: int, backend_url: str | None) -> int | None:
    """The project's connection to the backend: the one it has for ``backend_url`` (a bound or
    resumed project may already hold it: a second would ask the backend twice), else a new one."""
    if not backend_url:
        return None
    existing = find_backend(client, url, project, backend_url)
    return existing if existing is not None else connect_backend(client, url, project, backend_url)
