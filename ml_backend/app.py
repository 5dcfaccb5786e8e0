"""The HTTP face of the backend: the protocol Label Studio 1.23 speaks to ML backends.

GET /health (and /), POST /setup, POST /predict -> {"results": [...]}, POST /webhook
(annotation events, START_TRAINING), POST /train (Label Studio's older training call),
GET /metrics. Every error is JSON ``{"error": ...}`` with a 4xx/5xx status; a batch
answers the tasks it can and lists the others under ``errors``.
"""
from __future__ import annotations

import hmac
import logging
import resource
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from al_loop.studio.label_config import SchemaError

from al_loop.evaluation.metrics import Metrics
from .service import SegmentationService, TaskError
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


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def create_app(service: SegmentationService, trainer: Trainer | None = None, secrets=None) -> Flask:
    """The Flask app around a loaded service; ``secrets`` collects tokens to keep out of logs."""
    app = Flask("ml_backend")
    app.config["JSON_SORT_KEYS"] = False
    metrics = Metrics()
    trainer = trainer or Trainer(service)
    secrets = secrets if secrets is not None else set()
    auth = service.settings.basic_auth
    app.extensions["al_backend"] = {"service": service, "trainer": trainer, "metrics": metrics}

    @app.before_request
    def check_auth():
        g.started = time.perf_counter()
        if auth is None:
            return None
        given = request.authorization
        ok = (
            given is not None
            and given.type == "basic"
            and hmac.compare_digest((given.username or "").encode(), auth[0].encode())
            and hmac.compare_digest((given.password or "").encode(), auth[1].encode())
        )
        if not ok:
            response = jsonify(error="authentication required: this backend uses basic auth (BASIC_AUTH_USER/PASS)")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="al-loop backend"'
            return response
        return None

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.inc("al_backend_requests_total", route=route, status=str(response.status_code))
        if "started" in g:
            metrics.observe(route, time.perf_counter() - g.started)
        return response

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s", request.path)
        return jsonify(error=f"internal error ({type(exc).__name__}); the server keeps serving, see its log"), 500

    def body() -> dict:
        data = request.get_json(force=True, silent=True)
        if data is None:
            raise RequestError(400, "malformed JSON body: expected a JSON object")
        if not isinstance(data, dict):
            raise RequestError(400, "the body must be a JSON object")
        return data

    @app.get("/")
    @app.get("/health")
    def health():
        current = service.current_decoder()
        return jsonify(
            status="UP",
            model_class="SamPitBackend",
            sam=service.sam_version,
            decoder=current[0].version if current else None,
            model_version=service.model_version(),
            training=trainer.state.running,
        )

    @app.post("/setup")
    def setup():
        data = body()
        token = data.get("access_token")
        if token:
            secrets.add(str(token))
        try:
            service.link(data.get("project"), data.get("schema"), data.get("hostname"), token)
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        return jsonify(model_version=service.model_version())

    @app.post("/predict")
    def predict():
        data = body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(400, "the body has no 'tasks' list (expected {\"tasks\": [...], ...})")
        try:
            schema = service.schema(data.get("project"), data.get("label_config"))
        except SchemaError as exc:
            raise RequestError(422, str(exc)) from None
        access = service.project(data.get("project")).access
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        context = params.get("context")
        if isinstance(context, dict) and context.get("result"):
            try:
                prediction = service.interactive(tasks[0], context, schema, access)
            except TaskError as exc:
                metrics.inc("al_backend_task_errors_total", kind="interactive", status=str(exc.status))
                raise RequestError(exc.status, exc.message) from None
            metrics.inc("al_backend_predictions_total", kind="interactive")
            return jsonify(results=[prediction], model_version=prediction["model_version"])
        results, errors = [], []
        for task in tasks:
            try:
                predictions = service.preannotate(task, schema, access)
            except TaskError as exc:
                metrics.inc("al_backend_task_errors_total", kind="batch", status=str(exc.status))
                errors.append({"task": exc.task_id, "status": exc.status, "error": exc.message})
                predictions = []
            for p in predictions:
                metrics.inc("al_backend_predictions_total", kind="sam-boxes" if p["model_version"] == service.sam_version else "decoder")
            results.append(predictions)
        if errors and len(errors) == len(tasks):
            return jsonify(error=errors[0]["error"], errors=errors, results=results), errors[0]["status"]
        return jsonify(results=results, model_version=service.model_version(), errors=errors)

    @app.post("/webhook")
    def webhook():
        data = body()
        action = data.get("action")
        if action not in KNOWN_ACTIONS:
            raise RequestError(400, f"unknown webhook action {action!r}; this backend handles {', '.join(sorted(KNOWN_ACTIONS))}")
        metrics.inc("al_backend_webhooks_total", action=action)
        if action != TRAINING_ACTION:
            return jsonify(status="ok", action=action)
        project = data.get("project")
        if project is None:
            raise RequestError(400, "START_TRAINING without a project")
        return jsonify(status=trainer.request(project), action=action), 201

    @app.post("/train")
    def train():
        data = body()
        if data.get("project") is None:
            raise RequestError(400, "training request without a project")
        metrics.inc("al_backend_webhooks_total", action="train")
        return jsonify(status=trainer.request(data["project"])), 201

    @app.get("/metrics")
    def metrics_endpoint():
        stats = service.cache.stats.as_dict()
        state = trainer.state
        gauges = {
            "al_backend_embedding_cache_hits_total": stats["hits"],
            "al_backend_embedding_cache_misses_total": stats["misses"],
            "al_backend_encoder_passes_total": stats["encodes"],
            "al_backend_training_runs_total": state.runs,
            "al_backend_training_failures_total": state.failures,
            "al_backend_training_running": int(state.running),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        text = metrics.render(gauges)
        return Response(text, mimetype="text/plain; version=0.0.4")

    return app
