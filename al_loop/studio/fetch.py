"""Getting a task's image bytes, wherever Label Studio says the image is.

Task URLs come in four shapes: Label Studio local files (``/data/local-files/?d=...``),
uploads (``/data/upload/...``), absolute http(s) URLs, and plain local paths. Label
Studio URLs are fetched from its host with its token; a local-files URL is read
straight from disk when this process sees the same document root (the demo and the
compose file share it), which saves a round trip per request. Local paths never leave
the allowed root. Errors carry the HTTP status the backend should answer with, and
never the token.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import requests

from al_loop.errors import FetchError

MAX_IMAGE_BYTES = 256 * 1024 * 1024
LOCAL_FILES_PREFIX = "/data/local-files/"


@dataclass(frozen=True)
class LabelStudioAccess:
    """Where Label Studio is and the token to read its files with (legacy token or personal access token)."""

    url: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"LabelStudioAccess(url={self.url!r}, token={'***' if self.token else None})"


def shown(url: str) -> str:
    """A URL fit for messages and logs: no credentials, no query values but local-files' path."""
    parts = urlsplit(url)
    if parts.path.startswith(LOCAL_FILES_PREFIX) or not parts.query:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    return parts._replace(netloc=parts.hostname or "", query="...").geturl()


class ImageFetcher:
    """Bytes of task images, with Label Studio's auth and the local-root guard."""

    def __init__(
        self,
        local_root: str | Path | None = None,
        access: LabelStudioAccess | None = None,
        timeout: float = 15.0,
        max_bytes: int = MAX_IMAGE_BYTES,
    ):
        self.local_root = Path(local_root).resolve() if local_root else None
        self.access = access or LabelStudioAccess()
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session = requests.Session()
        self._bearer: dict[str, str] = {}  # personal access token -> short-lived access token
        self._lock = threading.Lock()

    def fetch(self, url: str, access: LabelStudioAccess | None = None) -> bytes:
        """The bytes behind a task URL; ``access`` (from ``/setup``) overrides the default one."""
        if not isinstance(url, str) or not url.strip():
            raise FetchError(400, "the task has no image URL")
        access = access if access and access.url else self.access
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            same_host = access.url and urlsplit(access.url).netloc == parts.netloc
            if same_host and parts.path.startswith(LOCAL_FILES_PREFIX):
                local = self._local_files_path(parts.query)
                if local is not None:
                    return self._read_local(local, url)
            return self._get(url, access if same_host else None)
        if parts.scheme == "file":
            return self._read_local(self._inside_root(unquote(parts.path), url), url)
        if parts.scheme:
            raise FetchError(400, f"unsupported image URL scheme {parts.scheme!r} in {shown(url)}")
        if url.startswith(LOCAL_FILES_PREFIX):
            local = self._local_files_path(parts.query)
            if local is not None:
                return self._read_local(local, url)
        if url.startswith("/data/") or url.startswith("data/"):
            if not access.url:
                raise FetchError(
                    503,
                    f"{shown(url)} is a Label Studio URL but the backend does not know Label Studio's address: "
                    "connect the backend to the project (Label Studio sends it) or set LABEL_STUDIO_URL and "
                    "LABEL_STUDIO_API_KEY",
                )
            return self._get(urljoin(access.url.rstrip("/") + "/", url.lstrip("/")), access)
        return self._read_local(self._inside_root(url, url), url)

    # -- local files ---------------------------------------------------------------------

    def _local_files_path(self, query: str) -> Path | None:
        """The file a local-files URL names, when this process can read it itself."""
        d = parse_qs(query).get("d", [""])[0]
        if not d:
            raise FetchError(400, "local-files URL without ?d=")
        if self.local_root is None:
            return None
        return self._inside_root(d, f"{LOCAL_FILES_PREFIX}?d={d}", relative=True)

    def _inside_root(self, path: str, url: str, relative: bool = False) -> Path:
        if self.local_root is None:
            raise FetchError(
                403,
                f"{shown(url)} is a local path but no local root is allowed: "
                "set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (or --local-root) to the folder that holds the tiles",
            )
        candidate = Path(path)
        if relative or not candidate.is_absolute():
            candidate = self.local_root / path.lstrip("/")
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.local_root):
            raise FetchError(403, f"{shown(url)} escapes the allowed local root")
        return resolved

    def _read_local(self, path: Path, url: str) -> bytes:
        if not path.is_file():
            raise FetchError(404, f"image not found: {shown(url)}")
        if path.stat().st_size > self.max_bytes:
            raise FetchError(413, f"{shown(url)} is larger than {self.max_bytes} bytes")
        return path.read_bytes()

    # -- over HTTP -----------------------------------------------------------------------

    def _get(self, url: str, access: LabelStudioAccess | None) -> bytes:
        response = self._request(url, access)
        if response.status_code == 401 and access and access.token and access.token in self._bearer:
            with self._lock:  # the access token expired: refresh once and retry
                self._bearer.pop(access.token, None)
            response = self._request(url, access)
        try:
            if response.status_code in (401, 403):
                raise FetchError(
                    response.status_code,
                    f"Label Studio refused the image {shown(url)} ({response.status_code}): "
                    "check the backend's Label Studio token (LABEL_STUDIO_API_KEY) or reconnect it to the project",
                )
            if response.status_code == 404:
                raise FetchError(404, f"image not found: {shown(url)} (404)")
            if response.status_code >= 400:
                raise FetchError(502, f"fetching {shown(url)} failed with HTTP {response.status_code}")
            chunks, total = [], 0
            for chunk in response.iter_content(1 << 16):
                total += len(chunk)
                if total > self.max_bytes:
                    raise FetchError(413, f"{shown(url)} is larger than {self.max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            response.close()

    def _request(self, url: str, access: LabelStudioAccess | None) -> requests.Response:
        headers = {"Authorization": self._authorization(access)} if access and access.token else {}
        try:
            return self._session.get(url, headers=headers, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise FetchError(502, f"image URL unreachable: {shown(url)} ({type(exc).__name__})") from None

    def _authorization(self, access: LabelStudioAccess) -> str:
        token = access.token
        if token.count(".") != 2:
            return f"Token {token}"  # legacy API token
        # A personal access token is a JWT refresh token: trade it for an access token.
        with self._lock:
            bearer = self._bearer.get(token)
        if bearer is None:
            try:
                reply = self._session.post(
                    urljoin(access.url.rstrip("/") + "/", "api/token/refresh"), json={"refresh": token}, timeout=self.timeout
                )
            except requests.RequestException as exc:
                raise FetchError(502, f"Label Studio unreachable at {shown(access.url)} ({type(exc).__name__})") from None
            if reply.status_code != 200:
                raise FetchError(401, f"Label Studio refused the backend's token ({reply.status_code})")
            bearer = reply.json().get("access", "")
            with self._lock:
                self._bearer[token] = bearer
        return f"Bearer {bearer}"


def task_file_path(url: str) -> str:
    """The file path a task URL names: a local-files URL's ``?d=`` path, else the URL's path."""
    parts = urlsplit(url)
    return unquote(parse_qs(parts.query).get("d", [parts.path])[0])


def local_files_root(images_dir: str | Path, url: str) -> Path | None:
    """Label Studio's document root, worked out from a tile folder and one local-files URL of it.

    A local-files URL names a file relative to the document root (``?d=tiles/a.png``);
    the folder was imported from an absolute path (``/data/tiles``), so the root is that
    path less the URL's leading folders (``/data``). None when they do not fit together.
    """
    d = parse_qs(urlsplit(url).query).get("d", [""])[0]
    if not d:
        return None
    folder = Path(images_dir).resolve()
    relative = Path(unquote(d))
    for root in (folder, *folder.parents):
        if (root / relative).is_file() and (root / relative).resolve().is_relative_to(folder):
            return root
    return None
