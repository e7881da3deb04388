//! The poller: one tokio task per replica that lists new files and publishes newer
//! snapshots. It lists L0, L1 and the snapshot level after the last file it saw in each
//! (start-after listing), extends the chain with files that start at the next TXID, and
//! re-points pages onto compacted files and snapshots that cover files of the chain, so
//! that Litestream may delete those files under us. When the chain cannot be extended
//! although newer files exist (files deleted before we saw their replacements), or a reader
//! found a file gone (`Replica::catch_up_now`), it re-plans from a full listing
//! instead of wedging.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use super::{Planner, Replica};
use crate::error::{Error, Result};
use crate::storage::layout::SNAPSHOT_LEVEL;
use crate::storage::FileInfo;

/// Levels listed on every poll.
const POLLED_LEVELS: [u8; 3] = [0, 1, SNAPSHOT_LEVEL];

pub(super) fn start(replica: &Arc<Replica>) -> Result<()> {
    let weak = Arc::downgrade(replica);
    crate::runtime::handle()?.spawn(run(weak));
    Ok(())
}

async fn run(weak: Weak<Replica>) {
    loop {
        let Some(replica) = weak.upgrade() else {
            return;
        };
        let interval = replica.settings().poll_interval;
        let wake = async {
            replica.wake.notified().await;
        };
        // Sleep for one interval, or until someone asks for an early poll.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake => {}
        }
        let result = poll_once(&replica).await;
        let mut status = replica.status.lock();
        status.polls += 1;
        status.last_poll = Some(SystemTime::now());
        match result {
            Ok(()) => {
                status.last_error = None;
                status.last_success = status.last_poll;
            }
            Err(e) => {
                crate::log_warn!("poll of {} failed: {e}", replica.store.url());
                status.last_error = Some(e.to_string());
            }
        }
        drop(status);
        // Do not keep the replica alive while sleeping: the last connection may close.
        drop(replica);
    }
}

async fn poll_once(replica: &Arc<Replica>) -> Result<()> {
    let mut planner = replica.planner.lock().await;
    poll_planned(replica, &mut planner).await
}

/// One poll, with the planner held.
pub(super) async fn poll_planned(replica: &Arc<Replica>, planner: &mut Planner) -> Result<()> {
    for level in POLLED_LEVELS {
        let after = planner.last_listed.get(&level).cloned();
        let listed = replica.store.list_level(level, after.as_ref()).await?;
        if let Some(newest) = listed.iter().max_by_key(|f| f.name()) {
            planner.last_listed.insert(level, newest.clone());
        }
        for f in &listed {
            crate::log_debug!("listed {f}");
        }
        planner.pending.extend(listed);
    }
    let start = replica.current();
    let mut snap = (*start).clone();
    let mut moved = Vec::new();

    // Extend the chain: at each step take the file that starts at the next TXID and reaches
    // furthest (a compacted file over many L0 files when there is one).
    loop {
        let next = snap.txid.get() + 1;
        let Some(f) = best_start(&planner.pending, next) else {
            break;
        };
        let file = match replica.load(planner, &f).await {
            Ok(file) => file,
            Err(Error::NotFound { .. }) => {
                // Deleted between listing and loading (compacted away): forget it and
                // rebuild from what the replica holds now.
                planner.pending.retain(|p| p != &f);
                if snap.txid != start.txid {
                    replica.publish(snap, &moved);
                }
                return replica.replan(planner, false).await;
            }
            Err(e) => return Err(e),
        };
        super::files::check_page_size(&replica.store, &file, snap.page_size)?;
        crate::log_debug!("apply {f}");
        replica.cache_whole_file(&file, None);
        let (s, m) = snap.apply(&file);
        snap = s;
        moved.extend(m);
    }
    let stuck = planner.pending.iter().any(|f| f.min > snap.txid);
    if stuck && best_start(&planner.pending, snap.txid.get() + 1).is_none() {
        // Newer files exist but none continues our chain: what continued it was compacted
        // and deleted before we listed it. Rebuild from a full listing.
        if snap.txid != start.txid {
            replica.publish(snap, &moved);
        }
        return replica.replan(planner, false).await;
    }

    // Re-point onto compacted files and snapshots that now cover files of the chain,
    // highest level first (a snapshot replaces most).
    let mut covering: Vec<FileInfo> = planner
        .pending
        .iter()
        .filter(|f| f.level > 0 && snap.can_repoint(f))
        .cloned()
        .collect();
    covering.sort_by_key(|f| std::cmp::Reverse((f.level, f.max)));
    for f in covering {
        if snap.can_repoint(&f) {
            let file = match replica.load(planner, &f).await {
                Ok(file) => file,
                Err(Error::NotFound { .. }) => {
                    planner.pending.retain(|p| p != &f);
                    continue;
                }
                Err(e) => return Err(e),
            };
            crate::log_debug!("repoint onto {f}");
            let (s, m) = snap.repoint(&file);
            snap = s;
            moved.extend(m);
        }
    }
    let txid = snap.txid;
    planner.pending.retain(|f| f.max > txid);
    if snap.txid != start.txid || snap.chain != start.chain {
        replica.publish(snap, &moved);
    }
    Ok(())
}

/// Among `files`, the one starting at `next` that reaches furthest (higher level on ties).
fn best_start(files: &[FileInfo], next: u64) -> Option<FileInfo> {
    files
        .iter()
        .filter(|f| f.min.get() == next)
        .max_by_key(|f| (f.max, f.level))
        .cloned()
}
