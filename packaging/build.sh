#!/usr/bin/env bash
# Builds the distributable artifacts into dist/ (or $1), with the version taken from
# Cargo.toml so that it never drifts:
#   dist/litestream-<version>-linux-<arch>/litestream.so   loadable as `.load litestream`:
#       SQLite derives the entry point sqlite3_litestream_init from the file name
#   .../include/litestream.h, README.md, and a tarball of the folder.
# build-all.sh wraps this same litestream.so into the pip, npm and gem packages.
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
# Without the debug info (release builds keep it for backtraces: 64 MB instead of 13 MB).
strip --strip-debug -o "$OUT/$NAME/litestream.so" "${CARGO_TARGET_DIR:-target}/release/liblitestream.so"
cp include/litestream.h "$OUT/$NAME/include/"
cp README.md "$OUT/$NAME/"
tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
echo "$OUT/$NAME"
