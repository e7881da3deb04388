"""Litestream replicas as files: LTX listings of file://, S3 and emulator (abs://, gs://)
replicas without a process, and LTX file surgery for corruption tests."""

from __future__ import annotations

import dataclasses
import os
import random
import urllib.parse
from pathlib import Path
from typing import Optional

from harness.common import HarnessError
from harness.emulators import list_keys as emulator_list_keys
from harness.s3 import parse_s3_url, s3_list_keys


# --------------------------------------------------------------------------------------------
# Replica listings (cheap: no litestream process)


@dataclasses.dataclass(frozen=True)
class LtxFile:
    level: int
    min_txid: int
    max_txid: int
    size: int
    location: str  # file path, or S3 key


def _parse_ltx_name(name: str) -> Optional[tuple[int, int]]:
    if not name.endswith(".ltx"):
        return None
    parts = name[:-4].split("-")
    if len(parts) != 2 or any(len(p) != 16 for p in parts):
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None


def list_ltx(url: str) -> list[LtxFile]:
    """All LTX files of a file:// or s3:// replica, or of an abs:// or gs:// replica on an
    emulator (harness.emulators.list_keys), sorted by (level, min_txid)."""
    out = []
    if url.startswith("file://"):
        root = Path(urllib.parse.urlsplit(url).path) / "ltx"
        if root.is_dir():
            for d in root.iterdir():
                if not d.name.isdigit():
                    continue
                for f in d.iterdir():
                    t = _parse_ltx_name(f.name)
                    if t:
                        try:
                            size = f.stat().st_size
                        except FileNotFoundError:
                            continue  # deleted while listing
                        out.append(LtxFile(int(d.name), t[0], t[1], size, str(f)))
    elif url.startswith("s3://"):
        endpoint, bucket, prefix = parse_s3_url(url)
        for key, size in s3_list_keys(endpoint, bucket, prefix + "/"):
            rest = key[len(prefix) + 1:].split("/")
            if len(rest) != 2 or len(rest[0]) != 4:
                continue
            t = _parse_ltx_name(rest[1])
            if t:
                out.append(LtxFile(int(rest[0], 16), t[0], t[1], size, key))
    elif url.startswith(("abs://", "az://", "gs://", "gcs://")):
        # Emulators (harness.emulators): <prefix>/ltx/<level in decimal>/<min>-<max>.ltx
        prefix, keys = emulator_list_keys(url)
        for key, size in keys:
            rest = key[len(prefix) + 1:].split("/")
            if len(rest) != 3 or rest[0] != "ltx" or not rest[1].isdigit():
                continue
            t = _parse_ltx_name(rest[2])
            if t:
                out.append(LtxFile(int(rest[1]), t[0], t[1], size, key))
    else:
        raise HarnessError(f"unsupported replica URL {url}")
    return sorted(out, key=lambda f: (f.level, f.min_txid, f.max_txid))


def replica_max_txid(url: str) -> int:
    """Highest MaxTXID over all levels (0 when empty)."""
    return max((f.max_txid for f in list_ltx(url)), default=0)


# --------------------------------------------------------------------------------------------
# LTX file surgery (for corruption tests)


def ltx_layout(data: bytes) -> dict:
    """Offsets of an LTX file's parts: header [0,100), frames [100, index_start),
    index [index_start, len-16), trailer [len-16, len)."""
    if len(data) < 100 + 6 + 24:
        raise HarnessError("too short for an LTX file")
    index_size = int.from_bytes(data[-24:-16], "big")
    index_start = len(data) - 24 - index_size
    return {"header": (0, 100), "frames": (100, index_start),
            "index": (index_start, len(data) - 16), "trailer": (len(data) - 16, len(data)),
            "page_size": int.from_bytes(data[8:12], "big"),
            "commit": int.from_bytes(data[12:16], "big"),
            "min_txid": int.from_bytes(data[16:24], "big"),
            "max_txid": int.from_bytes(data[24:32], "big"),
            "timestamp_ms": int.from_bytes(data[32:40], "big", signed=True)}


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def ltx_page_index(data: bytes) -> list[tuple[int, int, int]]:
    """[(pgno, frame offset, frame size incl. its header)] from an LTX file's page index."""
    lo, hi = ltx_layout(data)["index"]
    pos, out = lo, []
    end = hi - 8  # the u64 index size follows the varints
    while pos < end:
        pgno, pos = _uvarint(data, pos)
        if pgno == 0:
            break
        off, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        out.append((pgno, off, size))
    return out


CORRUPTIONS = {
    # mode: (description, an error is required: True; no crash/hang only: False)
    "magic": ("header magic overwritten", True),
    "frames": ("every byte of the page frames replaced by random bytes", True),
    "lz4": ("first compressed byte of every page frame inverted", True),
    "index": ("page index replaced by random bytes", True),
    "index_size": ("page-index size field set to 2^40", True),
    "truncate_half": ("file cut to half its length", True),
    "truncate_header": ("file cut to 50 bytes", True),
    "empty": ("file emptied", True),
    "scribble": ("64 random bytes after the header inverted (may be undetectable "
                 "without the file checksum: only no crash/hang required)", False),
}


def corrupt_ltx(path: os.PathLike | str, mode: str, seed: int = 0) -> None:
    """Damages an LTX file in place; see CORRUPTIONS for the modes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    rnd = random.Random(seed)
    lay = ltx_layout(bytes(data))
    if mode == "magic":
        data[0:4] = b"XTL1"
    elif mode == "frames":
        lo, hi = lay["frames"]
        data[lo:hi] = rnd.randbytes(hi - lo)
    elif mode == "lz4":
        for _pgno, off, _size in ltx_page_index(bytes(data)):
            flags = int.from_bytes(data[off + 4:off + 6], "big")
            first = off + 6 + (4 if flags & 1 else 0)
            data[first] ^= 0xFF
    elif mode == "index":
        lo, hi = lay["index"]
        data[lo:hi - 8] = rnd.randbytes(hi - 8 - lo)
    elif mode == "index_size":
        data[-24:-16] = (1 << 40).to_bytes(8, "big")
    elif mode == "truncate_half":
        data = data[: len(data) // 2]
    elif mode == "truncate_header":
        data = data[:50]
    elif mode == "empty":
        data = bytearray()
    elif mode == "scribble":
        for _ in range(64):
            i = rnd.randrange(100, len(data))
            data[i] ^= 0xFF
    else:
        raise ValueError(mode)
    path.write_bytes(bytes(data))
