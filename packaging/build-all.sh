#!/usr/bin/env bash
# Builds every artifact into dist/ (or $1), all with the version from Cargo.toml:
#   litestream-<version>-linux-<arch>/ and .tar.gz     the library, header, README (build.sh)
#   sqlite_litestream-<version>-py3-none-<plat>.whl     pip   (packaging/python)
#   sqlite-litestream-<version>.tgz                     npm   (packaging/npm), and
#   sqlite-litestream-<os>-<cpu>-<version>.tgz          its library for this platform
#   sqlite-litestream-<version>-<arch>-linux.gem        gem   (packaging/ruby)
# Each package carries the same litestream.so. Needs python3 and objdump; npm and gem only for
# their packages (missing ones fail the build). Prints the paths of the artifacts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)"
cd "$ROOT"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"

LIBDIR="$(bash packaging/build.sh "$OUT" | tail -n1)"
SO="$LIBDIR/litestream.so"
echo "$LIBDIR"

STAGE="$OUT/.stage"
rm -rf "$STAGE"
mkdir -p "$STAGE"

# --- pip -----------------------------------------------------------------------------------
python3 packaging/python/build_wheel.py --so "$SO" --version "$VERSION" --out "$OUT"

# --- npm: as the Go extension's and sqlite-vec's, one package per platform carrying its
# library (os, cpu and libc let npm install only the one that fits), each an optional
# dependency of sqlite-litestream, which holds the JavaScript. Only this machine's platform is
# built here; a release lists every platform's package. -----------------------------------
node_os="$(node -p process.platform)"
node_cpu="$(node -p process.arch)"
plat_pkg="sqlite-litestream-$node_os-$node_cpu"
mkdir -p "$STAGE/$plat_pkg"
cp "$SO" "$STAGE/$plat_pkg/litestream.so"
cat >"$STAGE/$plat_pkg/package.json" <<JSON
{
  "name": "$plat_pkg",
  "version": "$VERSION",
  "description": "The litestream SQLite extension's library for $node_os-$node_cpu (glibc); install sqlite-litestream",
  "license": "Apache-2.0",
  "os": ["$node_os"],
  "cpu": ["$node_cpu"],
  "libc": ["glibc"],
  "files": ["litestream.so"]
}
JSON
(cd "$STAGE/$plat_pkg" && npm pack --silent --pack-destination "$OUT" >/dev/null)
echo "$OUT/$plat_pkg-$VERSION.tgz"
cp -r packaging/npm "$STAGE/npm"
(cd "$STAGE/npm" && npm pkg set "version=$VERSION" "optionalDependencies.$plat_pkg=$VERSION" &&
  npm pack --silent --pack-destination "$OUT" >/dev/null)
echo "$OUT/sqlite-litestream-$VERSION.tgz"

# --- gem -------------------------------------------------------------------------------------
cp -r packaging/ruby "$STAGE/ruby"
echo "$VERSION" >"$STAGE/ruby/VERSION"
mkdir -p "$STAGE/ruby/lib/sqlite_litestream"
cp "$SO" "$STAGE/ruby/lib/sqlite_litestream/litestream.so"
gem_file="$(cd "$STAGE/ruby" && gem build sqlite-litestream.gemspec >&2 &&
  ls sqlite-litestream-"$VERSION"*.gem)"
mv "$STAGE/ruby/$gem_file" "$OUT/"
echo "$OUT/$gem_file"

rm -rf "$STAGE"
