"""Litestream's words for S3, accepted as its users write them, against moto through the
latency proxy (which logs every request with its headers): the storage class of every
object written, a bucket named with its server's host, Litestream's credential and
endpoint variables, and unknown URL parameters refused by name."""

import sqlite3
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from harness.data import create_source_db, table_digest
from harness.litestream import Litestream
from harness.s3 import http
from harness.sqlite_hosts import connect, run_ext_child, vfs_uri
from latency_proxy import LatencyProxy

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def proxied(s3_server):
    """A fresh bucket and a logging proxy in front of moto: (bucket, proxy)."""
    bucket = s3_server.new_bucket()
    proxy = LatencyProxy(s3_server.endpoint, delay=0).start()
    yield bucket, proxy
    proxy.stop()


def storage_classes(endpoint: str, bucket: str, prefix: str) -> dict:
    status, body = http("GET", f"{endpoint}/{bucket}?list-type=2&prefix={prefix}", sign=True)
    assert status == 200, body
    root = ET.fromstring(body)
    return {c.findtext(f"{NS}Key"): c.findtext(f"{NS}StorageClass")
            for c in root.findall(f"{NS}Contents")}


@pytest.mark.parametrize("words", ["", "&signPayload=false&storageClass=STANDARD_IA",
                                   "&sign-payload=true&storage-class=STANDARD_IA&region=eu-west-3"])
def test_the_words_reach_every_request(s3_server, proxied, ext_path, tmp_path, words):
    """storage-class on every object written, sign-payload in every signature (UNSIGNED-
    PAYLOAD, or the body's SHA-256), region in every credential scope."""
    bucket, proxy = proxied
    url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true{words}"
    q = dict(urllib.parse.parse_qsl(words.lstrip("&")))
    c = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote"),
                ext=ext_path)
    c.execute("CREATE TABLE t(x)")
    for i in range(5):
        c.execute("INSERT INTO t VALUES (?)", (i,))
    c.close()
    classes = {k: v for k, v in storage_classes(s3_server.endpoint, bucket, "db/").items()
               if k.endswith(".ltx")}
    assert classes, "nothing shipped"
    want_class = q.get("storage-class", q.get("storageClass", "STANDARD"))
    assert set(classes.values()) == {want_class}, classes
    puts = [r for r in proxy.log if r.method == "PUT" and r.path.split("?")[0].endswith(".ltx")]
    assert puts
    unsigned = q.get("sign-payload", q.get("signPayload")) == "false"
    region = q.get("region", "us-east-1")
    for r in puts:
        sha = r.headers.get("x-amz-content-sha256")
        assert (sha == "UNSIGNED-PAYLOAD") == unsigned, sha
        assert f"/{region}/s3/aws4_request" in r.headers.get("authorization", "")
        if "storage" in words.lower():
            assert r.headers.get("x-amz-storage-class") == want_class


def test_a_bucket_named_with_its_servers_host(s3_server, ext_path, tmp_path):
    """`s3://BUCKET.HOST:PORT/path`, as Litestream reads it: path style, over http."""
    bucket = s3_server.new_bucket()
    src = tmp_path / "src.db"
    create_source_db(src, rows=300)
    with Litestream(src, s3_server.replica_url(bucket, "db")) as ls:
        ls.wait_synced()
    host = urllib.parse.urlsplit(s3_server.endpoint)
    url = f"s3://{bucket}.{host.hostname}:{host.port}/db"
    c = connect(vfs_uri(url), ext=ext_path)
    assert table_digest(c) == table_digest(sqlite3.connect(src))


def test_litestream_credentials_and_endpoint_variables(s3_server, proxied, tmp_path):
    """LITESTREAM_S3_ENDPOINT (path style implied) and LITESTREAM_ACCESS_KEY_ID /
    LITESTREAM_SECRET_ACCESS_KEY, in a process without any AWS_* variable: requests go to
    that endpoint, signed with that key."""
    bucket, proxy = proxied
    src = tmp_path / "src.db"
    create_source_db(src, rows=200)
    with Litestream(src, s3_server.replica_url(bucket, "db")) as ls:
        ls.wait_synced()
    env = {  # child_env's changes (run_ext_child applies them)
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
        "LITESTREAM_ACCESS_KEY_ID": "from-litestream-env",
        "LITESTREAM_SECRET_ACCESS_KEY": "secret",
        "LITESTREAM_S3_ENDPOINT": proxy.endpoint,
    }
    r = run_ext_child(vfs_uri(f"s3://{bucket}/db"), ["SELECT count(*) FROM orders"], env=env)
    assert r.error is None and not r.crashed, r.describe()
    want = sqlite3.connect(src).execute("SELECT count(*) FROM orders").fetchone()[0]
    assert r.results[-1] == [[want]], r.describe()
    assert proxy.log, "nothing reached the endpoint"
    auth = {q.headers.get("authorization", "") for q in proxy.log}
    assert all("Credential=from-litestream-env/" in a for a in auth), auth
    assert all(q.path.split("?")[0].split("/")[1] == bucket for q in proxy.log), "path style"


@pytest.mark.parametrize("query,says", [
    ("regoin=us-east-1", 'unknown parameter "regoin"'),
    ("poll_interval=1s", "%26"),
    ("force-path-style=perhaps", "force-path-style"),
])
def test_unknown_or_bad_url_parameters_are_refused_by_name(s3_server, ext_path, query, says):
    url = f"s3://b/db?endpoint={s3_server.endpoint}&{query}"
    with pytest.raises(sqlite3.Error) as info:
        connect(vfs_uri(url), ext=ext_path).execute("SELECT 1 FROM sqlite_master").fetchall()
    e = info.value
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and says in str(e), e


def test_a_profile_of_the_shared_credentials_file(s3_server, proxied, tmp_path):
    """No key in the environment, AWS_PROFILE naming a profile of the shared credentials
    file (AWS_SHARED_CREDENTIALS_FILE): requests are signed with that profile's key."""
    bucket, proxy = proxied
    src = tmp_path / "src.db"
    create_source_db(src, rows=50)
    with Litestream(src, s3_server.replica_url(bucket, "db")) as ls:
        ls.wait_synced()
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = from-default\naws_secret_access_key = x\n"
                     "[work]\naws_access_key_id = from-work-profile\n"
                     "aws_secret_access_key = y\n")
    env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
           "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "work"}
    url = f"s3://{bucket}/db?endpoint={proxy.endpoint}"
    r = run_ext_child(vfs_uri(url), ["SELECT count(*) FROM orders"], env=env)
    assert r.error is None and not r.crashed, r.describe()
    auth = {q.headers.get("authorization", "") for q in proxy.log}
    assert auth and all("Credential=from-work-profile/" in a for a in auth), auth
