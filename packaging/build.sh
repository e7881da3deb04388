#!/usr/bin/env bash
# Builds the distributable artifacts into dist/ (or $1), with the version taken from
# Cargo.toml so that it never drifts:
#   dist/litestream-<version>-linux-<arch>/litestream.so   loadable as `.load litestream`:
#       SQLite derives the entry point sqlite3_litestream_init from the file name
#   .../include/litestream.h, README.md, and a tarball of the folder.
# The pip, npm and gem packages (issue 5) will wrap this same litestream.so.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/dist}"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
ARCH="$(uname -m)"
cargo build --release
NAME="litestream-$VERSION-linux-$ARCH"
rm -rf "${OUT:?}/$NAME"
mkdir -p "$OUT/$NAME/include"
cp "${CARGO_TARGET_DIR:-target}/release/liblitestream.so" "$OUT/$NAME/litestream.so"
cp include/litestream.h "$OUT/$NAME/include/"
cp README.md "$OUT/$NAME/"
tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
echo "$OUT/$NAME"
