//! Paths served without a URI: hosts that pass SQLite a plain file name (better-sqlite3,
//! bun:sqlite, frameworks that build the name themselves) cannot say `vfs=litestream` or
//! `replica_url=…`. For them, `litestream` becomes the process's default VFS and serves as
//! a replica (or primary) only the paths named here, with their parameters; every other
//! file passes to the OS VFS untouched.
//!
//! A path is named by `litestream_serve(path, parameters)` before its open, or by the
//! environment at load: `LITESTREAM_PATH` names one path, configured by the other
//! `LITESTREAM_*` variables.

use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::config::{env_name, Config};
use crate::error::{Error, Result};

struct Entry {
    path: PathBuf,
    params: Vec<(String, String)>,
}

static SERVED: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// The environment variable naming the one path served from the environment.
pub fn path_variable() -> String {
    env_name("path")
}

/// Serves `path` with `params` (`replica_url=…&poll_interval=…`, percent-escaped as in a
/// URI), replacing an earlier entry for it. The parameters are checked now, with the
/// environment as fallback, so that a mistake fails here rather than at the open.
pub fn serve(path: &str, params: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(params.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    if let Some((k, _)) = params.iter().find(|(k, _)| k == "vfs") {
        return Err(Error::config(
            k,
            "a served path is opened through the default VFS: name no vfs",
        ));
    }
    Config::from_params(&params, env)?;
    let path = absolute(path)?;
    let mut served = SERVED.write();
    served.retain(|e| e.path != path);
    served.push(Entry {
        path: path.clone(),
        params,
    });
    Ok(path)
}

/// The parameters `path` is served with, if it is.
pub fn lookup(path: &Path) -> Option<Vec<(String, String)>> {
    let served = SERVED.read();
    if served.is_empty() {
        return None;
    }
    let path = absolute(&path.to_string_lossy()).ok()?;
    served
        .iter()
        .find(|e| e.path == path || same_file(&e.path, &path))
        .map(|e| e.params.clone())
}

/// `path` made absolute against the working directory, without touching the file system
/// (a replica's local name need not exist).
fn absolute(path: &str) -> Result<PathBuf> {
    if path.is_empty() || path == ":memory:" {
        return Err(Error::config("litestream_serve", "a file path is required"));
    }
    std::path::absolute(path).map_err(|e| Error::io(format!("resolving {path}"), e))
}

/// Two spellings of one path: the same file name in the same folder, as the file system
/// resolves folders (symbolic links, `..`).
fn same_file(a: &Path, b: &Path) -> bool {
    let folder = |p: &Path| p.parent().and_then(|d| std::fs::canonicalize(d).ok());
    a.file_name() == b.file_name() && folder(a).is_some() && folder(a) == folder(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_checked_paths_and_finds_them_by_any_spelling() {
        let none = |_: &str| None;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("served-app.db");
        let name = db.to_str().unwrap();
        let e = serve(name, "replica_url=file:///tmp/r&poll_interval=soon", &none).unwrap_err();
        assert!(e.to_string().contains("poll_interval"), "{e}");
        let e = serve(name, "vfs=litestream&replica_url=file:///tmp/r", &none).unwrap_err();
        assert!(e.to_string().contains("vfs"), "{e}");
        assert!(serve(":memory:", "replica_url=file:///tmp/r", &none).is_err());
        assert!(lookup(&db).is_none());

        serve(
            name,
            "replica_url=file%3A%2F%2F%2Ftmp%2Fr%3Fx&poll_interval=2s",
            &none,
        )
        .unwrap();
        let params = lookup(&db).unwrap();
        assert_eq!(params[0], ("replica_url".into(), "file:///tmp/r?x".into()));
        let dotted = dir.path().join("sub/../served-app.db");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(
            lookup(&dotted).is_some(),
            "another spelling of the same path"
        );
        assert!(lookup(&dir.path().join("other.db")).is_none());
        // Served again: the new parameters replace the old.
        serve(name, "replica_url=file:///tmp/s", &none).unwrap();
        assert_eq!(lookup(&db).unwrap().len(), 1);
    }
}
