"""Start the embedded DynamoDB-compatible server (dynalite, installed under ``localdb/``).

Used by the local stack (``manage.py localdb``) and the integration tests. dynalite keeps
its data in LevelDB under ``path`` and survives a kill -9; it has no transactions, TTL
or streams, which the stores never need.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DYNALITE = REPO_ROOT / "localdb" / "node_modules" / "dynalite" / "cli.js"
#: Keeps dynalite serving when a client aborts a request mid-body (see the file).
SURVIVE_ABORTS = REPO_ROOT / "localdb" / "survive-aborts.cjs"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dynalite_command(port: int, path: Path | None = None) -> list[str]:
    """The command line of dynalite on 127.0.0.1:``port``: in memory when ``path`` is
    None, else kept under ``path`` (created)."""
    node = shutil.which("node")
    if node is None or not DYNALITE.exists():
        raise RuntimeError("dynalite is not installed: run scripts/bootstrap")
    args = [node, "--require", str(SURVIVE_ABORTS), str(DYNALITE)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    args += ["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        args += ["--path", str(path)]
    return args


def start_dynalite(port: int, path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start dynalite on 127.0.0.1:``port``; in memory when ``path`` is None."""
    return subprocess.Popen(  # noqa: S603
        dynalite_command(port, path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_until_up(endpoint: str, timeout_s: float = 15.0) -> None:
    """Block until ``endpoint`` answers HTTP, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=1)  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # dynalite answers GET / with 400: it is up
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no DynamoDB endpoint at {endpoint} after {timeout_s}s")
