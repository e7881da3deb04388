#!/usr/bin/env bash
# Builds the distributable artifacts into dist/ (or $1), with the version taken from
# Cargo.toml so that it never drifts:
#   dist/litestream-<version>-linux-<arch>/litestream.so   loadable as `.load litestream`:
#       SQLite derives the entry point sqlite3_litestream_init from the file name
#   .../include/litestream.h, README.md, and a tarball of the folder.
# build-all.sh wraps this same litestream.so into the pip, npm and gem packages.
#
# The library is linked against glibc 2.17 (manylinux2014: Debian 8+, Ubuntu 14.04+, RHEL 7+,
# Amazon Linux 2), with zig as the linker through cargo-zigbuild (`pip install cargo-zigbuild
# ziglang`; LITESTREAM_GLIBC picks another version). Its SONAME is litestream.so, its file name.
# It is built in target/dist, apart from the development build in target/release.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/dist}"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
ARCH="$(uname -m)"
GLIBC="${LITESTREAM_GLIBC:-2.17}"
TRIPLE="$ARCH-unknown-linux-gnu"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/dist"
command -v cargo-zigbuild >/dev/null || {
  echo "build.sh: cargo-zigbuild not found (pip install cargo-zigbuild ziglang): it links the library for glibc $GLIBC" >&2
  exit 1
}
# Without debug info (the development build keeps it for backtraces; the package would strip
# it anyway): a faster build and link.
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_TARGET_DIR="$TARGET_DIR" \
  cargo-zigbuild rustc --release --lib --crate-type cdylib \
  --target "$TRIPLE.$GLIBC" -- -C link-arg=-Wl,-soname,litestream.so >&2
NAME="litestream-$VERSION-linux-$ARCH"
rm -rf "${OUT:?}/$NAME"
mkdir -p "$OUT/$NAME/include"
# Without any debug info left (the standard library's).
strip --strip-debug -o "$OUT/$NAME/litestream.so" "$TARGET_DIR/$TRIPLE/release/liblitestream.so"
cp include/litestream.h "$OUT/$NAME/include/"
cp README.md "$OUT/$NAME/"
tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
echo "$OUT/$NAME"
