//! Where an open through the `litestream` VFS goes: decided from the file name, SQLite's
//! open flags and the configuration alone, before anything is opened, so that the choice
//! is tested row by row without SQLite.
//!
//! | the open                                          | goes to                         |
//! |---------------------------------------------------|---------------------------------|
//! | the WAL of a database this process has as primary | the base VFS, wrapped (`PrimaryWal`) |
//! | a temp file, journal, or a main database that names no replica (`VACUUM INTO`, a plain ATTACH) | the base VFS (`Base`) |
//! | a main database with `role=primary` and a name    | the base VFS, wrapped (`PrimaryDb`) |
//! | any other main database that names a replica      | a replica file (`Replica`)      |
//! | one whose configuration is bad                    | a replica file holding the error, reported at first use (`Failed`) |
//!
//! A main database whose URI names no replica goes by its path's entry in `served` (hosts
//! without URI filenames), if it has one; with our VFS the process default, one that has
//! none is the base VFS's, whatever the environment says.

use std::path::{Path, PathBuf};

use crate::config::{names_a_replica, Config, Params, Role};
use crate::error::{Error, Result};

/// SQLite's open flags that matter for routing.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenKind {
    pub main_db: bool,
    pub wal: bool,
}

#[derive(Debug)]
pub enum Route {
    Base,
    PrimaryWal(PathBuf),
    PrimaryDb(PathBuf, Box<Config>),
    Replica(Box<Config>),
    Failed(Error),
}

/// How the process serves paths that name no replica in their URI.
pub struct Serving<'a> {
    /// The parameters of a path served without a URI (`served`), if this one is.
    pub served: Option<&'a dyn Params>,
    /// Our VFS is the process's default: it sees every open, not only those naming it.
    pub default_vfs: bool,
}

/// Decides where an open goes. `is_primary_wal` says whether a path is the WAL of a
/// database this process has open as a primary.
pub fn route(
    path: Option<&Path>,
    kind: OpenKind,
    params: &dyn Params,
    serving: &Serving,
    env: &dyn Fn(&str) -> Option<String>,
    is_primary_wal: &dyn Fn(&Path) -> bool,
) -> Route {
    if kind.wal {
        if let Some(p) = path.filter(|p| is_primary_wal(p)) {
            return Route::PrimaryWal(p.to_path_buf());
        }
    }
    let in_uri = params.get("replica_url").is_some() || params.get("vfs").is_some();
    let (params, named) = match serving.served {
        Some(served) if !in_uri => (served, true),
        None if !in_uri && serving.default_vfs => return Route::Base,
        _ => (params, names_a_replica(params, env)),
    };
    let Some(path) = path.filter(|_| kind.main_db && named) else {
        return Route::Base;
    };
    match config(params, env) {
        Ok(c) if c.role == Role::Primary => Route::PrimaryDb(path.to_path_buf(), Box::new(c)),
        Ok(c) => Route::Replica(Box::new(c)),
        Err(e) => Route::Failed(e),
    }
}

/// The configuration of an open, its log level applied.
pub fn config(params: &dyn Params, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let c = Config::from_params(params, env)?;
    c.apply_to_process();
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [(&str, &str); 0] = [];
    const MAIN: OpenKind = OpenKind {
        main_db: true,
        wal: false,
    };
    const WAL: OpenKind = OpenKind {
        main_db: false,
        wal: true,
    };
    const URL: (&str, &str) = ("replica_url", "file:///tmp/r");

    const URI_ONLY: Serving = Serving {
        served: None,
        default_vfs: false,
    };

    fn go(path: Option<&str>, kind: OpenKind, uri: &dyn Params) -> Route {
        let primary_wal = |p: &Path| p == Path::new("/db/app.db-wal");
        route(
            path.map(Path::new),
            kind,
            uri,
            &URI_ONLY,
            &|_| None,
            &primary_wal,
        )
    }

    #[test]
    fn each_open_goes_where_the_table_says() {
        assert!(matches!(
            go(Some("/db/app.db-wal"), WAL, &NONE),
            Route::PrimaryWal(_)
        ));
        assert!(matches!(
            go(Some("/db/other.db-wal"), WAL, &NONE),
            Route::Base
        ));
        assert!(matches!(
            go(Some("/tmp/etilqs_1"), OpenKind::default(), &[URL]),
            Route::Base
        ));
        assert!(
            matches!(go(Some("/db/copy.db"), MAIN, &NONE), Route::Base),
            "VACUUM INTO"
        );
        assert!(
            matches!(go(None, MAIN, &[URL]), Route::Base),
            "an anonymous temp db"
        );
        assert!(matches!(
            go(Some("app.db"), MAIN, &[URL]),
            Route::Replica(_)
        ));
        assert!(
            matches!(
                go(Some("app.db"), MAIN, &[("vfs", "litestream")]),
                Route::Failed(Error::Config { .. })
            ),
            "vfs= alone names a replica; without a URL it is an error to report"
        );
        assert!(matches!(
            go(Some("/db/app.db"), MAIN, &[URL, ("role", "primary")]),
            Route::PrimaryDb(p, c) if p == Path::new("/db/app.db") && c.role == Role::Primary
        ));
        assert!(matches!(
            go(Some("app.db"), MAIN, &[URL, ("poll_interval", "soon")]),
            Route::Failed(Error::Config { .. })
        ));
    }

    #[test]
    fn the_environment_alone_names_a_replica() {
        let env = |k: &str| (k == "LITESTREAM_REPLICA_URL").then(|| "file:///tmp/r".to_string());
        let r = route(
            Some(Path::new("app.db")),
            MAIN,
            &NONE,
            &URI_ONLY,
            &env,
            &|_| false,
        );
        assert!(matches!(r, Route::Replica(_)));
    }

    #[test]
    fn served_paths_and_the_default_vfs() {
        let env = |k: &str| (k == "LITESTREAM_REPLICA_URL").then(|| "file:///tmp/r".to_string());
        let served = [("replica_url", "file:///tmp/s"), ("role", "primary")];
        let go = |uri: &dyn Params, serving: &Serving, kind| {
            route(
                Some(Path::new("/db/app.db")),
                kind,
                uri,
                serving,
                &env,
                &|_| false,
            )
        };
        let this_path = Serving {
            served: Some(&served),
            default_vfs: true,
        };
        let other_path = Serving {
            served: None,
            default_vfs: true,
        };
        assert!(matches!(
            go(&NONE, &this_path, MAIN),
            Route::PrimaryDb(_, c) if c.replica_url == "file:///tmp/s"
        ));
        assert!(
            matches!(go(&NONE, &other_path, MAIN), Route::Base),
            "the default VFS passes every other file on, the environment notwithstanding"
        );
        assert!(
            matches!(go(&[URL], &this_path, MAIN), Route::Replica(c) if c.replica_url == "file:///tmp/r"),
            "a URI that names a replica wins over the served entry"
        );
        assert!(matches!(go(&NONE, &this_path, WAL), Route::Base));
        assert!(matches!(
            go(&NONE, &this_path, OpenKind::default()),
            Route::Base
        ));
    }
}
