"""Keeping Label Studio tokens and the basic-auth password out of every log line and traceback.

The set of secrets is bounded: the configured ones, plus the token each project's latest
``/setup`` sent (a new one replaces the old), for at most :data:`MAX_PROJECTS` projects.
Strings shorter than :data:`MIN_SECRET_LENGTH` are never treated as secrets: a caller who
could register "GET" would otherwise blank ordinary words of every log line.
"""
from __future__ import annotations

import logging
import threading
import traceback
from collections import OrderedDict

MIN_SECRET_LENGTH = 8
MAX_PROJECTS = 256
MASK = "***"


class Secrets:
    """The strings to redact; thread-safe, bounded."""

    def __init__(self, configured: list[str] | tuple[str, ...] = ()):
        self._configured = tuple(s for s in configured if _worth_hiding(s))
        self._by_project: OrderedDict[object, str] = OrderedDict()
        self._lock = threading.Lock()
        self._current: tuple[str, ...] = self._configured

    def set_project_token(self, project: object, token: object) -> None:
        """The token ``/setup`` sent for ``project`` (replacing that project's earlier one)."""
        if not isinstance(token, str) or not _worth_hiding(token):
            return
        with self._lock:
            self._by_project.pop(project, None)
            self._by_project[project] = token
            while len(self._by_project) > MAX_PROJECTS:
                self._by_project.popitem(last=False)
            # Longest first, so a token that contains another is hidden whole.
            self._current = tuple(sorted({*self._configured, *self._by_project.values()}, key=len, reverse=True))

    def current(self) -> tuple[str, ...]:
        return self._current

    def redact(self, text: str) -> str:
        for secret in self._current:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def _worth_hiding(secret: object) -> bool:
    return isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH


class RedactSecrets(logging.Filter):
    """Replaces every secret in a log record's message, traceback and stack with ``***``."""

    def __init__(self, secrets: Secrets):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets.current():
            return True
        record.msg, record.args = self.secrets.redact(record.getMessage()), ()
        if record.exc_info:
            # Format the traceback now, redacted; the handler's formatter prints exc_text as it is.
            record.exc_text = self.secrets.redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.secrets.redact(record.stack_info)
        return True


def install_redaction(
    secrets: Secrets, names: tuple[str, ...] = ("", "gunicorn.error", "gunicorn.access", "werkzeug")
) -> RedactSecrets:
    """Filter every named logger and its handlers; ``secrets`` may change later (``/setup`` tokens)."""
    redact = RedactSecrets(secrets)
    for name in names:
        logger = logging.getLogger(name)
        logger.addFilter(redact)
        for handler in logger.handlers:
            handler.addFilter(redact)
    return redact
