"""Tokens stay out of logs and tracebacks, and callers cannot grow the redaction set (issue 15)."""
from __future__ import annotations

import io
import logging

from ml_backend.redaction import MAX_PROJECTS, RedactSecrets, Secrets


def _logger(secrets: Secrets) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets(secrets))
    logger = logging.getLogger(f"redaction-test-{id(out)}")
    logger.addHandler(handler)
    logger.propagate = False
    return logger, out


def test_configured_and_setup_tokens_are_hidden_in_messages_and_tracebacks():
    secrets = Secrets(["configured-token-1234", "short"])
    secrets.set_project_token(7, "project-seven-token-abcdef")
    logger, out = _logger(secrets)
    logger.warning("calling with %s and %s", "configured-token-1234", "project-seven-token-abcdef")
    try:
        raise RuntimeError("Authorization: Token project-seven-token-abcdef refused")
    except RuntimeError:
        logger.exception("request failed")
    text = out.getvalue()
    assert "configured-token-1234" not in text and "project-seven-token-abcdef" not in text
    assert text.count("***") == 4 and "Traceback" in text and "RuntimeError" in text
    assert "short" not in secrets.current()  # under 8 characters: never a secret


def test_a_caller_cannot_blank_log_words_or_grow_the_set_without_bound():
    secrets = Secrets(["configured-token-1234"])
    for word in ("GET", "POST", "/health", "200", ""):
        secrets.set_project_token(1, word)
    logger, out = _logger(secrets)
    logger.warning("GET /health 200")
    assert out.getvalue().strip() == "GET /health 200"
    for project in range(20_000):
        secrets.set_project_token(project, f"token-of-project-{project:06d}")
    assert len(secrets.current()) == MAX_PROJECTS + 1
    # A project's new token replaces its old one; the old one is no longer hidden (it is no longer valid).
    secrets.set_project_token(19_999, "a-fresh-token-for-19999")
    assert "token-of-project-019999" not in secrets.current() and "a-fresh-token-for-19999" in secrets.current()
