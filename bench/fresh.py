"""Reads right after a first sync, over HTTP, as a user meets them.

For each mode, in a database of its own (on DATABASE_URL's server, dropped at the end):
a 60-day Demo history with minute-level heart rate (86,400 readings) is synced by the engine,
then gunicorn (as the README runs it) serves `/v1/human/heart_rate/readings?limit=50` at once,
with nothing done by hand in between: one client in a row (p50), then 16 clients at once for a
bounded time (requests/s, p99). Modes:

- `engine`: the sync engine as it is (it refreshes the planner's statistics after large writes);
- `never-analyzed`: the same sync with that refresh turned off in this benchmark's process, as the
  engine was before: reads are planned for an empty table until autovacuum comes by.

Last line: `fresh_p50_ms=<x> fresh_rps16=<y> fresh_p99_ms=<z> stale_p50_ms=<a> stale_rps16=<b>
stale_p99_ms=<c>`.

Usage: bench/fresh [--days N] [--seconds N]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import admin, bench_database_url

ROOT = Path(__file__).resolve().parent.parent
PAGE = "/v1/human/heart_rate/readings"


def sync_child(days: int, mode: str) -> None:
    """In a child process: migrate, connect Demo, sync its history, print an access token."""
    os.environ.update(DEMO_HISTORY_DAYS=str(days), DEMO_HEART_RATE_INTERVAL_MINUTES="1")
    from ingest import make_connection, setup_django

    setup_django(os.environ["DATABASE_URL"])
    import sources.sync
    from connect.models import Token, TokenKind
    from sources.sync import connection_sync

    if mode == "never-analyzed":
        sources.sync.refresh_statistics = lambda written, **kwargs: False  # type: ignore[assignment]
    connection = make_connection("fresh-user")
    began = time.perf_counter()
    run = connection_sync(connection_id=connection.pk)
    assert run is not None, "the sync did not run"
    readings = run.counts.get("heart_rate", {}).get("created", 0)
    print(f"  synced {readings:,} heart-rate readings in {time.perf_counter() - began:.1f} s ({run.outcome})")
    _, token = Token.mint(kind=TokenKind.ACCESS, human=connection.human, ttl=86400)
    print(f"TOKEN {token}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(base: str, token: str, seconds: float) -> tuple[float, float, float]:
    headers = {"Authorization": f"Bearer {token}"}
    session = requests.Session()
    single = []
    for _ in range(100):
        began = time.perf_counter()
        assert session.get(base + PAGE, params={"limit": 50}, headers=headers, timeout=30).status_code == 200
        single.append((time.perf_counter() - began) * 1000)
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        own = requests.Session()
        while time.monotonic() < stop:
            began = time.perf_counter()
            ok = own.get(base + PAGE, params={"limit": 50}, headers=headers, timeout=30).status_code == 200
            latencies.append((time.perf_counter() - began) * 1000)
            errors[0] += not ok

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert errors[0] == 0, f"{errors[0]} errors"
    p99 = statistics.quantiles(latencies, n=100)[98]
    return statistics.median(single), len(latencies) / elapsed, p99


def run_mode(base_url: str, mode: str, days: int, seconds: float) -> tuple[float, float, float]:
    name = f"humanapi_fresh_{mode.replace('-', '_')}"
    url = bench_database_url(base_url, name)
    admin(base_url, f"DROP DATABASE IF EXISTS {name}")
    admin(base_url, f"CREATE DATABASE {name}")
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench-fresh-secret", "DEBUG": "0"}
    env.update(CELERY_BROKER_URL="memory://", ALLOWED_HOSTS="127.0.0.1")
    # 16 clients of one user read far above the Data API's per-user limit: the limits stay on
    # (their counting is part of what a request costs) but high enough not to answer 429.
    env.update(RATE_LIMIT_DATA_PER_HUMAN="1000000000", RATE_LIMIT_DATA_PER_APP="1000000000")
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--sync", mode, "--days", str(days)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"{mode}:")
        print("\n".join(line for line in child.stdout.splitlines() if not line.startswith("TOKEN")))
        token = next(line.split(" ", 1)[1] for line in child.stdout.splitlines() if line.startswith("TOKEN"))
        port = free_port()
        server = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "humanapi_project.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "4"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    requests.get(base + "/v1/human/profile", timeout=5)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            p50, rps, p99 = measure(base, token, seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"  one client: p50 {p50:.2f} ms; 16 clients: {rps:.0f} requests/s, p99 {p99:.1f} ms")
        return p50, rps, p99
    finally:
        admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sync", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sync:
        sync_child(args.days, args.sync)
        return
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/humanapi")
    results: dict[str, Any] = {}
    for mode in ("engine", "never-analyzed"):
        results[mode] = run_mode(base_url, mode, args.days, args.seconds)
    fresh, stale = results["engine"], results["never-analyzed"]
    print(
        f"fresh_p50_ms={fresh[0]:.2f} fresh_rps16={fresh[1]:.0f} fresh_p99_ms={fresh[2]:.1f} "
        f"stale_p50_ms={stale[0]:.2f} stale_rps16={stale[1]:.0f} stale_p99_ms={stale[2]:.1f}"
    )


if __name__ == "__main__":
    main()
