"""The edge towards Label Studio: the SDK client, and the few calls the product makes.

Every failure becomes a :class:`LabelStudioError` that says what to do next
(unreachable, wrong token, no such project), never a traceback with a token in it.

One retry policy (:data:`RETRY`) covers every call, here and nowhere else. The SDK's own
retries are turned off: it would repeat every method, POST included, after a 5xx that may
have come after Label Studio stored the object (a duplicate prediction or tab), and it never
repeats a timeout. Instead:

* idempotent calls (reads, and updates that send the same data again) are retried after a
  transient failure -- a 5xx, 408, 429, a timeout, a dropped connection -- pausing longer
  each time (:func:`call_idempotent`);
* creates are tried once (:func:`_once`), except the two the loop repeats, a prediction and
  a round's tab: before trying again they look in Label Studio for what the failed try may
  have stored (:func:`create_prediction`, :func:`put_view`);
* any other 4xx is an answer, never retried.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.pagination import SyncPager

from al_loop.errors import LabelStudioError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """The pause before each new try of a call that failed for now (so ``len(delays) + 1`` tries
    at most), and the seconds a request may take before it counts as failed."""

    # 7.5 s of pauses in all: rides out a blip (a worker restarting, a proxy's 502) without keeping
    # someone whose Label Studio is down waiting long for the error
    delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    timeout: float = 60.0


# Read at each call, so a test (or an embedding program) may set a quicker one.
RETRY = RetryPolicy()

# Passed on every SDK call: its own retries off, whatever client it is (see the module doc).
_ONE_TRY = {"max_retries": 0}

# Failures that say nothing about the request itself: the same call may well succeed later.
_TRANSIENT_STATUS = (408, 429)
_TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

_RERUN = ("once it answers again, run the same command again: `al-loop next-batch` resumes where it "
          "stopped and pushes nothing twice")


def explain(exc: Exception, url: str, what: str) -> LabelStudioError:
    if isinstance(exc, ApiError):
        if exc.status_code == 401:
            return LabelStudioError(
                f"Label Studio at {url} refused the token (401) while {what}: check the token ($LABEL_STUDIO_API_KEY) "
                "(Account & Settings > Access Token)", status=401,
            )
        if exc.status_code == 404:
            return LabelStudioError(f"Label Studio at {url} answered 404 while {what}: does that project or task exist?", status=404)
        return LabelStudioError(f"Label Studio at {url} answered {exc.status_code} while {what}: {_short(exc.body)}",
                                status=exc.status_code)
    if isinstance(exc, httpx.TimeoutException):
        return LabelStudioError(f"Label Studio at {url} did not answer in time while {what} ({type(exc).__name__})")
    if isinstance(exc, httpx.HTTPError):
        return LabelStudioError(f"Label Studio is unreachable at {url} while {what} ({type(exc).__name__}); is it running?")
    return LabelStudioError(f"{what} failed: {exc}")


def _short(body, limit: int = 300) -> str:
    """An error body as text, cut short: a proxy's 502 page can be long HTML."""
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


def transient(exc: Exception) -> bool:
    """Worth another try: Label Studio (or a proxy before it) failed for now, not because of the request."""
    if isinstance(exc, ApiError):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code in _TRANSIENT_STATUS)
    return isinstance(exc, _TRANSIENT_HTTPX)


def _failure(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"it answered {exc.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return f"it did not answer within the timeout ({type(exc).__name__})"
    return f"it was unreachable ({type(exc).__name__}: is it running?)"


def _gave_up(exc: Exception, url: str, what: str, tries: int, seconds: float) -> LabelStudioError:
    tried = f"{tries} {'try' if tries == 1 else 'tries'} over {seconds:.1f} s"
    return LabelStudioError(
        f"Label Studio at {url} kept failing while {what}: {tried}, and the last time {_failure(exc)}. Nothing is lost; {_RERUN}"
    )


def _retrying(url: str, what: str, attempt: Callable[[], T], landed: Callable[[], T | None] | None = None) -> T:
    """``attempt()``, tried again after a transient failure, pausing :data:`RETRY`'s delays in between.

    ``landed`` makes a create safe to try again: a timeout, or a 5xx sent after the commit, may
    hide that Label Studio stored the object, so before each new try ``landed()`` looks for it
    there and whatever it finds is the result."""
    started, delays = time.monotonic(), RETRY.delays
    for tries in range(1, len(delays) + 2):
        try:
            return attempt()
        except (ApiError, httpx.HTTPError) as exc:
            if not transient(exc):
                raise explain(exc, url, what) from None
            if tries > len(delays):
                raise _gave_up(exc, url, what, tries, time.monotonic() - started) from None
        time.sleep(delays[tries - 1])
        if landed is not None and (found := landed()) is not None:
            return found
    raise AssertionError("unreachable: the last try returns or raises")


def call_idempotent(url: str, what: str, fn, /, *args, **kwargs):
    """An SDK call that may be repeated (a read, or an update with the same data), retried per
    :data:`RETRY`. A pager is read to the end inside the try, so a page that fails reads all again."""

    def attempt():
        reply = fn(*args, request_options=_ONE_TRY, **kwargs)
        return list(reply) if isinstance(reply, SyncPager) else reply

    return _retrying(url, what, attempt)


def _once(url: str, what: str, fn, /, *args, **kwargs):
    """An SDK call that creates something: tried once, since a repeat could create it twice."""
    try:
        return fn(*args, request_options=_ONE_TRY, **kwargs)
    except (ApiError, httpx.HTTPError) as exc:
        error = explain(exc, url, what)
        if transient(exc):  # the failure may have come after Label Studio stored it
            error = LabelStudioError(f"{error} (it may have been stored all the same: look in Label Studio before repeating it)")
        raise error from None


def connect(url: str, token: str, timeout: float | None = None) -> LabelStudio:
    """A client whose token has been checked (one cheap call), so later errors are about data."""
    # max_retries=0: the retries are this module's (see the module doc), also for calls made on the client directly
    client = LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=timeout or RETRY.timeout, max_retries=0)
    call_idempotent(url, "checking the token", client.users.whoami)
    return client


def annotated_tasks(client: LabelStudio, project: int, url: str = "") -> list[dict]:
    """Every task of a project with at least one annotation (skips included), as Label Studio exports them."""
    blob = _retrying(url, f"reading the annotations of project {project}", lambda: b"".join(
        client.projects.exports.download_sync(project, export_type="JSON", download_all_tasks=False, request_options=_ONE_TRY)
    ))
    return json.loads(blob or b"[]")


def label_config(client: LabelStudio, project: int, url: str = "") -> str:
    return call_idempotent(url, f"reading project {project}", client.projects.get, project).label_config


def create_project(client: LabelStudio, url: str, title: str, config: str, marker: str) -> int:
    """Create the project with ``marker`` in its description, so a retry (here after a transient
    failure, or a whole ``init`` run again) finds it instead of making a second one."""
    return _retrying(
        url, "creating the project",
        lambda: client.projects.create(title=title, label_config=config, description=marker_text(marker),
                                       request_options=_ONE_TRY).id,
        landed=lambda: find_project(client, url, marker),
    )


def marker_text(marker: str) -> str:
    return f"made by al-loop init (workspace marker {marker})"


def find_project(client: LabelStudio, url: str, marker: str) -> int | None:
    """The project an earlier ``create_project`` with this ``marker`` made, if any."""
    projects = call_idempotent(url, "listing the projects", client.projects.list)
    found = [p.id for p in projects if marker_text(marker) in (p.description or "")]
    return min(found) if found else None


def check_project(client: LabelStudio, url: str, project: int) -> str:
    """The project's labelling config; a clear error when the project does not exist."""
    return call_idempotent(url, f"opening project {project}", client.projects.get, project).label_config


def import_directory(client: LabelStudio, url: str, project: int, directory: str, pattern: str) -> int:
    """Connect a local-files storage on ``directory`` (nothing is copied) and sync it; returns its id."""
    storage = _once(
        url, f"connecting {directory} as local storage (it must lie under Label Studio's "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)",
        client.import_storage.local.create,
        project=project, path=directory, regex_filter=pattern, use_blob_urls=True, recursive_scan=True, title="al-loop tiles",
    )
    _once(url, "syncing the local storage", client.import_storage.local.sync, id=storage.id)
    return storage.id


def import_tasks(client: LabelStudio, url: str, project: int, tasks: list[dict]) -> list[int]:
    reply = _once(url, "importing tasks", client.projects.import_tasks, project, request=tasks, return_task_ids=True)
    return list(reply.task_ids or [])


def list_tasks(client: LabelStudio, url: str, project: int) -> list[dict]:
    """Every task of the project as ``{"id", "data"}``."""
    tasks = call_idempotent(url, f"listing the tasks of project {project}", client.tasks.list,
                        project=project, fields="task_only", page_size=500)
    return [{"id": t.id, "data": t.data} for t in tasks]


def update_task_data(client: LabelStudio, url: str, task: int, data: dict) -> None:
    """Replace a task's data (Label Studio keeps the whole ``data`` object given)."""
    call_idempotent(url, f"updating task {task}", client.tasks.update, str(task), data=data)


def find_backend(client: LabelStudio, url: str, project: int, backend_url: str) -> int | None:
    """The project's connection to the backend at ``backend_url``, if it has one."""
    found = call_idempotent(url, f"listing the ML backends of project {project}", client.ml.list, project=project)
    ids = [m.id for m in found if (m.url or "").rstrip("/") == backend_url.rstrip("/")]
    return min(ids) if ids else None


def connect_backend(client: LabelStudio, url: str, project: int, backend_url: str) -> int:
    ml = _once(
        url, f"connecting the ML backend at {backend_url}", client.ml.create,
        project=project, url=backend_url, is_interactive=True, title="al-loop SAM backend",
    )
    return ml.id


def create_prediction(client: LabelStudio, url: str, task: int, result: list[dict], score: float, model_version: str) -> int:
    """Upload a prediction; retried after a transient failure, but only once it is clear that
    the failed try stored none (a task holds one prediction per model version)."""
    return _retrying(
        url, f"uploading the prediction for task {task}",
        lambda: client.predictions.create(task=task, result=result, score=score, model_version=model_version,
                                          request_options=_ONE_TRY).id,
        landed=lambda: find_prediction(client, url, task, model_version),
    )


def find_prediction(client: LabelStudio, url: str, task: int, model_version: str) -> int | None:
    """The id of a prediction of ``model_version`` already on ``task`` (a push cut short), if any."""
    found = call_idempotent(url, f"reading the predictions of task {task}", client.predictions.list, task=task)
    ids = [p.id for p in found if p.model_version == model_version]
    return min(ids) if ids else None


def create_annotation(
    client: LabelStudio, url: str, task: int, result: list[dict], was_cancelled: bool = False
) -> int:
    """Submit an annotation (``was_cancelled``: what the Skip button does); returns its id."""
    what = f"{'skipping' if was_cancelled else 'annotating'} task {task}"
    return _once(url, what, client.annotations.create, id=task, result=result, was_cancelled=was_cancelled).id


def round_view_data(title: str, task_ids: list[int]) -> dict:
    """A Data Manager tab that holds exactly ``task_ids``."""
    items = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)} for t in task_ids]
    return {"title": title, "filters": {"conjunction": "or", "items": items}, "ordering": ["tasks:id"]}


def find_view(client: LabelStudio, url: str, project: int, title: str) -> int | None:
    """The id of the project's tab called ``title``, if there is one (the oldest, should there be several)."""
    views = call_idempotent(url, f"listing the tabs of project {project}", client.views.list, project=project)
    ids = [view.id for view in views if (view.data or {}).get("title") == title]
    return min(ids) if ids else None


def put_view(client: LabelStudio, url: str, project: int, title: str, task_ids: list[int]) -> int:
    """Create the tab ``title`` holding ``task_ids``, or make an existing tab of that title hold exactly them."""
    data = round_view_data(title, task_ids)
    view = find_view(client, url, project, title)
    if view is not None:
        call_idempotent(url, f"updating tab {title!r}", client.views.update, str(view), project=project, data=data)
        return view
    # A failed create may have stored the tab all the same (it then holds ``data``): look before trying again.
    return _retrying(
        url, f"creating tab {title!r}",
        lambda: client.views.create(project=project, data=data, request_options=_ONE_TRY).id,
        landed=lambda: find_view(client, url, project, title),
    )


def view_task_ids(client: LabelStudio, url: str, project: int, view: int) -> list[int]:
    """The tasks a tab shows, as the Data Manager filters them."""
    tasks = call_idempotent(url, f"listing tab {view}", client.tasks.list,
                        project=project, view=view, fields="task_only", page_size=500)
    return sorted(t.id for t in tasks)


def show_predictions(client: LabelStudio, url: str, project: int, model_version: str) -> None:
    """Pre-label tasks with ``model_version``'s predictions when the expert opens them
    (Settings > Annotation > Use predictions to prelabel tasks)."""
    call_idempotent(url, f"selecting predictions {model_version} in project {project}", client.projects.update,
                project, model_version=model_version, show_collab_predictions=True)
