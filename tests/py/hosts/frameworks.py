"""Run by test_packages.py inside a fresh venv with the sqlite-litestream wheel and the
frameworks of tests/py/requirements-frameworks.txt, one recipe per call:
    python frameworks.py sqlalchemy|django|sqlite_utils REPLICA_URL PRIMARY_REPLICA_URL WORKDIR
Each reads the replica at REPLICA_URL (written by the real Litestream: table t) the way the
README says; django also writes through a primary (shipping to PRIMARY_REPLICA_URL) and reads
it back through a replica alias. Prints JSON."""

import json
import os
import sys
import time

framework, url, primary_url, workdir = sys.argv[1:]
os.chdir(workdir)
out = {}

if framework == "sqlalchemy":
    import sqlalchemy as sa
    import sqlite_litestream.register  # noqa: F401  (the VFS exists before any open)
    import sqlite_litestream

    # 1. A connection factory.
    engine = sa.create_engine("sqlite://", creator=lambda: sqlite_litestream.connect(
        "replica.db", url))
    with engine.connect() as c:
        out["creator"] = list(c.execute(sa.text("SELECT count(*), litestream_txid() FROM t")).one())
    # 2. A served path, opened by SQLAlchemy's own URL.
    sqlite_litestream.serve("served.db", url)
    engine = sa.create_engine("sqlite:///served.db")
    with engine.connect() as c:
        out["served"] = list(c.execute(sa.text("SELECT count(*), litestream_txid() FROM t")).one())
    # 3. The URI in SQLAlchemy's URL: `uri=true`, each value escaped once more for the URL.
    import urllib.parse
    uri = sqlite_litestream.uri("replica3.db", url)
    engine = sa.create_engine("sqlite:///" + urllib.parse.quote(uri, safe=":/?=") + "&uri=true")
    with engine.connect() as c:
        out["url"] = list(c.execute(sa.text("SELECT count(*), litestream_txid() FROM t")).one())

elif framework == "django":
    import sqlite_litestream.register  # noqa: F401  (at the top of settings.py)
    import sqlite_litestream

    # In settings.py: the primary and its read replica, served by path.
    sqlite_litestream.serve("app.db", primary_url, role="primary", sync="remote")
    sqlite_litestream.serve("app-replica.db", primary_url, poll_interval="100ms")
    # And a replica written by the real Litestream, by URI (Django opens names as URIs).
    legacy = sqlite_litestream.uri("legacy.db", url)

    class Router:
        """Reads from the replica, writes to the primary."""
        def db_for_read(self, model, **hints):
            return "replica"

        def db_for_write(self, model, **hints):
            return "default"

    import django
    from django.conf import settings
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "app.db"},
            "replica": {"ENGINE": "django.db.backends.sqlite3", "NAME": "app-replica.db"},
            "legacy": {"ENGINE": "django.db.backends.sqlite3", "NAME": legacy},
        },
        DATABASE_ROUTERS=[Router()],
        INSTALLED_APPS=["django.contrib.contenttypes"],
        USE_TZ=True,
    )
    django.setup()
    from django.db import connections, models, transaction

    class Note(models.Model):
        text = models.TextField()

        class Meta:
            app_label = "notes"

    with connections["default"].schema_editor() as editor:
        editor.create_model(Note)
    with transaction.atomic(using="default"):
        for i in range(5):
            Note.objects.create(text=f"note {i}")
    deadline = time.time() + 20
    while True:
        try:
            seen = Note.objects.count()  # routed to the replica
        except Exception:  # the table has not reached the replica yet
            seen = -1
        if seen == 5 or time.time() > deadline:
            break
        time.sleep(0.1)
    out["replica_count"] = seen
    out["replica_first"] = Note.objects.order_by("id").first().text
    with connections["legacy"].cursor() as c:
        c.execute("SELECT count(*), litestream_txid() FROM t")
        out["legacy"] = list(c.fetchone())

elif framework == "sqlite_utils":
    import sqlite_utils
    import sqlite_litestream

    # sqlite-utils opens plain file names: serve the path first.
    sqlite_litestream.serve("served.db", url)
    db = sqlite_utils.Database("served.db")
    out["tables"] = db.table_names()
    out["count"] = db["t"].count
    out["txid"] = db.execute("SELECT litestream_txid()").fetchone()[0]

print(json.dumps(out))
