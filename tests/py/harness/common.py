"""Shared by every harness module: repository paths, HarnessError, the environment of child
processes, the registry that kills long-running children at exit, wait_until and tail."""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[3]
WORK_DIR = REPO_ROOT / "tests" / ".work"


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "litestream-test",
    "AWS_SECRET_ACCESS_KEY": "litestream-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class HarnessError(Exception):
    pass


# Every long-running child (moto, litestream) is registered here and killed at interpreter
# exit, so that an interrupted run (Ctrl-C, run.sh's time limit) leaves nothing behind.
_CHILDREN: list = []


def _spawn(args, **kwargs) -> subprocess.Popen:
    p = subprocess.Popen(args, **kwargs)
    _CHILDREN.append(p)
    return p


@atexit.register
def _kill_children():
    for p in _CHILDREN:
        if p.poll() is None:
            p.kill()


# --------------------------------------------------------------------------------------------
# Locations


def venv_dir() -> Path:
    return Path(os.environ.get("LITESTREAM_TEST_VENV") or (WORK_DIR / "venv"))


def _must_exist(path: Path, what: str) -> Path:
    if not path.exists():
        raise HarnessError(f"{what} not found at {path}; run `bash tests/setup.sh`")
    return path


# --------------------------------------------------------------------------------------------
# Environment of child processes


# LITESTREAM_* variables that belong to the harness (or only steer logging). Any other
# LITESTREAM_<NAME> is a configuration twin of a URI parameter for both extensions (e.g.
# LITESTREAM_REPLICA_URL, LITESTREAM_POLL_INTERVAL) and would silently change what a test
# opens, so the harness removes them unless a test passes them explicitly.
HARNESS_ENV = {"LITESTREAM_EXT", "LITESTREAM_TEST_VENV", "LITESTREAM_BIN", "LITESTREAM_GO_VFS",
               "LITESTREAM_TEST_PYTHON", "LITESTREAM_PYTEST_TIMEOUT", "LITESTREAM_SKIP_BUILD",
               "LITESTREAM_VENV_PYTHON", "LITESTREAM_LOG_LEVEL", "LITESTREAM_LOG_FILE"}


def stray_litestream_env(env=None) -> list:
    env = os.environ if env is None else env
    return [k for k in env if k.startswith("LITESTREAM_") and k not in HARNESS_ENV]


def child_env(extra: Optional[dict] = None) -> dict:
    """Environment for child processes (litestream, moto, sqlite children).

    AWS credentials are set to dummies (moto accepts anything) and AWS_CA_BUNDLE is removed:
    the real Litestream refuses a custom CA bundle on a plain-http endpoint.
    """
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    for k in stray_litestream_env(env):
        env.pop(k)
    env.update(AWS_TEST_ENV)
    no_proxy = "127.0.0.1,localhost"
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if extra:
        env.update({k: str(v) for k, v in extra.items() if v is not None})
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
    return env


def packaging_env() -> dict:
    """The environment of packaging/build.sh: cargo-zigbuild and zig, which link the packages'
    library for glibc 2.17, are in the test venv (tests/setup.sh)."""
    venv_bin = Path(os.environ["LITESTREAM_TEST_VENV"]) / "bin"
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}


# --------------------------------------------------------------------------------------------
# Small utilities


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Calls pred until it returns a truthy value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


def tail(path: Path, lines: int = 200) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    parts = text.splitlines()
    if len(parts) > lines:
        parts = [f"... ({len(parts) - lines} earlier lines omitted)"] + parts[-lines:]
    return "\n".join(parts)
