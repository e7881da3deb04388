"""The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas.

    import sqlite3, sqlite_litestream
    loader = sqlite3.connect(":memory:")
    sqlite_litestream.load(loader)       # registers the VFS for the whole process
    db = sqlite3.connect("file:app.db?vfs=litestream&replica_url=s3://bucket/app", uri=True)

Works with any connection object that has enable_load_extension() and load_extension():
the standard library's sqlite3 (if its SQLite allows loading extensions) and apsw.
"""

import os

__all__ = ["loadable_path", "load"]


def loadable_path() -> str:
    """Path of the bundled extension without its suffix (.so, .dylib, .dll): SQLite adds the
    suffix, and derives the entry point sqlite3_litestream_init from the file name."""
    return os.path.normpath(os.path.join(os.path.dirname(__file__), "litestream"))


def load(conn) -> None:
    """Loads the extension through `conn` (sqlite3 or apsw). The VFS is then registered for
    every connection of that SQLite library in this process. Extension loading is switched
    off again afterwards, so `conn` is left as locked down as it was by default."""
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)
