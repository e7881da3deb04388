"""The packages of packaging/build-all.sh, each installed as a user would in a clean location
and used from its real host: the wheel with pip in a fresh venv (Debian's python3 sqlite3
module, and apsw), the npm .tgz in a fresh folder (node-sqlite3), the gem with
`gem install --local` (Debian's ruby and ruby-sqlite3), and the C tarball (header and library,
compiled against and linked). Each opens a replica written by the real Litestream, checks rows
and litestream_txid() now and in the past, and checks that a connection opened before the
extension was loaded still works. The host scripts are in tests/py/hosts/."""

import json
import os
import re
import shutil
import subprocess
import tarfile
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from harness.common import REPO_ROOT, WORK_DIR, child_env, packaging_env

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "ltx" / "v0.5.17-4096"
HOSTS = Path(__file__).resolve().parent / "hosts"
WORK = WORK_DIR
# The fixture replica (tests/fixtures/ltx/README.md): 6 rows at TXID 4; TXID 1 (4 rows) was
# written at 19:56:50.922Z and TXID 2 at 19:56:51.920Z, so this instant shows TXID 1.
LATEST = [6, "0000000000000004"]
PAST_TIME = "2026-11-21T19:56:51.500Z"
PAST = [4, "0000000000000001"]
# The first test builds the packages (tests/setup.sh built their library already, so that is
# a relink; on its own, a release build linked by zig takes minutes).
pytestmark = pytest.mark.timeout(900)

NPM_LIB = "sqlite-litestream-linux-"
NPM_LIB_HERE = NPM_LIB + {"x86_64": "x64", "aarch64": "arm64"}[os.uname().machine]
VERSION = re.search(r'^version = "(.*)"', (REPO_ROOT / "Cargo.toml").read_text(),
                    re.M).group(1)


def run(args, **kwargs):
    kwargs.setdefault("timeout", 120)
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert res.returncode == 0, f"{args}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """{"dir", "whl", "tgz", "tgz_lib", "gem", "tar"}: what packaging/build-all.sh printed
    ("tgz_lib" the npm package of this platform's library)."""
    out = tmp_path_factory.mktemp("dist")
    res = run(["bash", REPO_ROOT / "packaging" / "build-all.sh", out], timeout=900,
              env=packaging_env())
    paths = [Path(p) for p in res.stdout.split()]
    found = {"dir": paths[0], "tar": Path(f"{paths[0]}.tar.gz")}
    for p in paths[1:]:
        kind = {".whl": "whl", ".tgz": "tgz", ".gem": "gem"}[p.suffix]
        found[kind + ("_lib" if p.name.startswith(NPM_LIB) else "")] = p
    for p in found.values():
        assert p.exists(), p
    return found


@pytest.fixture
def replica(tmp_path):
    """A replica in a folder whose URL has '&', '%' and escaped '#' and spaces of its own, as
    a replica URL with a query would: the packages' uri() must carry it intact."""
    root = tmp_path / "r&d #1 100%"
    shutil.copytree(FIXTURE / "replica", root)
    url = "file://" + urllib.parse.quote(str(root), safe="/&")
    assert "&" in url and "%25" in url and "%23" in url
    return url


def check(out: str, installed_under: Path):
    r = json.loads(out.strip().splitlines()[-1])
    # The library came from the installed package, under the name `.load litestream` needs.
    assert Path(r["path"]).resolve().is_relative_to(installed_under.resolve()), r["path"]
    assert Path(r["path"]).stem == "litestream", r["path"]
    assert r["latest"] == LATEST
    assert r["past"] == PAST
    assert r["others"] == [2, 2]
    # Python's sqlite3 host: connect(), called before anything was loaded, loads and opens.
    return r


def test_artifacts_carry_the_cargo_version(dist):
    arch = os.uname().machine
    assert dist["dir"].name == f"litestream-{VERSION}-linux-{arch}"
    # Linked for glibc 2.17 (manylinux2014), whatever this machine's glibc: the wheel's tag
    # comes from the library's own symbol versions.
    assert dist["whl"].name == f"sqlite_litestream-{VERSION}-py3-none-manylinux_2_17_{arch}.whl"
    so = dist["dir"] / "litestream.so"
    symbols = run(["objdump", "-T", so]).stdout
    newest = max(tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", symbols))
    assert newest <= (2, 17), newest
    assert "Library soname: [litestream.so]" in run(["readelf", "-d", so]).stdout
    assert dist["tgz"].name == f"sqlite-litestream-{VERSION}.tgz"
    assert dist["gem"].name == f"sqlite-litestream-{VERSION}-{arch}-linux.gem"
    with zipfile.ZipFile(dist["whl"]) as z:
        assert f"Version: {VERSION}\n" in z.read(
            f"sqlite_litestream-{VERSION}.dist-info/METADATA").decode()
    with tarfile.open(dist["tgz"]) as t:
        package = json.load(t.extractfile("package/package.json"))
        assert package["version"] == VERSION and "os" not in package, package
        assert not [n for n in t.getnames() if n.endswith(".so")], t.getnames()
    # The library's own package claims only the platform it carries.
    lib_name = NPM_LIB_HERE
    assert package["optionalDependencies"] == {lib_name: VERSION}, package
    assert dist["tgz_lib"].name == f"{lib_name}-{VERSION}.tgz"
    with tarfile.open(dist["tgz_lib"]) as t:
        lib = json.load(t.extractfile("package/package.json"))
        assert (lib["os"], lib["cpu"], lib["libc"]) == (["linux"], [lib_name.split("-")[-1]],
                                                        ["glibc"]), lib
        assert "package/litestream.so" in t.getnames()


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """A fresh venv of Debian's python3 with the wheel and apsw, installed by pip offline."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    run(["/usr/bin/python3", "-m", "venv", env_dir])
    here = Path(__file__).resolve().parent
    run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-index", "--find-links", WORK / "wheels", dist["whl"],
         "-r", here / "requirements-packages.txt", "-r", here / "requirements-frameworks.txt"])
    return env_dir


@pytest.mark.parametrize("host", ["sqlite3", "apsw"])
def test_python_wheel(venv, host, replica, tmp_path):
    res = run([venv / "bin" / "python", HOSTS / "query_replica.py", host, replica, PAST_TIME,
               tmp_path / "other.db"], env=child_env(), cwd=tmp_path)
    r = check(res.stdout, venv)
    # connect(), called before anything was loaded, loads the extension and opens.
    assert r["connect"] == (LATEST if host == "sqlite3" else None)
    if host == "apsw":
        # A second SQLite library in the process (the standard library's, beside apsw's
        # own) is refused; the first keeps working (the rows above were read after it).
        assert "another SQLite library" in r["second_library"], r["second_library"]


def test_python_register_and_serve(venv, replica, tmp_path):
    """`import sqlite_litestream.register` registers the VFS before any connection names it;
    serve() makes a plain file name a replica for code that cannot pass a URI."""
    res = run([venv / "bin" / "python", HOSTS / "serve_replica.py", replica, tmp_path],
              env=child_env())
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["by_uri"] == LATEST and r["served"] == LATEST, r
    assert r["served_path"] == str(tmp_path / "served.db")
    assert r["plain"] == [1] and r["plain_exists"], r
    assert "poll_interval" in r["bad"], r


@pytest.mark.parametrize("framework", ["sqlalchemy", "django", "sqlite_utils"])
def test_framework_recipes(venv, framework, replica, tmp_path):
    """The README's recipes, each in its real framework from PyPI: SQLAlchemy (a connection
    factory, a served path, the URI in its URL), Django (writes through a primary, reads
    routed to a replica alias, a replica by URI), sqlite-utils (a served path)."""
    primary_url = (tmp_path / "primary-replica").as_uri()
    res = run([venv / "bin" / "python", HOSTS / "frameworks.py", framework, replica, primary_url,
               tmp_path], env=child_env())
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if framework == "sqlalchemy":
        assert r == {"creator": LATEST, "served": LATEST, "url": LATEST}, r
    elif framework == "django":
        assert r["replica_count"] == 5 and r["replica_first"] == "note 0", r
        assert r["legacy"] == LATEST, r
    else:
        assert "t" in r["tables"] and [r["count"], r["txid"]] == LATEST, r


def npm_app(dist, tmp_path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"private": true}')
    # --offline proves that the two .tgz are all it takes: the library's package first, as
    # npm would fetch it for the optional dependency.
    run(["npm", "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error",
         dist["tgz_lib"], dist["tgz"]], cwd=app)
    return app


@pytest.mark.parametrize("host", ["better-sqlite3", "bun"])
def test_npm_package_in_hosts_without_uris(host, dist, replica, tmp_path):
    """better-sqlite3 (built by tests/setup.sh from the npm registry's package) and Bun's
    bun:sqlite (Bun from the npm registry) pass plain file names: serve() makes one a replica
    and another a primary shipping under sync=remote; a plain database beside them is
    untouched."""
    app = npm_app(dist, tmp_path)
    script = app / "plain_names.js"
    shutil.copy(HOSTS / "plain_names.js", script)
    work = tmp_path / "work"
    work.mkdir()
    primary_url = (tmp_path / "primary-replica").as_uri()
    env = child_env({"NODE_PATH": WORK / "node" / "node_modules"})
    runtime = "node" if host == "better-sqlite3" else WORK / "bun" / "node_modules" / ".bin" / "bun"
    res = run([runtime, script, replica, primary_url, work], env=env, cwd=app)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["host"] == ("bun" if host == "bun" else "node"), r
    assert r["servedPath"] == str(work / "replica.db")
    assert r["readonly"] == LATEST and r["readwrite"] == LATEST, r
    assert r["shipped"][0] == 10, r
    assert r["plain"] == [1] and "poll_interval" in r["bad"], r
    assert not (work / "replica.db").exists(), "a replica leaves no local file"
    # What the primary shipped is in its replica: the real Litestream restores it.
    from harness.litestream import restore
    out = tmp_path / "restored.db"
    restore(primary_url, out)
    import sqlite3
    assert sqlite3.connect(out).execute("SELECT count(*) FROM w").fetchone()[0] == 10


def test_npm_package(dist, replica, tmp_path):
    app = npm_app(dist, tmp_path)
    script = app / "query_replica.js"
    shutil.copy(HOSTS / "query_replica.js", script)
    # node-sqlite3, built by tests/setup.sh; sqlite-litestream resolves from app/node_modules.
    env = child_env({"NODE_PATH": WORK / "node" / "node_modules"})
    res = run(["node", script, replica, PAST_TIME, tmp_path / "other.db"], env=env, cwd=app)
    r = check(res.stdout, app / "node_modules" / NPM_LIB_HERE)
    # load() awaited, then serve() awaited: the served path opens by its plain name.
    assert r["servedPath"] == str(app / "served.db") and r["served"] == LATEST, r


def gem_env(dist, tmp_path) -> tuple[Path, dict]:
    """The gem installed into its own folder, searched before the system's gems (Debian's
    sqlite3, railties and activerecord)."""
    gems = tmp_path / "gems"
    run(["gem", "install", "--local", "--no-document", "--install-dir", gems, dist["gem"]])
    default = run(["ruby", "-e", 'puts Gem.default_path.join(":")']).stdout.strip()
    return gems, child_env({"GEM_PATH": f"{gems}:{default}", "GEM_HOME": gems})


def test_ruby_gem(dist, replica, tmp_path):
    gems, env = gem_env(dist, tmp_path)
    res = run(["ruby", HOSTS / "query_replica.rb", replica, PAST_TIME, tmp_path / "other.db"],
              env=env, cwd=tmp_path)
    check(res.stdout, gems)


def test_rails_recipe(dist, replica, tmp_path):
    """The gem's README recipe in a Rails application (Debian's Rails 6.1): Bundler.require
    loads the gem and its Railtie registers the VFS before the initializers and Active
    Record's first connection; served paths are the writing (role=primary, sync=remote) and
    reading roles; a replica by URI in database.yml. The peer gem's module name works too."""
    gems, env = gem_env(dist, tmp_path)
    work = tmp_path / "app"
    work.mkdir()
    primary_url = (tmp_path / "primary-replica").as_uri()
    res = run(["ruby", HOSTS / "rails_app.rb", work, primary_url, replica], env=env, cwd=work)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["registered_by_railtie"] and r["peer_name"], r
    assert r["legacy"] == LATEST, r
    assert r["replica_count"] == 5 and r["replica_first"] == "note 0", r
    assert r["to_path"].startswith(str(gems)) and r["to_path"].endswith("/litestream"), r
    assert Path(r["to_path"] + ".so").is_file(), r
    # What the primary shipped under sync=remote is in its replica: the real Litestream
    # restores it.
    from harness.litestream import restore
    out = tmp_path / "restored.db"
    restore(primary_url, out)
    import sqlite3
    assert sqlite3.connect(out).execute("SELECT count(*) FROM notes").fetchone()[0] == 5


def test_c_tarball(dist, replica, tmp_path):
    """The tarball's header and library, as a C user gets them: c/query_replica.c compiled
    against its include/ and linked to its litestream.so (found at run time via rpath)."""
    with tarfile.open(dist["tar"]) as t:
        t.extractall(tmp_path)
    lib = tmp_path / dist["dir"].name
    exe = tmp_path / "query_replica"
    cc = shutil.which("cc") or shutil.which("gcc")
    run([cc, "-Wall", "-Werror", f"-I{lib / 'include'}", REPO_ROOT / "c" / "query_replica.c",
         f"-L{lib}", "-l:litestream.so", "-lsqlite3", f"-Wl,-rpath,{lib}", "-o", exe])
    sql = "SELECT count(*), litestream_txid() FROM t"
    env = child_env()
    assert run([exe, replica, sql], env=env).stdout.split() == [str(LATEST[0]), LATEST[1]]
    assert run([exe, replica, sql, PAST_TIME], env=env).stdout.split() == [str(PAST[0]), PAST[1]]
