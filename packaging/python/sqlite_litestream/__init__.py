"""The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas.

    import sqlite3, sqlite_litestream
    loader = sqlite3.connect(":memory:")
    sqlite_litestream.load(loader)       # registers the VFS for the whole process
    db = sqlite3.connect(sqlite_litestream.uri("app.db", "s3://bucket/app?region=eu-west-3"),
                         uri=True)

    db = sqlite_litestream.connect("app.db", "s3://bucket/app")   # both steps in one

Works with any connection object that has enable_load_extension() and load_extension():
the standard library's sqlite3 (if its SQLite allows loading extensions) and apsw.

The VFS must be registered before the first open that names it: frameworks that load
extensions on a connection they have already opened (SQLAlchemy's "connect" event, Django's
connection_created) are too late for that connection. Load it once at start-up, or give the
framework `connect` as its connection factory (SQLAlchemy: `creator=lambda:
sqlite_litestream.connect(...)`).
"""

import os
import urllib.parse

__all__ = ["loadable_path", "load", "register_vfs", "uri", "connect", "serve"]


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


def uri(path: str, replica_url=None, **params) -> str:
    """The URI that opens `path` through the VFS: `file:<path>?vfs=litestream&replica_url=…`,
    then the other parameters (poll_interval="500ms", role="primary", ...). Every value is
    percent-escaped, so a replica URL with its own query (`s3://b/app?endpoint=…&region=…`)
    or a path with '#', '%' or '?' arrives intact; True and False become true and false."""
    def text(v):
        return {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else str(v)

    query = [("vfs", "litestream")]
    if replica_url is not None:
        query.append(("replica_url", replica_url))
    query += [(k, v) for k, v in params.items() if v is not None]
    escaped = "&".join(f"{k}={urllib.parse.quote(text(v), safe=':/@')}" for k, v in query)
    return f"file:{urllib.parse.quote(os.fspath(path), safe='/')}?{escaped}"


_loader = None


def register_vfs():
    """Registers the VFS for the standard library's sqlite3 in this process, once, without a
    connection of the caller's: call it (or `import sqlite_litestream.register`, which calls it) before the
    first open that names the VFS, for example at the top of Django's settings or before
    SQLAlchemy's create_engine. Returns the connection that loaded it (kept open)."""
    import sqlite3

    global _loader
    if _loader is None:
        # Kept open: loading is per SQLite library and process, but a connection must do it.
        loader = sqlite3.connect(":memory:", check_same_thread=False)
        load(loader)
        _loader = loader
    return _loader


def connect(path, replica_url=None, **params):
    """Opens `path` through the VFS with the standard library's sqlite3 (see `uri`), loading
    the extension first if this process has not: the VFS then exists before the open that
    names it, whatever the caller did before."""
    import sqlite3

    register_vfs()
    return sqlite3.connect(uri(path, replica_url, **params), uri=True)


def serve(path, replica_url=None, **params) -> str:
    """Serves `path` without a URI, for code that opens plain file names (a framework that
    builds the name itself, sqlite-utils, a library you cannot change): from now on, in this
    process, opening `path` with the standard library's sqlite3 opens the replica (or, with
    role="primary", the primary) these parameters describe; every other file opens as usual.
    Returns the absolute path served."""
    def text(v):
        return {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else str(v)

    query = ([("replica_url", replica_url)] if replica_url is not None else []) + \
        [(k, v) for k, v in params.items() if v is not None]
    encoded = "&".join(f"{k}={urllib.parse.quote(text(v), safe='')}" for k, v in query)
    return register_vfs().execute("SELECT litestream_serve(?, ?)",
                              (os.fspath(path), encoded)).fetchone()[0]
