"""Real servers for tests: free ports, background processes that are always stopped, readiness.

Used by the serving, UI and team-server tests; every process is started in its own session
and its whole process group is ended when the test leaves the `running` block.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until `url` answers 200; fail with the process's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s:\n{log_tail(log)}")


@contextlib.contextmanager
def running(cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
            cwd: str | Path | None = None, ready_url: str | None = None,
            timeout: float = 90) -> Iterator[subprocess.Popen]:
    """Run `cmd` in the background (output to `log`) until the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd,
                                start_new_session=True)
    try:
        if ready_url:
            wait_for_http(ready_url, proc, log, timeout)
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """End the process group this test started (its leader is `proc`)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    else:  # the leader is gone; workers it left in its group still go
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def mlflow_cli() -> list[str]:
    return [sys.executable, "-m", "mlflow"]


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_uri: str | None = None,
                  timeout: float = 120) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a store and artifacts under `folder`; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = backend_uri or f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [*mlflow_cli(), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend,
           "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    # no background job runners (MLflow's GenAI jobs): a faster start, two cores kept free
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with running(cmd, folder / "mlflow-server.log", env=env, cwd=folder,
                 ready_url=f"{url}/health", timeout=timeout):
        yield url


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """Root may not run the server: run it as the `postgres` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def postgres_unavailable() -> str:
    """Why a PostgreSQL test cannot run here ("" when it can)."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root without `runuser` to start the server as postgres"
    return ""


@contextlib.contextmanager
def postgres_server(database: str = "mlflow") -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth); yields a SQLAlchemy URL
    (psycopg2 driver) of a fresh `database`."""
    import psycopg2

    bin_dir = postgres_bin()
    assert bin_dir is not None
    # the server user must reach its data folder: pytest's tmp_path is private to root
    data = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()
    try:
        subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data / "db"), "-U",
                                     "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o",
                                     options, "-l", str(data / "server.log"), "-w", "-t", "60",
                                     "start"]),
                       check=True, capture_output=True, timeout=90)
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                    dbname="postgres", connect_timeout=10)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {database}")
            conn.close()
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data / "db"),
                                         "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(data, ignore_errors=True)


# --------------------------------------------------------------------------- Chromium


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def headless_chromium(url: str, profile: Path, *, screenshot: Path | None = None,
                      budget_ms: int = 20000, size: str = "1600,900",
                      timeout: float = 120) -> str:
    """The DOM after the page's scripts ran (virtual time), optionally a screenshot too."""
    browser = chromium()
    assert browser is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
             f"--window-size={size}", f"--virtual-time-budget={budget_ms}",
             "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True,
                         text=True, timeout=timeout)
    if screenshot is not None:
        subprocess.run([browser, *flags, f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=timeout, check=True)
    return dom.stdout
