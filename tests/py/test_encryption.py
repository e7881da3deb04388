"""Encrypted replicas: every object an age file (X25519), still read a page at a time.

Oracles: Debian's `age` (the reference Go implementation) encrypts and decrypts, and the real
Litestream writes and restores the plaintext the objects hold."""

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from harness.common import wait_until
from harness.data import ORDERS_SCHEMA, all_tables_digest, create_source_db, insert_orders
from harness.litestream import Litestream, restore
from harness.sqlite_hosts import connect, ext_path, run_ext_child, run_sqlite_child, vfs_uri

AGE_MAGIC = b"age-encryption.org/v1\n"
MARKER = "MARKER-3f9c1d-never-in-plaintext-outside"


def keygen(path: Path) -> str:
    """A new identity file at `path`; returns its recipient (public key)."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def objects(root: Path) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def transform(src: Path, dst: Path, args: list) -> None:
    """Runs every object of `src` through `age args`, into the same name under `dst`."""
    for p in objects(src):
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["age", *args, "-o", str(out), str(p)], check=True, capture_output=True)


def upload(s3, bucket: str, prefix: str, root: Path) -> None:
    """Puts a file:// replica (`ltx/<level>/<file>`) into S3's layout (`<level:04x>/<file>`)."""
    for p in objects(root):
        _, level, name = p.relative_to(root).parts
        s3.put(bucket, f"{prefix}/{int(level):04x}/{name}", p.read_bytes())


def rows(child, i: int) -> list:
    """The rows of the i-th query of a `run_ext_child` (after its load and open steps)."""
    return child.results[2 + i]


def stats(conn) -> dict:
    return json.loads(conn.execute("SELECT litestream_stats()").fetchone()[0])


@pytest.fixture
def keys(tmp_path):
    key = tmp_path / "key.txt"
    return key, keygen(key)


def test_our_encrypted_primary_is_age_files_that_litestream_restores(tmp_path, keys):
    key, recipient = keys
    replica = tmp_path / "replica"
    url = replica.as_uri()
    db = tmp_path / "app.db"
    # Fast compaction and snapshots: the primary also reads back (decrypts) what it compacts.
    w = connect(vfs_uri(url, name=str(db), role="primary", age_recipients=recipient,
                        age_identity_file=str(key), levels="1s,2s", snapshot_interval="3s"))
    w.executescript(ORDERS_SCHEMA)
    insert_orders(w, 1, 3000)
    w.execute("INSERT INTO orders(id, customer, amount, note) VALUES (9999999, ?, 1, ?)",
              (MARKER, MARKER * 40))
    w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(40):
        insert_orders(w, 3001 + 20 * i, 20)
        time.sleep(0.1)
    wait_until(lambda: not stats(w)["pending"], 60)
    time.sleep(3)  # one more round of every level
    wait_until(lambda: not stats(w)["pending"], 60)
    local = all_tables_digest(w)
    levels = {p.parent.name for p in objects(replica) if p.suffix == ".ltx"}
    assert {"0", "1", "2", "9"} <= levels, levels

    # Every object is an age file, and nothing of the database is in any of them.
    files = objects(replica)
    assert any("ltx" in str(p) for p in files), files
    for p in files:
        body = p.read_bytes()
        assert body.startswith(AGE_MAGIC), p
        assert MARKER.encode() not in body, p

    # The stock age tool decrypts them into a replica the real Litestream restores.
    plain = tmp_path / "plain"
    transform(replica, plain, ["-d", "-i", str(key)])
    out = tmp_path / "restored.db"
    restore(plain.as_uri(), out)
    assert all_tables_digest(sqlite3.connect(out)) == local

    # Our reader, with the identity, reads the encrypted replica; so does litestream_restore.
    r = connect(vfs_uri(url, name="reader.db", age_identity_file=str(key)))
    assert all_tables_digest(r) == local
    ours = tmp_path / "ours.db"
    r.execute("SELECT litestream_restore(?)", (str(ours),)).fetchone()
    assert ours.read_bytes() == out.read_bytes()
    w.close()


def test_a_litestream_replica_encrypted_with_age_reads_page_by_page(s3_server, tmp_path, keys):
    key, recipient = keys
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=20000, overflow_rows=5)
    w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plain = tmp_path / "plain"
    ls = Litestream(src, plain.as_uri(), workdir=tmp_path).start()
    ls.wait_synced()
    insert_orders(w, 20001, 300)
    ls.wait_synced()
    ls.stop()
    native = sqlite3.connect(src)

    # The same objects, each encrypted by the reference age, on the S3-compatible server.
    sealed = tmp_path / "sealed"
    transform(plain, sealed, ["-r", recipient])
    bucket = s3_server.new_bucket("enc")
    upload(s3_server, bucket, "db", sealed)
    upload(s3_server, bucket, "plain", plain)
    url = s3_server.replica_url(bucket, "db")
    env_key = key.read_text()

    child = run_ext_child(
        vfs_uri(url, name="enc.db"),
        ["SELECT count(*), sum(amount) FROM orders",
         "SELECT count(*) FROM orders WHERE customer >= 'cust0100' AND customer < 'cust0110'",
         "SELECT litestream_stats()"],
        env={"LITESTREAM_AGE_IDENTITY": env_key})
    assert child.error is None, child.describe()
    assert rows(child, 0) == [list(native.execute("SELECT count(*), sum(amount) FROM orders").fetchone())]
    assert rows(child, 1) == [list(native.execute(
        "SELECT count(*) FROM orders WHERE customer >= 'cust0100' AND customer < 'cust0110'").fetchone())]

    # Time travel, history, VACUUM INTO and hydration over the encrypted objects.
    hydrated = tmp_path / "hydrated.db"
    vac = tmp_path / "vacuum.db"
    c = run_sqlite_child([
        {"op": "load", "path": str(ext_path())},
        {"op": "open", "name": "db", "uri": vfs_uri(url, name="tt.db", hydration_enabled="true",
                                                       hydration_path=str(hydrated))},
        {"op": "query", "conn": "db", "sql": "SELECT txid, timestamp FROM litestream_history"},
        {"op": "query", "conn": "db", "sql": f"VACUUM INTO '{vac}'"},
        {"op": "sleep", "seconds": 3},
        {"op": "query", "conn": "db", "sql": "SELECT litestream_stats()"},
    ], env={"LITESTREAM_AGE_IDENTITY": env_key})
    assert c.error is None, c.describe()
    history = c.results[2]
    assert [int(t, 16) for t, _ in history] == [1, 2], history
    total = native.execute("SELECT count(*) FROM orders").fetchone()[0]
    assert sqlite3.connect(vac).execute("SELECT count(*) FROM orders").fetchone()[0] == total
    hydration = json.loads(c.results[5][0][0])["hydration"]
    assert hydration["state"] == "ready" and hydrated.exists(), hydration
    assert all_tables_digest(sqlite3.connect(hydrated)) == all_tables_digest(native)
    # A millisecond after the first file's timestamp, its state (TXID 1) shows.
    # (Timestamps drop trailing zeros of their fraction: "…:12.96Z" is 960 ms.)
    first = dt.datetime.fromisoformat(history[0][1].replace("Z", "+00:00"))
    later = (first + dt.timedelta(milliseconds=1)).isoformat(timespec="milliseconds")
    later = later.replace("+00:00", "Z")
    c = run_ext_child(vfs_uri(url, name="past.db", time=later),
                      ["SELECT count(*), litestream_txid() FROM orders"],
                      env={"LITESTREAM_AGE_IDENTITY": env_key})
    assert c.error is None and rows(c, 0) == [[total - 300, "0000000000000001"]], c.describe()

    # A point lookup reads a small part of the objects, within a few chunks of what the same
    # lookup reads from the plaintext replica.
    lookup = ["SELECT litestream_stats()", "SELECT note FROM orders WHERE id = 12345",
              "SELECT litestream_stats()"]
    cost = {}
    for name, u, env in [("sealed", url, {"LITESTREAM_AGE_IDENTITY": env_key}),
                         ("plain", s3_server.replica_url(bucket, "plain"), {})]:
        c = run_ext_child(vfs_uri(u, name=f"{name}.db", prefetch="0"), lookup, env=env)
        assert c.error is None, c.describe()
        assert rows(c, 1) == [list(native.execute("SELECT note FROM orders WHERE id = 12345").fetchone())]
        before, after = (json.loads(rows(c, i)[0][0]) for i in (0, 2))
        cost[name] = after["storage"]["get_bytes"] - before["storage"]["get_bytes"]
    total = sum(p.stat().st_size for p in objects(sealed))
    assert cost["sealed"] < total / 4, (cost, total)
    assert cost["sealed"] <= cost["plain"] + 4 * 65552, cost
    print(f"point lookup: {cost['sealed']} bytes encrypted, {cost['plain']} plaintext, "
          f"of {total} bytes of objects")


def test_keys_that_do_not_fit_are_clear_errors(tmp_path, keys):
    key, recipient = keys
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=500, overflow_rows=0)
    plain = tmp_path / "plain"
    ls = Litestream(src, plain.as_uri(), workdir=tmp_path).start()
    ls.wait_synced()
    ls.stop()
    sealed = tmp_path / "sealed"
    transform(plain, sealed, ["-r", recipient])
    other = tmp_path / "other.txt"
    keygen(other)

    cases = [
        # No identity for an encrypted replica.
        (sealed, {}, "is age-encrypted, and no identity was given"),
        # The wrong identity.
        (sealed, {"age_identity_file": str(other)}, "none of the 1 age identities"),
        # A plaintext replica opened as encrypted.
        (plain, {"age_identity_file": str(key)}, "is not age-encrypted"),
        # An identity file that is not one, or missing: named, never quoted.
        (sealed, {"age_identity_file": str(src)}, "age_identity_file"),
        (sealed, {"age_identity_file": str(tmp_path / "none.txt")}, "cannot read the identity file"),
    ]
    for root, params, words in cases:
        r = run_ext_child(vfs_uri(root.as_uri(), name="x.db", **params),
                          ["SELECT count(*) FROM orders"])
        assert r.error is not None and words in r.error["message"], (params, r.describe())
        assert r.error["code"] == sqlite3.SQLITE_CANTOPEN, (params, r.describe())
        assert "AGE-SECRET-KEY" not in r.error["message"]

    # Key rotation: both identities given, files of either key read.
    both = tmp_path / "both.txt"
    both.write_text(other.read_text() + key.read_text())
    r = run_ext_child(vfs_uri(sealed.as_uri(), name="x.db", age_identity_file=str(both)),
                      ["SELECT count(*) FROM orders"])
    assert r.error is None and rows(r, 0) == [[500]], r.describe()

    # A changed byte inside a chunk: corruption, naming the file.
    big = max(objects(sealed), key=lambda p: p.stat().st_size)
    body = bytearray(big.read_bytes())
    body[len(body) // 2] ^= 0x40
    big.write_bytes(bytes(body))
    r = run_ext_child(vfs_uri(sealed.as_uri(), name="x.db", age_identity_file=str(key)),
                      ["SELECT count(*), sum(length(note)) FROM orders"])
    assert r.error is not None and big.name in r.error["message"], r.describe()
    assert r.error["code"] in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN), r.describe()
    assert "authentication" in r.error["message"], r.describe()


SSE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64


def test_server_side_encryption_with_litestreams_words(s3_server, tmp_path):
    """SSE-C with Litestream's S3 URL words: every PUT and GET carries the customer key
    (moto accepts the headers without enforcing them, so the proxy checks they are sent),
    and the key appears in nothing the extension shows."""
    from latency_proxy import LatencyProxy
    bucket = s3_server.new_bucket("sse")
    with LatencyProxy(s3_server.endpoint, delay=0) as proxy:
        base = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        url = f"{base}&sse-customer-key={SSE_KEY}&sse-customer-algorithm=AES256"
        db = tmp_path / "app.db"
        w = connect(vfs_uri(url, name=str(db), role="primary"))
        w.execute("CREATE TABLE t(x)")
        w.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        wait_until(lambda: not stats(w)["pending"], 60)
        s = stats(w)
        assert SSE_KEY not in json.dumps(s) and "sse-customer-key" not in s["replica_url"], s
        r = run_ext_child(vfs_uri(url, name="r.db"), ["SELECT count(*) FROM t"])
        assert r.error is None and rows(r, 0) == [[100]], r.describe()
        w.close()
        objects_io = [q for q in proxy.log if q.method == "PUT" or q.is_get]
        assert objects_io, proxy.log
        for q in objects_io:
            assert q.sse.get("x-amz-server-side-encryption-customer-algorithm") == "AES256", q
            assert q.sse.get("x-amz-server-side-encryption-customer-key") == SSE_KEY, q

        # A bad value is an error at open that names the parameter, not the key.
        r = run_ext_child(vfs_uri(f"{base}&sse-customer-key=not-a-key!", name="x.db"),
                          ["SELECT 1"])
        assert r.error is not None and "not-a-key!" not in r.error["message"], r.describe()
        r = run_ext_child(vfs_uri(f"{url}&sse-kms-key-id=k", name="x.db"), ["SELECT 1"])
        assert r.error is not None and "exclude" in r.error["message"], r.describe()
        assert SSE_KEY not in r.error["message"]
