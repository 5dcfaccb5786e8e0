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
import logging
import resource
import time

from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from al_loop.errors import SchemaError
from al_loop.studio.fetch import LabelStudioAccess
from al_loop.studio.label_config import LabelSchema

from .service import SegmentationService, TaskError
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


def create_app(service: SegmentationService, trainer: Trainer | None = None, secrets: set[str] | None = None) -> Flask:
    """The Flask app around a loaded service; ``secrets`` collects tokens to keep out of logs."""
    app = Flask("ml_backend")
    app.config["JSON_SORT_KEYS"] = False
    routes = Routes(service, trainer or Trainer(service), Metrics(), secrets if secrets is not None else set())
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
    app.register_error_handler(RequestError, lambda exc: (jsonify(error=exc.message), exc.status))
    app.register_error_handler(HTTPException, lambda exc: (jsonify(error=exc.description), exc.code))
    app.register_error_handler(Exception, _unexpected)


def _start_timer() -> None:
    g.started = time.perf_counter()


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unexpected error on %s", request.path)
    return jsonify(error=f"internal error ({type(exc).__name__}); the server keeps serving, see its log"), 500


def _body() -> dict:
    data = request.get_json(force=True, silent=True)
    if data is None:
        raise RequestError(400, "malformed JSON body: expected a JSON object")
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


def _prompt_context(data: dict) -> dict | None:
    """The expert's prompt of an interactive request: Label Studio sends it as ``params.context``."""
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    context = params.get("context")
    return context if isinstance(context, dict) and context.get("result") else None


class Routes:
    """The routes and request hooks over one service, trainer, metrics and set of secrets."""

    def __init__(self, service: SegmentationService, trainer: Trainer, metrics: Metrics, secrets: set[str]):
        self.service, self.trainer, self.metrics, self.secrets = service, trainer, metrics, secrets
        self.auth = service.settings.basic_auth

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
        current = self.service.current_decoder()
        return jsonify(
            status="UP",
            model_class="SamPitBackend",
            sam=self.service.sam_version,
            decoder=current[0].version if current else None,
            model_version=self.service.model_version(),
            training=self.trainer.state.running,
        )

    def setup(self) -> ResponseReturnValue:
        data = _body()
        token = data.get("access_token")
        if token:
            self.secrets.add(str(token))
        try:
            self.service.link(data.get("project"), data.get("schema"), data.get("hostname"), token)
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        return jsonify(model_version=self.service.model_version())

    def predict(self) -> ResponseReturnValue:
        data = _body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(400, "the body has no 'tasks' list (expected {\"tasks\": [...], ...})")
        try:
            schema = self.service.schema(data.get("project"), data.get("label_config"))
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        access = self.service.project(data.get("project")).access
        context = _prompt_context(data)
        if context is not None:
            return self._interactive(tasks[0], context, schema, access)
        return self._batch(tasks, schema, access)

    def _interactive(
        self, task: dict, context: dict, schema: LabelSchema, access: LabelStudioAccess
    ) -> ResponseReturnValue:
        try:
            prediction = self.service.interactive(task, context, schema, access)
        except TaskError as exc:
            self.metrics.inc("al_backend_task_errors_total", kind="interactive", status=str(exc.status))
            raise RequestError(exc.status, exc.message) from None
        self.metrics.inc("al_backend_predictions_total", kind="interactive")
        return jsonify(results=[prediction], model_version=prediction["model_version"])

    def _batch(self, tasks: list, schema: LabelSchema, access: LabelStudioAccess) -> ResponseReturnValue:
        results, errors = self.service.predict_batch(tasks, schema, access)
        self._count_batch(results, errors)
        if errors and len(errors) == len(tasks):
            # Every task failed: the call fails with the first task's status, as a one-task call would.
            return jsonify(error=errors[0]["error"], errors=errors, results=results), errors[0]["status"]
        return jsonify(results=results, model_version=self.service.model_version(), errors=errors)

    def _count_batch(self, results: list[list[dict]], errors: list[dict]) -> None:
        for error in errors:
            self.metrics.inc("al_backend_task_errors_total", kind="batch", status=str(error["status"]))
        for prediction in (p for predictions in results for p in predictions):
            kind = "sam-boxes" if prediction["model_version"] == self.service.sam_version else "decoder"
            self.metrics.inc("al_backend_predictions_total", kind=kind)

    def webhook(self) -> ResponseReturnValue:
        data = _body()
        action = data.get("action")
        if action not in KNOWN_ACTIONS:
            known = ", ".join(sorted(KNOWN_ACTIONS))
            raise RequestError(400, f"unknown webhook action {action!r}; this backend handles {known}")
        self.metrics.inc("al_backend_webhooks_total", action=action)
        if action != TRAINING_ACTION:
            return jsonify(status="ok", action=action)
        project = data.get("project")
        if project is None:
            raise RequestError(400, "START_TRAINING without a project")
        return jsonify(status=self.trainer.request(project), action=action), 201

    def train(self) -> ResponseReturnValue:
        data = _body()
        if data.get("project") is None:
            raise RequestError(400, "training request without a project")
        self.metrics.inc("al_backend_webhooks_total", action="train")
        return jsonify(status=self.trainer.request(data["project"])), 201

    def metrics_text(self) -> ResponseReturnValue:
        stats, state = self.service.cache.stats.as_dict(), self.trainer.state
        gauges = {
            "al_backend_embedding_cache_hits_total": stats["hits"],
            "al_backend_embedding_cache_misses_total": stats["misses"],
            "al_backend_encoder_passes_total": stats["encodes"],
            "al_backend_training_runs_total": state.runs,
            "al_backend_training_failures_total": state.failures,
            "al_backend_training_running": int(state.running),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        return Response(self.metrics.render(gauges), mimetype="text/plain; version=0.0.4")
