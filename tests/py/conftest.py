"""pytest fixtures for the litestream integration tests (see harness/ and tests/README.md)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# sqlite_hosts stays qualified: the fixture ext_path below shadows its function ext_path.
from harness import sqlite_hosts  # noqa: E402
from harness.common import AWS_TEST_ENV, stray_litestream_env, tail  # noqa: E402
from harness.emulators import Azurite, FakeGcs  # noqa: E402
from harness.litestream import Litestream  # noqa: E402
from harness.s3 import S3Server  # noqa: E402


def pytest_configure(config):
    # The extension under test runs inside this process and reads AWS settings from it; moto
    # accepts any credentials. AWS_CA_BUNDLE is left alone here (children get it removed).
    os.environ.update(AWS_TEST_ENV)
    # e.g. a LITESTREAM_REPLICA_URL left in the shell would change what every test opens.
    for k in stray_litestream_env():
        del os.environ[k]
    for k in ("NO_PROXY", "no_proxy"):
        os.environ[k] = ",".join(x for x in (os.environ.get(k), "127.0.0.1", "localhost") if x)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        # Attach the logs of the processes the test started to its failure report.
        for ls in getattr(item, "_litestreams", []):
            rep.sections.append((f"litestream log {ls.log_path}", tail(ls.log_path, 300)))
        srv = getattr(item, "_moto", None) or getattr(item, "funcargs", {}).get("s3_server")
        if srv is not None:
            rep.sections.append((f"moto log {srv.log_path}", tail(srv.log_path, 40)))
        # Emulators (harness.emulators) among the test's fixtures.
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, (Azurite, FakeGcs)):
                for path in value.log_paths():
                    rep.sections.append((f"log {path}", tail(path, 40)))


@pytest.fixture(scope="session")
def ext_path() -> Path:
    """Path of our extension (LITESTREAM_EXT overrides target/release/liblitestream.so)."""
    p = sqlite_hosts.ext_path()
    if not p.exists():
        pytest.fail(f"extension not built: {p} (run `cargo build --release`)")
    return p


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server for the whole session: .endpoint, .make_bucket(name),
    .new_bucket(), .replica_url(bucket, prefix), .list_keys(bucket, prefix), .get/.put/.delete."""
    srv = S3Server(tmp_path_factory.mktemp("moto")).start()
    try:
        yield srv
    finally:
        srv.stop()


def _start_emulator(server):
    """Starts an emulator for the session and puts the environment our extension needs for
    its replicas into this process (the in-process extension reads it at open; child_env
    passes it on). Fails, with the logs, if it cannot start: nothing is skipped."""
    try:
        server.start()
        error = None
    except Exception as e:  # noqa: BLE001
        error = e
    if error is not None:
        server.stop()
        pytest.fail(str(error), pytrace=False)
    os.environ.update(server.env)
    return server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite (Azure Blob) for the whole session, container "replicas" created:
    .replica(prefix) -> ReplicaSpec(url, env, litestream_replica, litestream_env),
    .endpoint, .list_keys(container, prefix). Sets AZURE_STORAGE_ACCOUNT_KEY here."""
    srv = _start_emulator(Azurite(tmp_path_factory.mktemp("azurite")))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    """fake-gcs-server behind gcs_xml_shim.py for the whole session, bucket "replicas"
    created: .replica(prefix) -> ReplicaSpec, .host, .list_keys(bucket, prefix). Sets
    STORAGE_EMULATOR_HOST here (to the shim)."""
    srv = _start_emulator(FakeGcs(tmp_path_factory.mktemp("fake-gcs")))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def replica_url(request, tmp_path):
    """Factory: replica_url(backend, name="replica") -> a fresh, empty replica URL.
    backend "file" -> file://<tmp>/<name>; "s3" -> s3://<new bucket>/<name>?endpoint=...
    (moto is started on first use)."""
    def make(backend: str, name: str = "replica") -> str:
        if backend == "file":
            return (tmp_path / name).as_uri()
        if backend == "s3":
            srv = request.getfixturevalue("s3_server")
            request.node._moto = srv
            return srv.replica_url(srv.new_bucket(), name)
        raise ValueError(backend)
    return make


@pytest.fixture
def litestream(request, tmp_path):
    """Factory: litestream(db_path, replica_url, **Litestream kwargs) -> started Litestream.
    Stopped at teardown; its log is attached to the report when the test fails."""
    started = []
    request.node._litestreams = started

    def start(db_path, url, **kwargs) -> Litestream:
        kwargs.setdefault("workdir", tmp_path)
        ls = Litestream(db_path, url, **kwargs).start()
        started.append(ls)
        return ls

    yield start
    for ls in started:
        ls.stop()
