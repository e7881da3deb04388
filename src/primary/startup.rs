//! Starting a primary: reconcile the local database, the state file and the replica, then
//! start the shipper.
//!
//! | replica | local database | state file | then |
//! |---|---|---|---|
//! | empty | has pages | any | ship a snapshot of it as TXID 1 |
//! | empty | empty | any | ship from TXID 1 as transactions commit |
//! | has TXID M | missing (or `restore=always`) | any | restore it from the replica |
//! | has TXID M | exists | shipped M | go on: ship what the WAL's mirrors and the WAL hold after the shipped position (the whole database as TXID M+1 if they cannot say) |
//! | has TXID M | exists | shipped M, resync pending | ship the whole local database as TXID M+1 (again) |
//! | has TXID M | exists | other, or none | error, unless `restore=never`: ship the whole local database as TXID M+1 |

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::local::LocalDb;
use super::mirror::{mirror_dir, Mirrors};
use super::ship::{self, spool_dir, Shipper};
use super::state::{Position, State, StateFile};
use super::sums::PageSums;
use super::{beside, Primary, Progress};
use crate::config::{Config, RestoreMode, Role};
use crate::error::{Error, Result};
use crate::ltx::Txid;
use crate::replica::plan::{plan, PlanProblem};
use crate::storage::url::Timeouts;
use crate::storage::Store;

enum Start {
    /// Nothing anywhere yet.
    Fresh,
    /// Continue after the shipped position.
    Continue(Position),
    /// Replace the local database with the replica's state.
    Restore,
    /// Ship every page of the local database as a file after TXID `after` (0: a snapshot).
    Full { after: u64 },
}

pub fn start(db_path: &Path, config: &Config) -> Result<Arc<Primary>> {
    let meta_dir = Primary::meta_dir_for(db_path, config);
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e| Error::io(what, e)
    };
    std::fs::create_dir_all(spool_dir(&meta_dir)).map_err(io("creating", &meta_dir))?;
    // Files spooled by a process that crashed: the mirrors and the WAL still hold their
    // transactions.
    if let Ok(entries) = std::fs::read_dir(spool_dir(&meta_dir)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let store = Arc::new(Store::open(
        &config.replica_url,
        Timeouts {
            retry_for: config.open_timeout,
        },
    )?);
    let s2 = store.clone();
    let listed = crate::runtime::block_on(async move { s2.list_all().await })?;
    let replica_max = match plan(&listed, None) {
        Ok(p) => p.max_txid().map(Txid::get),
        Err(PlanProblem::Empty) => None,
        Err(problem) => {
            return Err(Error::NoState {
                url: config.replica_url.clone(),
                reason: format!("cannot continue this replica: {problem:?}"),
            })
        }
    };

    let wal_path = beside(db_path, "-wal");
    let (mut state_file, saved) = StateFile::open(&meta_dir)?;
    let mut saved = saved.filter(|s| s.replica_url == config.replica_url);
    if let Some(s) = &mut saved {
        // An upload in flight when the process stopped: did it land?
        if let Some((min, after)) = s.in_flight.take() {
            if listed
                .iter()
                .any(|f| f.min.get() == min && f.max.get() == after.txid)
            {
                s.shipped = after;
                s.resync = false;
            }
        }
    }
    let local = LocalDb::open(db_path, &wal_path)?;
    let mode = config.primary.restore;
    let start = match replica_max {
        None if local.commit > 0 => Start::Full { after: 0 },
        None => Start::Fresh,
        Some(_) if mode == RestoreMode::Always => Start::Restore,
        Some(_) if local.commit == 0 && mode != RestoreMode::Never => Start::Restore,
        Some(m) => match &saved {
            // A resync that had not landed when the process stopped: do it again.
            Some(s) if s.shipped.txid == m && s.resync => Start::Full { after: m },
            Some(s) if s.shipped.txid == m => Start::Continue(s.shipped),
            _ if mode == RestoreMode::Never => Start::Full { after: m },
            other => {
                return Err(Error::config(
                    "restore",
                    format!(
                        "the local database {} and the replica {} disagree: the replica is at TXID {}, {}; open with restore=always to replace the local database from the replica, or restore=never to ship the local database over it",
                        db_path.display(),
                        config.replica_url,
                        Txid::new(m),
                        match other {
                            Some(s) => format!("this database shipped up to TXID {}", Txid::new(s.shipped.txid)),
                            None => "and this database was never shipped to it".into(),
                        }
                    ),
                ))
            }
        },
    };

    let node_id = saved.as_ref().map_or_else(random_u64, |s| s.node_id);
    let (local, shipped) = match start {
        Start::Restore => {
            let pos = restore(db_path, &wal_path, config)?;
            (LocalDb::open(db_path, &wal_path)?, Some(pos))
        }
        Start::Continue(pos) => (local, Some(pos)),
        Start::Fresh | Start::Full { .. } => (local, None),
    };

    let mut start = start;
    let dir = mirror_dir(&meta_dir);
    let mut mirrors = None;
    if let Start::Continue(pos) = &start {
        // What committed after the shipped position must be in the WAL's mirrors or in
        // the WAL itself; otherwise what changed since cannot be known.
        match Mirrors::recover(&dir, &wal_path, pos.wal)? {
            Ok(m) => mirrors = Some(m),
            Err(why) => {
                crate::log_warn!(
                    "litestream: {}: {why}; shipping the whole database",
                    db_path.display()
                );
                start = Start::Full { after: pos.txid };
            }
        }
    }
    let mirrors = match mirrors {
        Some(m) => m,
        None => Mirrors::fresh(&dir, &wal_path, local.wal_position())?,
    };
    let mut sums = config
        .primary
        .checksum
        .then(|| PageSums::new(local.page_size.max(512)));
    // The checksum of the whole local database; a full file computes it as it is written.
    if let (Some(s), false) = (sums.as_mut(), matches!(start, Start::Full { .. })) {
        for pgno in local.pgnos() {
            s.set(pgno, &local.page(pgno)?);
        }
    }
    let mut sh = Shipper {
        cursor: None,
        txid: 0,
        page_size: local.page_size,
        sums,
        chain: None,
        queue: Default::default(),
    };
    let state = State {
        replica_url: config.replica_url.clone(),
        node_id,
        shipped: shipped.unwrap_or(Position {
            txid: replica_max.unwrap_or(0),
            checksum: 0,
            wal: None,
        }),
        in_flight: None,
        resync: matches!(start, Start::Full { .. }),
    };
    sh.txid = state.shipped.txid;
    match start {
        Start::Continue(pos) => {
            sh.cursor = pos.wal;
            let unshipped = mirrors.has_more(sh.cursor)
                || local.wal_end.is_some_and(|end| Some(end) != sh.cursor);
            let here = sh.sums.as_ref().map(PageSums::checksum);
            sh.chain = match pos.checksum {
                0 if !unshipped => here,
                0 => None,
                known => Some(known),
            };
        }
        Start::Restore | Start::Fresh => {
            sh.cursor = local.wal_position();
            sh.chain = if sh.txid == 0 {
                Some(0)
            } else {
                sh.sums.as_ref().map(PageSums::checksum)
            };
        }
        Start::Full { after } => {
            let min = after + 1;
            // A snapshot starts from nothing (pre-apply 0). On top of an existing replica
            // the checksum of its state is not known here (`chain` is None), so that file
            // carries none.
            let h = ship::header(&sh, node_id, local.commit, min, min, crate::clock::now_ms());
            let path =
                spool_dir(&meta_dir).join(format!("{}-{}.ltx", Txid::new(min), Txid::new(min)));
            let pages = local.pgnos().map(|pg| local.page(pg).map(|d| (pg, d)));
            let post = ship::write_ltx(&path, h, pages, &mut sh.sums)?;
            sh.enqueue(path, min, min, post, local.wal_position());
        }
    }
    state_file.save(&state, true)?;

    let pending = sh.queue.len();
    let primary = Arc::new(Primary {
        db_path: db_path.to_path_buf(),
        wal_path,
        meta_dir,
        config: config.clone(),
        store,
        node_id,
        notes: AtomicU64::new(0),
        last_note_ms: AtomicI64::new(crate::clock::now_ms()),
        progress: Mutex::new(Progress {
            shipped: Some(state.shipped),
            encoded_txid: sh.txid,
            pending_files: pending,
            ..Progress::default()
        }),
        shipped_cv: Condvar::new(),
        state: Mutex::new((state, state_file)),
        mirrors: Mutex::new(mirrors),
        wake: Arc::new(tokio::sync::Notify::new()),
        copier_idle: AtomicBool::new(true),
        restart_refused: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        copied: Arc::new(tokio::sync::Notify::new()),
        hurry: Arc::new(tokio::sync::Notify::new()),
        opened_at: std::time::SystemTime::now(),
    });
    ship::start(&primary, sh)?;
    super::compact::start(&primary)?;
    // Something to ship already (a snapshot, or transactions left by a crash): start now.
    primary.note_write_end();
    Ok(primary)
}

/// Replaces the local database (and its WAL) with the replica's newest state.
fn restore(db_path: &Path, wal_path: &Path, config: &Config) -> Result<Position> {
    let mut rc = config.clone();
    rc.role = Role::Replica;
    rc.time = None;
    rc.poll_interval = Duration::from_secs(3600);
    let replica = crate::replica::Replica::open(&rc)?;
    let snap = replica.current();
    for p in [wal_path.to_path_buf(), beside(db_path, "-shm")] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", p.display()), e))
            }
            _ => {}
        }
    }
    crate::replica::restore::write_database(&replica, &snap, db_path)?;
    crate::log_info!(
        "litestream: restored {} from {} at TXID {}",
        db_path.display(),
        config.replica_url,
        snap.txid
    );
    Ok(Position {
        txid: snap.txid.get(),
        checksum: snap.checksum.unwrap_or(0),
        wal: None,
    })
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}
