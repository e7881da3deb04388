"""packaging/build.sh: the artifact is named so that `.load litestream` (no path suffix, no
entry point name) works in the sqlite3 shell, and carries the version from Cargo.toml."""

import re
import shutil
import subprocess

from harness.common import REPO_ROOT, child_env, packaging_env

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "ltx" / "v0.5.17-4096"


def test_dot_load_litestream_finds_the_entry_point(tmp_path):
    out = subprocess.run(["bash", str(REPO_ROOT / "packaging" / "build.sh"),
                          str(tmp_path / "dist")], capture_output=True, text=True, check=True,
                         env=packaging_env())
    folder = out.stdout.strip().splitlines()[-1]
    version = re.search(r'^version = "(.*)"', (REPO_ROOT / "Cargo.toml").read_text(),
                        re.M).group(1)
    assert folder.endswith(f"litestream-{version}-linux-" + folder.rsplit("-", 1)[-1])
    assert (tmp_path / "dist" / (folder.rsplit("/", 1)[-1] + ".tar.gz")).exists()
    replica = tmp_path / "replica"
    shutil.copytree(FIXTURE / "replica", replica)
    uri = f"file:app.db?vfs=litestream&replica_url={replica.as_uri()}"
    # With the artifact folder on the library search path, `.load litestream` finds
    # litestream.so and, from its name, the entry point sqlite3_litestream_init.
    env = child_env({"LD_LIBRARY_PATH": folder})
    res = subprocess.run(["sqlite3", "-bail", "-cmd", ".load litestream", "-cmd", f".open '{uri}'",
                          ":memory:", "SELECT count(*), litestream_txid() FROM t;"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("|0000000000000004"), res.stdout
