"""The edge towards Label Studio: the SDK client, and the few calls the product makes.

Every failure becomes a :class:`LabelStudioError` that says what to do next
(unreachable, wrong token, no such project), never a traceback with a token in it.
"""
from __future__ import annotations

import json

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from al_loop.errors import LabelStudioError


def explain(exc: Exception, url: str, what: str) -> LabelStudioError:
    if isinstance(exc, ApiError):
        if exc.status_code == 401:
            return LabelStudioError(
                f"Label Studio at {url} refused the token (401) while {what}: check --token / LABEL_STUDIO_API_KEY "
                "(Account & Settings > Access Token)"
            )
        if exc.status_code == 404:
            return LabelStudioError(f"Label Studio at {url} answered 404 while {what}: does that project or task exist?")
        return LabelStudioError(f"Label Studio at {url} answered {exc.status_code} while {what}: {exc.body}")
    if isinstance(exc, httpx.HTTPError):
        return LabelStudioError(f"Label Studio is unreachable at {url} while {what} ({type(exc).__name__}); is it running?")
    return LabelStudioError(f"{what} failed: {exc}")


def connect(url: str, token: str, timeout: float = 60.0) -> LabelStudio:
    """A client whose token has been checked (one cheap call), so later errors are about data."""
    client = LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=timeout)
    try:
        client.users.whoami()
    except (ApiError, httpx.HTTPError) as exc:
        raise explain(exc, url, "checking the token") from None
    return client


def annotated_tasks(client: LabelStudio, project: int, url: str = "") -> list[dict]:
    """Every task of a project with at least one annotation (skips included), as Label Studio exports them."""
    try:
        blob = b"".join(client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=False))
    except (ApiError, httpx.HTTPError) as exc:
        raise explain(exc, url, f"reading the annotations of project {project}") from None
    return json.loads(blob or b"[]")


def label_config(client: LabelStudio, project: int, url: str = "") -> str:
    try:
        return client.projects.get(project).label_config
    except (ApiError, httpx.HTTPError) as exc:
        raise explain(exc, url, f"reading project {project}") from None


def _call(url: str, what: str, fn, /, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ApiError, httpx.HTTPError) as exc:
        raise explain(exc, url, what) from None


def create_project(client: LabelStudio, url: str, title: str, config: str) -> int:
    return _call(url, "creating the project", client.projects.create, title=title, label_config=config).id


def check_project(client: LabelStudio, url: str, project: int) -> str:
    """The project's labelling config; a clear error when the project does not exist."""
    return _call(url, f"opening project {project}", client.projects.get, project).label_config


def import_directory(client: LabelStudio, url: str, project: int, directory: str, pattern: str) -> int:
    """Connect a local-files storage on ``directory`` (nothing is copied) and sync it; returns its id."""
    storage = _call(
        url, f"connecting {directory} as local storage (it must lie under Label Studio's "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)",
        client.import_storage.local.create,
        project=project, path=directory, regex_filter=pattern, use_blob_urls=True, recursive_scan=True, title="al-loop tiles",
    )
    _call(url, "syncing the local storage", client.import_storage.local.sync, id=storage.id)
    return storage.id


def import_tasks(client: LabelStudio, url: str, project: int, tasks: list[dict]) -> list[int]:
    reply = _call(url, "importing tasks", client.projects.import_tasks, project, request=tasks, return_task_ids=True)
    return list(reply.task_ids or [])


def list_tasks(client: LabelStudio, url: str, project: int) -> list[dict]:
    """Every task of the project as ``{"id", "data"}``."""
    pager = _call(url, f"listing the tasks of project {project}", client.tasks.list, project=project, fields="task_only", page_size=500)
    return _call(url, "listing tasks", lambda: [{"id": t.id, "data": t.data} for t in pager])


def update_task_data(client: LabelStudio, url: str, task: int, data: dict) -> None:
    """Replace a task's data (Label Studio keeps the whole ``data`` object given)."""
    _call(url, f"updating task {task}", client.tasks.update, str(task), data=data)


def connect_backend(client: LabelStudio, url: str, project: int, backend_url: str) -> int:
    ml = _call(
        url, f"connecting the ML backend at {backend_url}", client.ml.create,
        project=project, url=backend_url, is_interactive=True, title="al-loop SAM backend",
    )
    return ml.id


def create_prediction(client: LabelStudio, url: str, task: int, result: list[dict], score: float, model_version: str) -> int:
    reply = _call(
        url, f"uploading the prediction for task {task}", client.predictions.create,
        task=task, result=result, score=score, model_version=model_version,
    )
    return reply.id


def find_prediction(client: LabelStudio, url: str, task: int, model_version: str) -> int | None:
    """The id of a prediction of ``model_version`` already on ``task`` (a push cut short), if any."""
    found = _call(url, f"reading the predictions of task {task}", client.predictions.list, task=task)
    ids = [p.id for p in found if p.model_version == model_version]
    return min(ids) if ids else None


def create_annotation(
    client: LabelStudio, url: str, task: int, result: list[dict], was_cancelled: bool = False
) -> int:
    """Submit an annotation (``was_cancelled``: what the Skip button does); returns its id."""
    what = f"{'skipping' if was_cancelled else 'annotating'} task {task}"
    return _call(url, what, client.annotations.create, id=task, result=result, was_cancelled=was_cancelled).id


def round_view_data(title: str, task_ids: list[int]) -> dict:
    """A Data Manager tab that holds exactly ``task_ids``."""
    items = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)} for t in task_ids]
    return {"title": title, "filters": {"conjunction": "or", "items": items}, "ordering": ["tasks:id"]}


def put_view(client: LabelStudio, url: str, project: int, title: str, task_ids: list[int]) -> int:
    """Create the tab ``title`` holding ``task_ids``, or make an existing tab of that title hold exactly them."""
    views = _call(url, f"listing the tabs of project {project}", client.views.list, project=project)
    data = round_view_data(title, task_ids)
    for view in views:
        if (view.data or {}).get("title") == title:
            _call(url, f"updating tab {title!r}", client.views.update, str(view.id), project=project, data=data)
            return view.id
    return _call(url, f"creating tab {title!r}", client.views.create, project=project, data=data).id


def view_task_ids(client: LabelStudio, url: str, project: int, view: int) -> list[int]:
    """The tasks a tab shows, as the Data Manager filters them."""
    pager = _call(url, f"listing tab {view}", client.tasks.list, project=project, view=view, fields="task_only", page_size=500)
    return _call(url, "listing tasks", lambda: sorted(t.id for t in pager))


def show_predictions(client: LabelStudio, url: str, project: int, model_version: str) -> None:
    """Pre-label tasks with ``model_version``'s predictions when the expert opens them
    (Settings > Annotation > Use predictions to prelabel tasks)."""
    _call(url, f"selecting predictions {model_version} in project {project}", client.projects.update,
          project, model_version=model_version, show_collab_predictions=True)
