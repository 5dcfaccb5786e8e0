"""The HTTP face of the backend: the protocol Label Studio 1.23 speaks to ML backends.

GET /health (and /), POST /setup, POST /predict -> {"results": [...]}, POST /webhook
(annotation events, START_TRAINING), POST /train (Label Studio's older training call),
GET /metrics. Every error is JSON ``{"error": ...}`` with a 4xx/5xx status; a batch
answers the tasks it can and lists the others under ``errors``.

As in label-studio-ml-backend's ``api.py``, the routes only parse the request, call the
service (or the trainer) and shape the JSON; what to predict and how lives in
:mod:`ml_backend.service`.
"""
from __future__ import annotations

import hmac
import json
import logging
import resource
import threading
import time

from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from al_loop.errors import SchemaError
from al_loop.studio.fetch import LabelStudioAccess
from al_loop.studio.label_config import LabelSchema

from .redaction import Secrets
from .service import SegmentationService, TaskError, project_id
from .telemetry import Metrics
from .training import Trainer

log = logging.getLogger("ml_backend")

# What Label Studio's webhooks can send (webhooks/models.py) plus the ML training action.
ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"}
OTHER_ACTIONS = {
    "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED", "TASKS_CREATED", "TASKS_DELETED",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
}
TRAINING_ACTION = "START_TRAINING"
KNOWN_ACTIONS = ANNOTATION_ACTIONS | OTHER_ACTIONS | {TRAINING_ACTION}

# rule, HTTP method, Routes method. "/" answers as "/health" does, like label-studio-ml-backend.
ROUTES = (
    ("/", "GET", "health"),
    ("/health", "GET", "health"),
    ("/setup", "POST", "setup"),
    ("/predict", "POST", "predict"),
    ("/webhook", "POST", "webhook"),
    ("/train", "POST", "train"),
    ("/metrics", "GET", "metrics_text"),
)


class RequestError(Exception):
    """A request the backend refuses; answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def create_app(service: SegmentationService, trainer: Trainer | None = None, secrets: Secrets | None = None) -> Flask:
    """The Flask app around a loaded service; ``secrets`` learns the tokens ``/setup`` sends, to keep them out of logs."""
    app = Flask("ml_backend")
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = int(service.settings.max_body_mb * 1024 * 1024)
    routes = Routes(service, trainer or Trainer(service), Metrics(), secrets if secrets is not None else Secrets())
    app.extensions["al_backend"] = {"service": service, "trainer": routes.trainer, "metrics": routes.metrics}
    _register_hooks(app, routes)
    _register_error_handlers(app)
    for rule, method, name in ROUTES:
        app.add_url_rule(rule, endpoint=name, view_func=getattr(routes, name), methods=[method])
    return app


def _register_hooks(app: Flask, routes: Routes) -> None:
    # The timer starts first so that refused (401) requests are timed and counted too.
    app.before_request(_start_timer)
    app.before_request(routes.check_auth)
    app.after_request(routes.count)


def _register_error_handlers(app: Flask) -> None:
    # Every error is JSON with a reason, Flask's own 404 and 405 included: clients parse one shape.
    app.register_error_handler(RequestError, _refused)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, lambda exc: (jsonify(error=exc.description), exc.code))
    app.register_error_handler(Exception, _unexpected)


def _start_timer() -> None:
    g.started = time.perf_counter()


def _refused(exc: RequestError) -> ResponseReturnValue:
    response = jsonify(error=exc.message)
    if exc.status == 503:
        response.headers["Retry-After"] = "1"
    return response, exc.status


def _too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
    limit = (request.max_content_length or 0) / 2**20
    return jsonify(error=f"the request body is over the limit of {limit:g} MiB (AL_LOOP_MAX_BODY_MB)"), 413


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unexpected error on %s", request.path)
    return jsonify(error=f"internal error ({type(exc).__name__}); the server keeps serving, see its log"), 500


def _body() -> dict:
    """The request's JSON object; a RequestError (4xx) for a body that is not one."""
    try:
        raw = request.get_data(cache=True)  # a body over MAX_CONTENT_LENGTH raises 413 here
    except OSError as exc:  # the client closed the connection or sent a broken chunked body
        raise RequestError(400, f"the request body could not be read ({type(exc).__name__}): send it again") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "malformed JSON body: expected a JSON object") from None
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


def _resident_bytes() -> int:
    """The process's resident memory now (Linux; 0 elsewhere): a soak watches it stay flat."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _prompt_context(data: dict) -> dict | None:
    """The expert's prompt of an interactive request: Label Studio sends it as ``params.context``."""
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    context = params.get("context")
    return context if isinstance(context, dict) and context.get("result") else None


class Routes:
    """The routes and request hooks over one service, trainer, metrics and set of secrets."""

    def __init__(self, service: SegmentationService, trainer: Trainer, metrics: Metrics, secrets: Secrets):
        self.service, self.trainer, self.metrics, self.secrets = service, trainer, metrics, secrets
        self.auth = service.settings.basic_auth
        self.deadline = service.settings.request_deadline
        self._predict_slots = threading.BoundedSemaphore(service.settings.predict_slots)

    # -- hooks -----------------------------------------------------------------------------

    def check_auth(self) -> ResponseReturnValue | None:
        """None lets the request through; otherwise the 401 to answer with."""
        if self.auth is None or self._authorized():
            return None
        response = jsonify(error="authentication required: this backend uses basic auth (BASIC_AUTH_USER/PASS)")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="al-loop backend"'
        return response

    def _authorized(self) -> bool:
        given = request.authorization
        if given is None or given.type != "basic":
            return False
        # One constant-time comparison of user and password together: the time taken must tell
        # neither how much of a guess was right nor whether the user name alone was.
        offered = f"{given.username or ''}\0{given.password or ''}".encode()
        return hmac.compare_digest(offered, f"{self.auth[0]}\0{self.auth[1]}".encode())

    def count(self, response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        self.metrics.inc("al_backend_requests_total", route=route, status=str(response.status_code))
        if "started" in g:
            self.metrics.observe(route, time.perf_counter() - g.started)
        return response

    # -- routes ----------------------------------------------------------------------------

    def health(self) -> ResponseReturnValue:
        # "UP" even when degraded: SAM's box prompts still work, and Label Studio drops a
        # backend that is not UP. ``degraded`` and ``problems`` say what is wrong.
        current = self.service.decoders.current()
        problems = [p for p in (self.service.decoders.problem,) if p]
        return jsonify(
            status="UP",
            degraded=bool(problems),
            problems=problems,
            model_class="SamPitBackend",
            sam=self.service.prompts.version,
            engine=self.service.prompts.engine_description(),
            **({"note": self.service.prompts.proxy_note} if self.service.prompts.proxy_note else {}),
            decoder=current[0].version if current else None,
            model_version=self.service.model_version(),
            training=self.trainer.state.running,
        )

    def setup(self) -> ResponseReturnValue:
        data = _body()
        token, hostname = data.get("access_token"), data.get("hostname")
        if token is not None and not isinstance(token, str) or hostname is not None and not isinstance(hostname, str):
            raise RequestError(400, "access_token and hostname must be strings")
        self.secrets.set_project_token(project_id(data.get("project")), token)
        try:
            self.service.projects.link(data.get("project"), data.get("schema"), hostname, token)
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        return jsonify(model_version=self.service.model_version())

    def predict(self) -> ResponseReturnValue:
        data = _body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(400, "the body has no 'tasks' list (expected {\"tasks\": [...], ...})")
        try:
            schema = self.service.projects.schema(data.get("project"), data.get("label_config"))
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        if not self._predict_slots.acquire(blocking=False):
            # Waiting would hold a request thread; one thread must stay free for /health.
            raise RequestError(503, f"busy: {self.service.settings.predict_slots} predictions are running; ask again shortly")
        try:
            return self._predict(data, tasks, schema, time.monotonic() + self.deadline)
        finally:
            self._predict_slots.release()

    def _predict(self, data: dict, tasks: list, schema: LabelSchema, until: float) -> ResponseReturnValue:
        access = self.service.projects.project(data.get("project")).access
        context = _prompt_context(data)
        if context is not None:
            return self._interactive(tasks[0], context, schema, access, until)
        return self._batch(tasks, schema, access, until)

    def _interactive(
        self, task: dict, context: dict, schema: LabelSchema, access: LabelStudioAccess, until: float
    ) -> ResponseReturnValue:
        try:
            prediction = self.service.interactive(task, context, schema, access, until)
        except TaskError as exc:
            self.metrics.inc("al_backend_task_errors_total", kind="interactive", status=str(exc.status))
            raise RequestError(exc.status, exc.message) from None
        self.metrics.inc("al_backend_predictions_total", kind="interactive")
        return jsonify(results=[prediction], model_version=prediction["model_version"])

    def _batch(self, tasks: list, schema: LabelSchema, access: LabelStudioAccess, until: float) -> ResponseReturnValue:
        results, errors = self.service.predict_batch(tasks, schema, access, until)
        self._count_batch(results, errors)
        if errors and len(errors) == len(tasks):
            # Every task failed: the call fails with the first task's status, as a one-task call would.
            return jsonify(error=errors[0]["error"], errors=errors, results=results), errors[0]["status"]
        return jsonify(results=results, model_version=self.service.model_version(), errors=errors)

    def _count_batch(self, results: list[list[dict]], errors: list[dict]) -> None:
        for error in errors:
            self.metrics.inc("al_backend_task_errors_total", kind="batch", status=str(error["status"]))
        for prediction in (p for predictions in results for p in predictions):
            kind = "sam-boxes" if prediction["model_version"] == self.service.prompts.version else "decoder"
            self.metrics.inc("al_backend_predictions_total", kind=kind)

    def webhook(self) -> ResponseReturnValue:
        data = _body()
        action = data.get("action")
        if not isinstance(action, str) or action not in KNOWN_ACTIONS:
            known = ", ".join(sorted(KNOWN_ACTIONS))
            raise RequestError(400, f"unknown webhook action {str(action)[:80]!r}; this backend handles {known}")
        self.metrics.inc("al_backend_webhooks_total", action=action)
        if action != TRAINING_ACTION:
            return jsonify(status="ok", action=action)
        return jsonify(status=self._start_training(data.get("project")), action=action), 201

    def train(self) -> ResponseReturnValue:
        data = _body()
        self.metrics.inc("al_backend_webhooks_total", action="train")
        return jsonify(status=self._start_training(data.get("project"))), 201

    def _start_training(self, project: object) -> str:
        """Start (or queue) training once Label Studio confirms the project exists."""
        try:
            self.trainer.check(project)
        except TaskError as exc:
            raise RequestError(exc.status, exc.message) from None
        return self.trainer.request(project)

    def metrics_text(self) -> ResponseReturnValue:
        stats, state = self.service.cache.stats.as_dict(), self.trainer.state
        gauges = {
            "al_backend_embedding_cache_hits_total": stats["hits"],
            "al_backend_embedding_cache_misses_total": stats["misses"],
            "al_backend_encoder_passes_total": stats["encodes"],
            "al_backend_embedding_cache_repairs_total": stats["repairs"],
            "al_backend_training_runs_total": state.runs,
            "al_backend_training_failures_total": state.failures,
            "al_backend_training_running": int(state.running),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "process_resident_memory_bytes": _resident_bytes(),
        }
        return Response(self.metrics.render(gauges), mimetype="text/plain; version=0.0.4")
