"""A live stack for end-to-end tests: the web app under gunicorn and a Celery worker over Redis,
both separate processes on the test database. Tests using it need `transactional_db` (their
writes must be committed for the processes to see them)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("the live stack needs PostgreSQL (set DATABASE_URL)")
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@dataclass
class LiveStack:
    base_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        """Run a management command against the live database; returns its stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.exists())


def stack_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "test-secret-key-for-the-live-stack"),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }
    return env


def start_stack(
    tmp: Path, extra_env: dict[str, str] | None = None, worker: bool = True, port: int | None = None
) -> LiveStack:
    """`port`: where the web server listens (a test that must name it beforehand, e.g. in
    PUBLIC_BASE_URL, picks it with `free_port`)."""
    env = stack_env(extra_env)
    port = port or free_port()
    stack = LiveStack(base_url=f"http://127.0.0.1:{port}", env=env)
    web_log, worker_log = tmp / "web.log", tmp / "worker.log"
    stack.logs = [web_log, worker_log]
    bin_dir = Path(sys.executable).parent
    stack.processes.append(
        subprocess.Popen(
            [
                str(bin_dir / "gunicorn"),
                "humanapi_project.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--access-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=web_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    if worker:
        stack.processes.append(_worker_process(stack, worker_log))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(stack.url("/connect/"), timeout=1, allow_redirects=False)  # SECURE_SSL_REDIRECT may be on
            break
        except (requests.ConnectionError, requests.Timeout):  # bound but still booting
            time.sleep(0.2)
    else:
        stop_stack(stack)
        raise RuntimeError("the web server did not start:\n" + stack.log_tail())
    if worker:
        _wait_for_worker(stack)
    return stack


def _worker_process(stack: LiveStack, log: Path) -> subprocess.Popen[bytes]:
    queue = stack.env["CELERY_TASK_DEFAULT_QUEUE"]
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "humanapi_project",
            "worker",
            "-Q",
            f"{queue}-interactive,{queue}-notify,{queue}",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=stack.env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def start_worker(stack: LiveStack, log: Path) -> subprocess.Popen[bytes]:
    """One more Celery worker of the stack (a restarted one, or a second), ready when returned."""
    process = _worker_process(stack, log)
    stack.processes.append(process)
    stack.logs.append(log)
    _wait_for_worker(stack, process, log)
    return process


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its children at once, as a lost machine would stop them."""
    pids = [process.pid]
    for pid in pids:  # grows while walked: children, grandchildren
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids.extend(int(child) for child in children)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)


def _wait_for_worker(stack: LiveStack, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    process = process or stack.processes[1]
    log = log or stack.logs[1]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if "ready." in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.3)
    stop_stack(stack)
    raise RuntimeError("the Celery worker did not start:\n" + stack.log_tail())


def stop_stack(stack: LiveStack) -> None:
    for process in stack.processes:
        if process.poll() is None:
            process.terminate()
    for process in stack.processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.3, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def live_stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """gunicorn + a Celery worker over Redis, on the test database, for the whole session."""
    stack = start_stack(tmp_path_factory.mktemp("live"))
    try:
        yield stack
    finally:
        stop_stack(stack)
