"""`import sqlite_litestream.register`: registers the litestream VFS for the standard
library's sqlite3 at import time, before any connection names it (see
sqlite_litestream.register_vfs)."""

from . import register_vfs

register_vfs()
