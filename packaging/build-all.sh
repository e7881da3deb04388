#!/usr/bin/env bash
# Builds every artifact into dist/ (or $1), all with the version from Cargo.toml:
#   litestream-<version>-linux-<arch>/ and .tar.gz     the library, header, README (build.sh)
#   sqlite_litestream-<version>-py3-none-<plat>.whl     pip   (packaging/python)
#   sqlite-litestream-<version>.tgz                     npm   (packaging/npm)
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

# --- npm: the library goes to lib/<node platform>-<node arch>/ -------------------------------
cp -r packaging/npm "$STAGE/npm"
node_plat="$(node -p 'process.platform + "-" + process.arch')"
mkdir -p "$STAGE/npm/lib/$node_plat"
cp "$SO" "$STAGE/npm/lib/$node_plat/litestream.so"
(cd "$STAGE/npm" && npm pkg set "version=$VERSION" &&
  npm pack --silent --pack-destination "$OUT" >/dev/null)
echo "$OUT/sqlite-litestream-$VERSION.tgz"

# --- gem -------------------------------------------------------------------------------------
cp -r packaging/ruby "$STAGE/ruby"
echo "$VERSION" >"$STAGE/ruby/VERSION"
mkdir -p "$STAGE/ruby/lib/litestream_vfs"
cp "$SO" "$STAGE/ruby/lib/litestream_vfs/litestream.so"
gem_file="$(cd "$STAGE/ruby" && gem build sqlite-litestream.gemspec >&2 &&
  ls sqlite-litestream-"$VERSION"*.gem)"
mv "$STAGE/ruby/$gem_file" "$OUT/"
echo "$OUT/$gem_file"

rm -rf "$STAGE"
