"""Builds the sqlite-litestream wheel around an already built litestream.so.

    python3 packaging/python/build_wheel.py --so dist/.../litestream.so --version 0.1.0 --out dist

The wheel holds no Python-version-specific code, so it is tagged py3-none-<platform>. The
platform tag is derived from the library itself: on Linux, manylinux_2_<N>_<arch> where 2.N is
the newest glibc symbol version it needs (so pip refuses it where it could not load). Other
platforms pass --plat-tag (e.g. macosx_11_0_arm64); see packaging/python/README.md.

Written by hand (zip + the three dist-info files) rather than with a build backend: the wheel
is data plus one small module, and this way building it needs nothing from PyPI.
"""

import argparse
import base64
import hashlib
import platform
import re
import subprocess
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST_NAME = "sqlite-litestream"
MODULE = "sqlite_litestream"


def linux_plat_tag(so: Path) -> str:
    out = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True,
                         check=True).stdout
    versions = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", out)}
    major, minor = max(versions, default=(2, 17))
    return f"manylinux_{major}_{minor}_{platform.machine()}"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(so: Path, version: str, out: Path, plat_tag: str) -> Path:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"version {version!r}: only X.Y.Z is mapped to Python versions")
    readme = (HERE / "README.md").read_text()
    metadata = (f"Metadata-Version: 2.1\nName: {DIST_NAME}\nVersion: {version}\n"
                "Summary: SQLite extension: a VFS that reads Litestream replicas\n"
                "License: Apache-2.0\nRequires-Python: >=3.8\n"
                "Description-Content-Type: text/markdown\n\n" + readme)
    tag = f"py3-none-{plat_tag}"
    wheel = (f"Wheel-Version: 1.0\nGenerator: sqlite-litestream build_wheel.py\n"
             f"Root-Is-Purelib: false\nTag: {tag}\n")
    info = f"{MODULE}-{version}.dist-info"
    files = {
        f"{MODULE}/__init__.py": (HERE / MODULE / "__init__.py").read_bytes(),
        f"{MODULE}/register.py": (HERE / MODULE / "register.py").read_bytes(),
        # The name `litestream.so` lets SQLite derive the entry point sqlite3_litestream_init.
        f"{MODULE}/litestream{so.suffix}": so.read_bytes(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": wheel.encode(),
        f"{info}/top_level.txt": f"{MODULE}\n".encode(),
    }
    record = [record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{MODULE}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if name.endswith(so.suffix) else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--so", type=Path, required=True, help="the built litestream.so/.dylib")
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plat-tag", help="default: manylinux_2_<glibc>_<arch> from the library")
    a = ap.parse_args()
    print(build(a.so, a.version, a.out, a.plat_tag or linux_plat_tag(a.so)))


if __name__ == "__main__":
    main()
