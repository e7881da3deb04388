"""s3rver (the npm registry's, pinned) on 127.0.0.1: an S3-compatible server that keeps each
object as a file and answers a ranged GET by reading only the range, as S3 does in cost.
moto, the tests' server, reads the whole object for any range; the restore benchmark runs on
either. Installed on first use into tests/.work/s3rver."""
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import REPO_ROOT, child_env  # noqa: E402
from harness.s3 import free_port  # noqa: E402

PIN = "s3rver@3.7.1"
HOME = REPO_ROOT / "tests" / ".work" / "s3rver"
# s3rver checks signatures against its one key pair.
ENV = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}


def binary() -> Path:
    exe = HOME / "node_modules" / ".bin" / "s3rver"
    pin = HOME / ".pin"
    if not exe.exists() or not pin.exists() or pin.read_text() != PIN:
        HOME.mkdir(parents=True, exist_ok=True)
        (HOME / "package.json").write_text('{"private": true}')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", PIN],
                       cwd=HOME, check=True)
        (HOME / ".pin").write_text(PIN)
    return exe


class S3rver:
    def __init__(self, workdir: Path, bucket: str):
        self.data = Path(workdir) / "s3rver"
        self.data.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.port = free_port()
        self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "S3rver":
        log = open(self.data.parent / "s3rver.log", "ab")
        self.proc = subprocess.Popen(
            [str(binary()), "-d", str(self.data), "-a", "127.0.0.1", "-p", str(self.port),
             "--silent", "--configure-bucket", self.bucket],
            stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("s3rver did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def replica_url(self, prefix: str = "db") -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&force-path-style=true"
