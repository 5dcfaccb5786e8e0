"""Getting a task's image bytes, wherever Label Studio says the image is.

Task URLs come in four shapes: Label Studio local files (``/data/local-files/?d=...``),
uploads (``/data/upload/...``), absolute http(s) URLs, and plain local paths. Label
Studio URLs are fetched from its host with its token, and only from its media routes
(the path is normalised first, so ``/data/upload/../../api/...`` cannot carry the token
elsewhere); a local-files URL is read straight from disk when this process sees the
same document root (the demo and the compose file share it), which saves a round trip
per request. Local paths never leave the allowed root.

Every download has a total deadline, not only a timeout per read: a peer that trickles
one byte every few seconds would otherwise hold a request thread for minutes. Downloads
run on a small shared pool so that a batch fetches its images side by side and the
waiting request thread can give up at the deadline. Errors carry the HTTP status the
backend should answer with, and never the token.
"""
from __future__ import annotations

import posixpath
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

import requests

from al_loop.errors import FetchError

MAX_IMAGE_BYTES = 256 * 1024 * 1024
DOWNLOAD_DEADLINE = 30.0  # seconds for one whole download, connection to last byte
READ_TIMEOUT = 10.0  # seconds of silence that end a download before its deadline
PARALLEL_DOWNLOADS = 4
CHUNK = 1 << 16
LOCAL_FILES_PREFIX = "/data/local-files/"
# The routes Label Studio serves task media from: uploads, local files, and the proxy
# that resolves cloud-storage URIs. Anything else on its host is its API.
MEDIA_PREFIXES = ("/data/upload/", LOCAL_FILES_PREFIX)
RESOLVE_ROUTE = re.compile(r"^/(tasks|projects)/\d+/resolve/?$")


@dataclass(frozen=True)
class LabelStudioAccess:
    """Where Label Studio is and the token to read its files with (legacy token or personal access token)."""

    url: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"LabelStudioAccess(url={self.url!r}, token={'***' if self.token else None})"


def shown(url: str) -> str:
    """A URL fit for messages and logs: no credentials, no query values but local-files' path,
    and never an exception (the URL comes from the client and may be anything)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is no number, a broken IPv6 literal
        return repr(url[:200])
    query = parts.query if parts.path.startswith(LOCAL_FILES_PREFIX) or not parts.query else "..."
    text = parts._replace(netloc=netloc, query=query, fragment="").geturl()
    return text if len(text) <= 200 else text[:200] + "..."


def media_path(path: str) -> str | None:
    """A Label Studio URL path with dot segments resolved, when it is one of the media routes."""
    decoded = unquote(path)
    if "\0" in decoded or "\\" in decoded:
        return None
    normal = posixpath.normpath("/" + decoded.lstrip("/"))
    if path.endswith("/") and not normal.endswith("/"):
        normal += "/"
    if normal.startswith(MEDIA_PREFIXES) or RESOLVE_ROUTE.match(normal):
        return normal
    return None


class ImageFetcher:
    """Bytes of task images, with Label Studio's auth, the media-route and local-root guards,
    and a deadline on every download."""

    def __init__(
        self,
        local_root: str | Path | None = None,
        access: LabelStudioAccess | None = None,
        deadline: float = DOWNLOAD_DEADLINE,
        max_bytes: int = MAX_IMAGE_BYTES,
        parallel: int = PARALLEL_DOWNLOADS,
    ):
        self.local_root = Path(local_root).resolve() if local_root else None
        self.access = access or LabelStudioAccess()
        self.deadline = deadline
        self.max_bytes = max_bytes
        self._session = requests.Session()
        self._bearer: dict[str, str] = {}  # personal access token -> short-lived access token
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="image-download")

    def fetch(self, url: str, access: LabelStudioAccess | None = None, until: float | None = None) -> bytes:
        """The bytes behind a task URL; ``access`` (from ``/setup``) overrides the default one;
        ``until`` (a ``time.monotonic()`` instant) can only shorten the download deadline."""
        outcome = self.fetch_all([url], access, until)[0]
        if isinstance(outcome, FetchError):
            raise outcome
        return outcome

    def fetch_all(
        self, urls: list[str], access: LabelStudioAccess | None = None, until: float | None = None
    ) -> list[bytes | FetchError]:
        """Each URL's bytes or its FetchError, downloads side by side; nothing waits past the deadline."""
        until = min(until or float("inf"), time.monotonic() + self.deadline)
        access = access if access and access.url else self.access
        pending: list[bytes | FetchError | tuple[Future, str, list]] = []
        for url in urls:
            try:
                pending.append(self._start(url, access, until))
            except FetchError as exc:
                pending.append(exc)
        return [self._finish(item, until) if isinstance(item, tuple) else item for item in pending]

    # -- where a URL points ----------------------------------------------------------------

    def _start(self, url: str, access: LabelStudioAccess, until: float) -> bytes | tuple[Future, str, list]:
        """Local bytes at once, or a download under way (future, url, its response holder)."""
        if not isinstance(url, str) or not url.strip():
            raise FetchError(400, "the task has no image URL")
        if "\0" in url:
            raise FetchError(400, f"the image URL {shown(url)} holds a NUL character")
        local, remote, remote_access = self._locate(url, access)
        if local is not None:
            return self._read_local(local, url)
        holder: list = []  # the response, so the waiting thread can cut it off at the deadline
        return self._pool.submit(self._download, remote, remote_access, until, holder), remote, holder

    def _locate(self, url: str, access: LabelStudioAccess) -> tuple[Path | None, str, LabelStudioAccess | None]:
        """(local file, or None and the URL to download with the access to send, if any)."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            return self._locate_http(url, parts, access)
        if parts.scheme == "file":
            return self._inside_root(unquote(parts.path), url), "", None
        if parts.scheme:
            raise FetchError(400, f"unsupported image URL scheme {parts.scheme!r} in {shown(url)}")
        if url.startswith("/data/") or url.startswith("data/"):
            return self._locate_studio_relative(url, parts, access)
        return self._inside_root(url, url), "", None

    def _locate_http(self, url: str, parts, access: LabelStudioAccess):
        same_host = bool(access.url) and urlsplit(access.url).netloc == parts.netloc
        normal = media_path(parts.path) if same_host else None
        if normal is None:
            # Not a media route of Label Studio: fetched as any web image, without the token.
            return None, url, None
        if normal.startswith(LOCAL_FILES_PREFIX):
            local = self._local_files_path(parts.query)
            if local is not None:
                return local, "", None
        return None, parts._replace(path=quote(normal)).geturl(), access

    def _locate_studio_relative(self, url: str, parts, access: LabelStudioAccess):
        normal = media_path(parts.path)
        if normal is None:
            raise FetchError(
                400, f"{shown(url)} is not a Label Studio media URL (expected /data/upload/... or /data/local-files/?d=...)"
            )
        if normal.startswith(LOCAL_FILES_PREFIX):
            local = self._local_files_path(parts.query)
            if local is not None:
                return local, "", None
        if not access.url:
            raise FetchError(
                503,
                f"{shown(url)} is a Label Studio URL but the backend does not know Label Studio's address: "
                "connect the backend to the project (Label Studio sends it) or set LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY",
            )
        relative = quote(normal.lstrip("/")) + (f"?{parts.query}" if parts.query else "")
        return None, urljoin(access.url.rstrip("/") + "/", relative), access

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
                "set the local root (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) to the folder that holds the tiles",
            )
        try:
            candidate = Path(path)
            if relative or not candidate.is_absolute():
                candidate = self.local_root / path.lstrip("/")
            resolved = candidate.resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop, name too long
            raise FetchError(400, f"the local path {shown(url)} cannot be used: {_reason(exc)}") from None
        if not resolved.is_relative_to(self.local_root):
            raise FetchError(403, f"{shown(url)} escapes the allowed local root")
        return resolved

    def _read_local(self, path: Path, url: str) -> bytes:
        try:
            if not path.is_file():
                raise FetchError(404, f"image not found: {shown(url)}")
            if path.stat().st_size > self.max_bytes:
                raise FetchError(413, f"{shown(url)} is larger than {self.max_bytes} bytes")
            return path.read_bytes()
        except OSError as exc:
            raise FetchError(400, f"the local path {shown(url)} cannot be read: {_reason(exc)}") from None

    # -- over HTTP -----------------------------------------------------------------------

    def _finish(self, item: tuple[Future, str, list], until: float) -> bytes | FetchError:
        future, url, holder = item
        try:
            return future.result(timeout=max(0.0, until - time.monotonic()))
        except FetchError as exc:
            return exc
        except FutureTimeout:
            future.cancel()
            for response in holder:  # interrupt a read blocked on a silent peer
                response.raw.shutdown()
            return FetchError(504, f"downloading {shown(url)} did not finish within {self.deadline:g} s; "
                                   "the image host is too slow (AL_LOOP_DOWNLOAD_DEADLINE sets the limit)")

    def _download(self, url: str, access: LabelStudioAccess | None, until: float, holder: list) -> bytes:
        response = self._request(url, access, until)
        if response.status_code == 401 and access and access.token and access.token in self._bearer:
            with self._lock:  # the access token expired: refresh once and retry
                self._bearer.pop(access.token, None)
            response.close()
            response = self._request(url, access, until)
        holder.append(response)
        try:
            _check_status(response, url, access)
            return self._body(response, url, until)
        finally:
            response.close()

    def _body(self, response: requests.Response, url: str, until: float) -> bytes:
        chunks, total = [], 0
        while True:
            if time.monotonic() > until:
                raise FetchError(504, f"downloading {shown(url)} did not finish within {self.deadline:g} s")
            try:
                # read1 returns what one read brings, so the deadline is checked however slowly bytes come.
                chunk = response.raw.read1(CHUNK, decode_content=True)
            except Exception as exc:  # urllib3 and the socket raise many kinds on a broken stream
                raise FetchError(502, f"downloading {shown(url)} broke off ({type(exc).__name__})") from None
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self.max_bytes:
                raise FetchError(413, f"{shown(url)} is larger than {self.max_bytes} bytes")
            chunks.append(chunk)

    def _request(self, url: str, access: LabelStudioAccess | None, until: float) -> requests.Response:
        headers = {"Authorization": self._authorization(access, until)} if access and access.token else {}
        timeout = max(0.1, min(READ_TIMEOUT, until - time.monotonic()))
        try:
            # requests drops the Authorization header on a redirect to another host (a
            # cloud-storage proxy answers with a pre-signed URL), so following is safe.
            return self._session.get(url, headers=headers, timeout=timeout, stream=True)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError) as exc:
            raise FetchError(400, f"the image URL {shown(url)} is malformed ({type(exc).__name__})") from None
        except requests.Timeout as exc:
            raise FetchError(504, f"the image host did not answer in time: {shown(url)} ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise FetchError(502, f"image URL unreachable: {shown(url)} ({type(exc).__name__})") from None

    def _authorization(self, access: LabelStudioAccess, until: float) -> str:
        token = access.token
        if token.count(".") != 2:
            return f"Token {token}"  # legacy API token
        # A personal access token is a JWT refresh token: trade it for an access token.
        with self._lock:
            bearer = self._bearer.get(token)
        if bearer is None:
            bearer = self._refresh(access, until)
            with self._lock:
                self._bearer[token] = bearer
        return f"Bearer {bearer}"

    def _refresh(self, access: LabelStudioAccess, until: float) -> str:
        where = shown(access.url)
        try:
            reply = self._session.post(
                urljoin(access.url.rstrip("/") + "/", "api/token/refresh"), json={"refresh": access.token},
                timeout=max(0.1, min(READ_TIMEOUT, until - time.monotonic())),
            )
        except requests.RequestException as exc:
            raise FetchError(502, f"Label Studio unreachable at {where} ({type(exc).__name__})") from None
        if reply.status_code != 200:
            raise FetchError(401, f"Label Studio at {where} refused the backend's token ({reply.status_code}): "
                                  "check LABEL_STUDIO_API_KEY or reconnect the backend to the project")
        try:
            bearer = reply.json()["access"]
        except (ValueError, KeyError, TypeError):
            bearer = None
        if not isinstance(bearer, str) or not bearer:
            raise FetchError(502, f"Label Studio at {where} answered the token refresh without an access token "
                                  "(is that address really Label Studio?)")
        return bearer


def _check_status(response: requests.Response, url: str, access: LabelStudioAccess | None) -> None:
    status = response.status_code
    if status in (401, 403) and access is not None:
        raise FetchError(status, f"Label Studio refused the image {shown(url)} ({status}): check the backend's "
                                 "Label Studio token (LABEL_STUDIO_API_KEY) or reconnect it to the project")
    if status in (401, 403):
        # Not Label Studio: the image host wants credentials the backend does not have (and must not guess).
        raise FetchError(502, f"the image host refused {shown(url)} ({status}): the URL needs credentials; "
                              "use a public or pre-signed URL, or import the image into Label Studio")
    if status == 404:
        raise FetchError(404, f"image not found: {shown(url)} (404)")
    if status >= 400:
        raise FetchError(502, f"fetching {shown(url)} failed with HTTP {status}")


def _reason(exc: Exception) -> str:
    """Why a local path failed, without the path (which the message shows already)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()  # "file name too long", "too many levels of symbolic links"
    if isinstance(exc, RuntimeError):  # Python 3.11's Path.resolve on a symlink loop
        return "symbolic link loop"
    return str(exc)  # ValueError: "embedded null byte"


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
