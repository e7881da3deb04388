//! Becoming the leader: reconcile the local database, the state file and the replica, then
//! start the copier and the shipper. At the first open of a process, and when a process
//! takes over from a leader that went away (then other processes have the database open,
//! and it is never replaced).
//!
//! | replica | local database | state file | then |
//! |---|---|---|---|
//! | empty | has pages | any | ship a snapshot of it as TXID 1 |
//! | empty | empty | any | ship from TXID 1 as transactions commit |
//! | has TXID M | missing or empty (or `restore=always`), not in use | any | restore it from the replica |
//! | has TXID M | exists | shipped M | go on: ship what the WAL's mirrors and the WAL hold after the shipped position (the whole database as TXID M+1 if they cannot say) |
//! | has TXID M | exists | shipped M, resync pending | ship the whole local database as TXID M+1 (again) |
//! | has TXID M | exists | shipped less, the files after it this database's own | ship the whole local database as TXID M+1 |
//! | has TXID M | exists | other, or none | error, unless `restore=never`: ship the whole local database as TXID M+1 |

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::lease::Lease;
use super::local::LocalDb;
use super::mirror::{mirror_dir, Mirrors, Recovered};
use super::progress::{Published, Publisher};
use super::ship::{self, spool_dir, Leader, Shipper};
use super::state::{DbStamp, Position, State, StateFile};
use super::sums::PageSums;
use super::{beside, Primary};
use crate::config::{Config, RestoreMode, Role};
use crate::error::{Error, Result};
use crate::ltx::Txid;
use crate::replica::plan::{plan, PlanProblem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Nothing anywhere yet.
    Fresh,
    /// Continue after the shipped position.
    Continue(Position),
    /// Replace the local database with the replica's state.
    Restore,
    /// Ship every page of the local database as a file after TXID `after` (0: a snapshot).
    Full { after: u64 },
}

/// How a pass of start-up ended.
enum Pass {
    /// The leader and its shipper, ready to start.
    Ready(Box<(Leader, Shipper)>),
    /// Restore the local database from the replica, then read it again.
    Restore,
    /// The whole database is to be read: again, with checkpoints held off.
    HoldCheckpoints,
}

/// What start-up knows when it decides.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// The newest TXID of the replica, None when it is empty.
    pub replica_max: Option<u64>,
    /// The local database has pages.
    pub local_has_pages: bool,
    /// The state file, if it is about this replica.
    pub saved: Option<&'a State>,
    /// The replica's files after the state file's TXID were written by this database (the
    /// state lagged: it is synced at most every second).
    pub ours_after: bool,
    pub mode: RestoreMode,
    /// Other connections have the database open: it must not be replaced.
    pub in_use: bool,
}

/// How a leader starts, or why it cannot (the table in the module's doc).
pub(super) fn decide(f: &Facts) -> std::result::Result<Start, String> {
    let Some(m) = f.replica_max else {
        return Ok(if f.local_has_pages {
            Start::Full { after: 0 }
        } else {
            Start::Fresh
        });
    };
    let wants_restore =
        f.mode == RestoreMode::Always || (!f.local_has_pages && f.mode != RestoreMode::Never);
    if wants_restore {
        if f.in_use {
            return Err(format!(
                "the replica is at TXID {}, and the local database would be restored from it, but other connections have it open",
                Txid::new(m)
            ));
        }
        return Ok(Start::Restore);
    }
    match f.saved {
        // A resync that had not landed when the process stopped: do it again.
        Some(s) if s.shipped.txid == m && s.resync => Ok(Start::Full { after: m }),
        Some(s) if s.shipped.txid == m => Ok(Start::Continue(s.shipped)),
        Some(s) if s.shipped.txid < m && f.ours_after => Ok(Start::Full { after: m }),
        _ if f.mode == RestoreMode::Never => Ok(Start::Full { after: m }),
        other => Err(format!(
            "the replica is at TXID {}, {}",
            Txid::new(m),
            match other {
                Some(s) => format!(
                    "this database shipped up to TXID {}",
                    Txid::new(s.shipped.txid)
                ),
                None => "and this database was never shipped to it".into(),
            }
        )),
    }
}

/// What start-up knows of the replica and of this database's state file, before it
/// decides.
struct Known {
    state_file: StateFile,
    /// The state file, if it is about this replica, with an upload in flight settled.
    saved: Option<State>,
    /// The replica's newest TXID (None: empty, or unknown while the store is down).
    replica_max: Option<u64>,
    /// The replica's files after the state file's TXID are this database's own.
    ours_after: bool,
    node_id: u64,
    /// An upload in flight that did not land: the first file ships that range again, up
    /// to this WAL position.
    until: Option<super::wal::WalPos>,
}

/// Makes this process the leader of `p` (it holds `lease`): reconcile, then start the
/// tasks. `takeover`: another leader went away while this process had the database open.
pub(super) fn lead(p: &Arc<Primary>, lease: Lease, takeover: bool) -> Result<()> {
    let config = &p.config;
    let Known {
        state_file,
        saved,
        replica_max,
        ours_after,
        node_id,
        until,
    } = survey(p)?;
    let hold = config.open_timeout.max(Duration::from_secs(5));
    let decide_now = |local: &LocalDb, restored: bool| {
        if restored {
            return Ok(Start::Restore);
        }
        let facts = Facts {
            replica_max,
            local_has_pages: local.commit > 0,
            saved: saved.as_ref(),
            ours_after,
            mode: config.primary.restore,
            in_use: takeover || local.in_use(),
        };
        decide(&facts).map_err(|why| {
            Error::config(
                "restore",
                format!(
                    "the local database {} and the replica {} disagree: {why}; open with restore=always to replace the local database from the replica, or restore=never to ship the local database over it",
                    p.db_path.display(),
                    config.replica_url,
                ),
            )
        })
    };
    // Each pass reads the local database and decides; some decisions need another pass.
    // A restore replaces the database file: done between passes, then everything is read
    // from the new one. Reading the whole database (a full file, or the checksums of every
    // page) needs one state of it: checkpoints are held off meanwhile. Another process's
    // WAL restart may be waiting for a leader's copy, holding the checkpointer lock: say
    // that a whole database ships next, so that it goes ahead (nothing it drops can be
    // missed then). Whether the whole database is read is known only once decided (a
    // leader that goes on learns it from the mirrors): then the pass is made again, holding
    // checkpoints off.
    let mut whole = config.primary.checksum;
    let mut restored = None;
    let mut owned = Some((lease, state_file));
    // How the last close left the database file: a leader that goes on checks it, and
    // every leader keeps it for the next.
    let left = saved.as_ref().and_then(|s| s.left);
    // Why the mirrors could not say what changed, found by a pass that did not hold
    // checkpoints off: taking them up deleted them, so the next pass does not look again.
    let mut unknown = None;
    let (leader, shipper) = loop {
        if whole {
            let announce = Published {
                pid: std::process::id(),
                replica_url: config.replica_url.clone(),
                checksum: config.primary.checksum,
                resync_pending: true,
                ..Default::default()
            };
            Publisher::open(&p.meta_dir)?.write(&announce)?;
        }
        let pass = p.with_database(whole.then_some(hold), |db| {
            let local = LocalDb::open(db, &p.db_path)?;
            let start = decide_now(&local, restored.is_some())?;
            if start == Start::Restore && restored.is_none() {
                return Ok(Pass::Restore);
            }
            let (start, mirrors, why) = match (start, unknown.take()) {
                (Start::Continue(pos), Some(why)) => {
                    (Start::Full { after: pos.txid }, None, Some(why))
                }
                (start, _) => take_up(p, start, &local, left)?,
            };
            if matches!(start, Start::Full { .. }) && !whole {
                unknown = why;
                return Ok(Pass::HoldCheckpoints);
            }
            if let Some(why) = why {
                crate::log_warn!(
                    "litestream: {}: {why}; shipping the whole database",
                    p.db_path.display()
                );
            }
            let (lease, state_file) = owned.take().expect("prepared once");
            let prepared = prepare(
                p,
                lease,
                start,
                left,
                mirrors,
                local,
                restored,
                replica_max,
                node_id,
                until,
                state_file,
            )?;
            Ok(Pass::Ready(Box::new(prepared)))
        })?;
        match pass {
            Pass::Ready(prepared) => break *prepared,
            Pass::HoldCheckpoints => whole = true,
            Pass::Restore => {
                *p.db.lock() = None;
                p.pinned.store(false, std::sync::atomic::Ordering::Release);
                let (pos, progress) = restore(&p.db_path, config)?;
                *p.restored.lock() = progress;
                restored = Some(pos);
            }
        }
    };
    let leader = Arc::new(leader);
    if p.leader.set(leader.clone()).is_err() {
        return Err(Error::Internal("a second leader in one process".into()));
    }
    ship::start(p, shipper)?;
    super::compact::start(p)?;
    // Something to ship already (a snapshot, or transactions left by a crash): start now.
    leader.note_write_end();
    crate::log_info!(
        "litestream: {}: this process ships to {}{}",
        p.db_path.display(),
        config.replica_url,
        if takeover { " (took over)" } else { "" }
    );
    Ok(())
}

/// A leader that goes on takes up the WAL's mirrors: what committed after the shipped
/// position must be in them or in the WAL itself. When it is in neither, what changed since
/// cannot be known, and the whole database ships instead (the third value says why).
fn take_up(
    p: &Primary,
    start: Start,
    local: &LocalDb<'_>,
    left: Option<DbStamp>,
) -> Result<(Start, Option<Mirrors>, Option<String>)> {
    let Start::Continue(pos) = start else {
        return Ok((start, None, None));
    };
    let dir = mirror_dir(&p.meta_dir);
    let untouched = left.is_some() && left == DbStamp::of(&p.db_path);
    Ok(
        match Mirrors::recover(&dir, &p.db_path, pos.wal, local.index, untouched)? {
            Recovered::Mirrors(m) => (start, Some(m), None),
            Recovered::Unknown(why) => (Start::Full { after: pos.txid }, None, Some(why)),
        },
    )
}

/// The effects of the decision: restore or snapshot as needed, and build the leader and
/// its shipper on the mirrors taken up (fresh ones if none).
#[allow(clippy::too_many_arguments)]
fn prepare(
    p: &Primary,
    lease: Lease,
    start: Start,
    left: Option<DbStamp>,
    mirrors: Option<Mirrors>,
    local: LocalDb<'_>,
    restored: Option<Position>,
    replica_max: Option<u64>,
    node_id: u64,
    until: Option<super::wal::WalPos>,
    mut state_file: StateFile,
) -> Result<(Leader, Shipper)> {
    let config = &p.config;
    let meta_dir = &p.meta_dir;
    let (mut local, shipped) = match start {
        Start::Restore => (local, restored),
        Start::Continue(pos) => (local, Some(pos)),
        Start::Fresh | Start::Full { .. } => (local, None),
    };

    let mirrors = match mirrors {
        Some(m) => m,
        None => Mirrors::fresh(&mirror_dir(meta_dir), &p.db_path, local.wal_position())?,
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
        until: None,
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
        left,
    };
    sh.txid = state.shipped.txid;
    match start {
        Start::Continue(pos) => {
            sh.cursor = pos.wal;
            sh.until = until;
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
                spool_dir(meta_dir).join(format!("{}-{}.ltx", Txid::new(min), Txid::new(min)));
            let pages = local.pgnos().map(|pg| local.page(pg).map(|d| (pg, d)));
            let (body, post) = ship::write_ltx(&path, h, pages, &mut sh.sums)?;
            let at = local.wal_position();
            let seq = at.and_then(|a| mirrors.generation_of((a.salt1, a.salt2)).map(|g| g.seq));
            sh.enqueue(body, min, min, post, at, seq);
        }
    }
    state_file.save(&state, true)?;

    let mut published = Published {
        pid: std::process::id(),
        replica_url: config.replica_url.clone(),
        checksum: config.primary.checksum,
        shipped_txid: state.shipped.txid,
        ..Default::default()
    };
    published.remember(&mirrors.generations());
    published.copied = mirrors.copied();
    published.shipped = state.shipped.wal.and_then(|w| {
        mirrors
            .generation_of((w.salt1, w.salt2))
            .map(|g| (g.seq, w))
    });
    published.counters.encoded_txid = sh.txid;
    published.counters.pending_files = sh.queue.len();
    let mut publisher = Publisher::open(meta_dir)?;
    publisher.write(&published)?;
    let feed = super::feed::Feed::new(config.manifest);
    let leader = Leader::new(
        lease, node_id, state, state_file, mirrors, published, publisher, feed,
    );
    Ok((leader, sh))
}

/// Replaces the local database (and its WAL) with the replica's newest state; also returns
/// the cold-start engine's figures.
fn restore(db_path: &Path, config: &Config) -> Result<(Position, Option<serde_json::Value>)> {
    let mut rc = config.clone();
    rc.role = Role::Replica;
    rc.time = None;
    rc.poll_interval = Duration::from_secs(3600);
    let replica = crate::replica::Replica::open(&rc)?;
    let snap = replica.current();
    for p in [beside(db_path, "-wal"), beside(db_path, "-shm")] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", p.display()), e))
            }
            _ => {}
        }
    }
    crate::replica::restore::write_database(&replica, &snap, db_path, &|| false)?;
    crate::log_info!(
        "litestream: restored {} from {} at TXID {}",
        db_path.display(),
        config.replica_url,
        snap.txid
    );
    let position = Position {
        txid: snap.txid.get(),
        checksum: snap.checksum.unwrap_or(0),
        wal: None,
    };
    Ok((position, replica.progress.to_json()))
}

/// Reads the state file and lists the replica: what `lead` decides from.
fn survey(p: &Primary) -> Result<Known> {
    let config = &p.config;
    let meta_dir = &p.meta_dir;
    let io = |what: &str, at: &Path| {
        let what = format!("{what} {}", at.display());
        move |e| Error::io(what, e)
    };
    std::fs::create_dir_all(spool_dir(meta_dir)).map_err(io("creating", meta_dir))?;
    // Files spooled by a leader that stopped: the mirrors and the WAL still hold their
    // transactions.
    if let Ok(entries) = std::fs::read_dir(spool_dir(meta_dir)) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let (state_file, saved) = StateFile::open(meta_dir)?;
    let mut saved = saved.filter(|s| s.replica_url == config.replica_url);
    let store = p.store.clone();
    let listed = match crate::runtime::block_on(async move { store.list_all().await }) {
        Ok(listed) => Some(listed),
        // The store does not answer, and this database has shipped to it before: go on
        // from where the state file says shipping stopped (the claims keep another primary
        // out), so that the database opens and commits while the store is down.
        Err(e) if saved.as_ref().is_some_and(|s| !s.resync) => {
            crate::log_warn!(
                "litestream: {}: {e}; going on from TXID {} as shipped before",
                p.db_path.display(),
                Txid::new(saved.as_ref().map_or(0, |s| s.shipped.txid))
            );
            None
        }
        Err(e) => return Err(e),
    };
    // The claims that keep a second primary out are create-only writes: a store that
    // ignores the condition would let two primaries ship over each other, silently.
    if listed.is_some() && config.primary.check_conditional_writes && !p.store.is_local() {
        let store = p.store.clone();
        if !crate::runtime::block_on(async move { store.honours_create_only().await })? {
            return Err(Error::Unconditional {
                url: config.replica_url.clone(),
            });
        }
    }
    let planned = match listed.as_deref().map(|l| plan(l, None)) {
        Some(Ok(pl)) => Some(pl),
        Some(Err(PlanProblem::Empty)) | None => None,
        Some(Err(problem)) => return Err(problem.into_error(config.replica_url.clone())),
    };
    let replica_max = match &listed {
        Some(_) => planned.as_ref().and_then(|pl| pl.max_txid()).map(Txid::get),
        None => saved.as_ref().map(|s| s.shipped.txid).filter(|&t| t > 0),
    };
    let until = saved.as_mut().and_then(|s| {
        let (min, after) = s.in_flight?;
        let landed = listed.as_ref().is_some_and(|l| {
            l.iter()
                .any(|f| f.min.get() == min && f.max.get() == after.txid)
        });
        settle_in_flight(s, landed)
    });
    let node_id = saved.as_ref().map_or_else(random_u64, |s| s.node_id);
    // The state file may lag the replica by the uploads since its last sync (a power
    // failure): files after it that this database wrote are its own, not a disagreement.
    let ours_after = match (&saved, &planned) {
        (Some(s), Some(pl)) if Some(s.shipped.txid) < replica_max => {
            let newer: Vec<_> = pl
                .files
                .iter()
                .filter(|f| f.max.get() > s.shipped.txid)
                .collect();
            let store = p.store.clone();
            let ends = [
                newer.first().copied().cloned(),
                newer.last().copied().cloned(),
            ];
            crate::runtime::block_on(async move {
                for f in ends.into_iter().flatten() {
                    let head = store
                        .read_range(&f, 0..crate::ltx::HEADER_SIZE as u64)
                        .await?;
                    match crate::ltx::Header::decode(&head) {
                        Ok(h) if h.node_id == node_id => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            })?
        }
        _ => false,
    };
    Ok(Known {
        state_file,
        saved,
        replica_max,
        ours_after,
        node_id,
        until,
    })
}

/// An upload in flight when the last leader stopped (`s.in_flight`, taken): if it
/// `landed`, shipping reached its end; if not (or the store cannot say), the first file
/// ships that range again, up to the returned WAL position, when it follows on from what
/// shipped (its claim may be in the store already, so the range must be the same).
fn settle_in_flight(s: &mut State, landed: bool) -> Option<super::wal::WalPos> {
    let (min, after) = s.in_flight.take()?;
    if landed {
        s.shipped = after;
        s.resync = false;
        None
    } else if min == s.shipped.txid + 1 && !s.resync {
        after.wal
    } else {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(txid: u64, resync: bool) -> State {
        State {
            replica_url: "file:///r".into(),
            node_id: 1,
            shipped: Position {
                txid,
                checksum: 0,
                wal: None,
            },
            in_flight: None,
            resync,
            left: None,
        }
    }

    fn facts(replica_max: Option<u64>, local: bool, saved: Option<&State>) -> Facts<'_> {
        Facts {
            replica_max,
            local_has_pages: local,
            saved,
            ours_after: false,
            mode: RestoreMode::IfMissing,
            in_use: false,
        }
    }

    #[test]
    fn an_upload_in_flight_at_a_stop_is_settled() {
        let wal = crate::primary::wal::WalPos {
            salt1: 1,
            salt2: 2,
            ckpt_seq: 0,
            offset: 4128,
            cksum1: 3,
            cksum2: 4,
        };
        let after = Position {
            txid: 7,
            checksum: 9,
            wal: Some(wal),
        };
        let flying = |min: u64, resync: bool| State {
            in_flight: Some((min, after)),
            ..state(5, resync)
        };
        // It landed: shipping reached its end, a pending resync with it.
        let mut s = flying(6, true);
        assert_eq!(settle_in_flight(&mut s, true), None);
        assert_eq!((s.shipped, s.resync, s.in_flight), (after, false, None));
        // It did not: the same range ships again, up to the same WAL position.
        let mut s = flying(6, false);
        assert_eq!(settle_in_flight(&mut s, false), Some(wal));
        assert_eq!((s.shipped.txid, s.in_flight), (5, None));
        // Not following on from what shipped, or a whole database pending: start afresh.
        assert_eq!(settle_in_flight(&mut flying(8, false), false), None);
        assert_eq!(settle_in_flight(&mut flying(6, true), false), None);
        // Nothing in flight.
        assert_eq!(settle_in_flight(&mut state(5, false), false), None);
    }

    #[test]
    fn the_start_up_table_row_by_row() {
        use Start::*;
        let (s5, r5, s3) = (state(5, false), state(5, true), state(3, false));
        // Empty replica.
        assert_eq!(decide(&facts(None, true, None)), Ok(Full { after: 0 }));
        assert_eq!(decide(&facts(None, false, Some(&s5))), Ok(Fresh));
        // Missing local database: restored, unless other connections have it open.
        assert_eq!(decide(&facts(Some(5), false, None)), Ok(Restore));
        let in_use = Facts {
            in_use: true,
            ..facts(Some(5), false, None)
        };
        assert!(decide(&in_use).unwrap_err().contains("other connections"));
        // restore=always replaces even a database that agrees.
        let always = Facts {
            mode: RestoreMode::Always,
            ..facts(Some(5), true, Some(&s5))
        };
        assert_eq!(decide(&always), Ok(Restore));
        // Agreeing state: go on; a pending resync is done again.
        assert_eq!(
            decide(&facts(Some(5), true, Some(&s5))),
            Ok(Continue(s5.shipped))
        );
        assert_eq!(
            decide(&facts(Some(5), true, Some(&r5))),
            Ok(Full { after: 5 })
        );
        // The state file lagged behind files this database wrote itself: ship it whole.
        let lagged = Facts {
            ours_after: true,
            ..facts(Some(5), true, Some(&s3))
        };
        assert_eq!(decide(&lagged), Ok(Full { after: 5 }));
        // Disagreement: an error naming both TXIDs, unless restore=never.
        let why = decide(&facts(Some(5), true, Some(&s3))).unwrap_err();
        assert!(
            why.contains("0000000000000005") && why.contains("0000000000000003"),
            "{why}"
        );
        assert!(decide(&facts(Some(5), true, None))
            .unwrap_err()
            .contains("never shipped"));
        let never = Facts {
            mode: RestoreMode::Never,
            ..facts(Some(5), true, Some(&s3))
        };
        assert_eq!(decide(&never), Ok(Full { after: 5 }));
        // restore=never with a missing local database ships the empty one over it.
        let never_empty = Facts {
            mode: RestoreMode::Never,
            ..facts(Some(5), false, None)
        };
        assert_eq!(decide(&never_empty), Ok(Full { after: 5 }));
    }
}
