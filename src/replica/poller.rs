//! The poller: one tokio task per replica that lists new files and publishes newer
//! snapshots. It lists L0, L1 and the snapshot level after the last file it saw in each
//! (start-after listing), extends the chain with files that start at the next TXID, and
//! re-points pages onto compacted files and snapshots that cover files of the chain, so
//! that Litestream may delete those files under us. When the chain cannot be extended
//! although newer files exist (files deleted before we saw their replacements), or a reader
//! found a file gone (`Replica::catch_up_now`), it re-plans from a full listing
//! instead of wedging.
//!
//! Polls cost LIST requests, the most expensive kind. A replica nobody reads backs off: each
//! poll that finds nothing, with no read transaction started or held since the one before,
//! doubles the wait, up to `poll_interval_max`; a poll that finds something, or any reading,
//! brings it back to `poll_interval`. A read transaction that starts while the poller is
//! backed off and its last poll is older than `poll_interval` polls first
//! (`Replica::fresh_for_reading`), so a reader never sees a state older than one interval
//! because it was idle before.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use super::feed::{Poll, Source};
use super::{Planner, Replica};
use crate::error::{Error, Result};
use crate::storage::layout::SNAPSHOT_LEVEL;
use crate::storage::{manifest, FileInfo};

/// Levels listed on every poll.
const POLLED_LEVELS: [u8; 3] = [0, 1, SNAPSHOT_LEVEL];

pub(super) fn start(replica: &Arc<Replica>) -> Result<()> {
    let weak = Arc::downgrade(replica);
    crate::runtime::handle()?.spawn(run(weak));
    Ok(())
}

async fn run(weak: Weak<Replica>) {
    let mut interval = None;
    loop {
        let Some(replica) = weak.upgrade() else {
            return;
        };
        let settings = replica.settings();
        let wait = jittered(interval.unwrap_or(settings.poll_interval));
        let wake = async {
            replica.wake.notified().await;
        };
        // Sleep for one interval, or until someone asks for an early poll (a reader after
        // an idle spell, or one that found a file gone: activity either way).
        let woken = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = wake => true,
        };
        let reads_before = replica.reads_started();
        let txid_before = replica.current().txid;
        // A poll sees what was there when it began: its age counts from then
        // (`Replica::fresh_for_reading`), not from when a slow listing ended.
        let started = SystemTime::now();
        let result = poll_once(&replica, woken).await;
        let quiet = !woken
            && matches!(result, Ok(0))
            && replica.current().txid == txid_before
            && replica.reads_started() == reads_before
            && !replica.retention.any_pinned();
        let next = next_interval(
            wait,
            quiet,
            settings.poll_interval,
            settings.poll_interval_max,
        );
        replica.backed_off.store(
            next > settings.poll_interval,
            std::sync::atomic::Ordering::Relaxed,
        );
        interval = Some(next);
        let result = result.map(|_| ());
        let mut status = replica.status.lock();
        status.polls += 1;
        status.last_poll = Some(started);
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

/// `d` give or take a tenth, so that replicas opened together do not keep polling together
/// (a thousand of them would hit the store in bursts).
fn jittered(d: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos()),
    );
    let spread = (h.finish() % 2001) as f64 / 10_000.0; // 0 to 0.2
    d.mul_f64(0.9 + spread)
}

/// The wait before the next poll: `base` after activity, else double the last wait, at
/// most `max` (`max` not above `base`: no backing off).
fn next_interval(
    last: std::time::Duration,
    quiet: bool,
    base: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    if quiet && max > base {
        (last * 2).clamp(base, max)
    } else {
        base
    }
}

/// One poll (`woken`: a reader asked for it); returns how many new files it listed.
async fn poll_once(replica: &Arc<Replica>, woken: bool) -> Result<usize> {
    let mut planner = replica.planner.lock().await;
    poll_planned(replica, &mut planner, woken).await
}

/// One poll, with the planner held: learns of new files from the manifest or by listing
/// (see `feed`), then extends the chain. Returns how many new files it learnt of.
pub(super) async fn poll_planned(
    replica: &Arc<Replica>,
    planner: &mut Planner,
    for_reader: bool,
) -> Result<usize> {
    let settings = replica.settings();
    // Backed off and not asked by a reader: nobody reads, so the check can wait for one.
    let idle = !for_reader
        && replica
            .backed_off
            .load(std::sync::atomic::Ordering::Relaxed);
    let now = std::time::Instant::now();
    let seen = replica.current().txid;
    // A store that cannot list has nothing to check the manifest against.
    let list_interval = match replica.store.can_list() {
        true => settings.list_interval,
        false => std::time::Duration::ZERO,
    };
    let source = match planner
        .follow
        .next_poll(settings.manifest, list_interval, now, !idle)
    {
        Poll::List => Source::List,
        Poll::Check => {
            super::pace::take(1).await;
            planner.follow.listed(now);
            let found = check_level0(replica, planner).await?;
            replica.status.lock().feed = planner.follow.status.clone();
            return extend(replica, planner, found).await;
        }
        Poll::Manifest => {
            super::pace::take(1).await;
            let fetched = replica
                .store
                .get_if_changed(manifest::NAME, planner.follow.etag())
                .await?;
            let refused_before = planner.follow.status.refused.clone();
            let source = planner.follow.answer(fetched, seen);
            if planner.follow.status.refused != refused_before {
                if let Some(why) = &planner.follow.status.refused {
                    crate::log_info!(
                        "{}: not following its {}: {why}; listing",
                        replica.store.url(),
                        manifest::NAME
                    );
                }
            }
            source
        }
    };
    let new_files = match source {
        Source::NothingNew => 0,
        Source::Named(files) => take_named(replica, planner, files),
        Source::List => {
            super::pace::take(POLLED_LEVELS.len() as u32).await;
            planner.follow.listed(now);
            list_new(replica, planner).await?
        }
    };
    replica.status.lock().feed = planner.follow.status.clone();
    if new_files == 0 && planner.pending.is_empty() {
        return Ok(0);
    }
    extend(replica, planner, new_files).await
}

/// Lists level 0 after the newest file seen in it; what it finds joins the pending files
/// (a manifest that missed them is then behind, and the next polls list).
async fn check_level0(replica: &Replica, planner: &mut Planner) -> Result<usize> {
    let last = planner.last_listed.get(&0).cloned();
    let mut found = replica.store.list_level(0, last.as_ref()).await?;
    if let Some(newest) = found.iter().max_by_key(|f| f.name()) {
        planner.last_listed.insert(0, newest.clone());
    }
    // Files the manifest left out because compacted files cover them are no news.
    let txid = replica.current().txid;
    found.retain(|f| f.max > txid);
    if let Some(newest) = found.iter().max_by_key(|f| f.max) {
        crate::log_info!(
            "{}: listing found {newest}, which its {} did not name",
            replica.store.url(),
            manifest::NAME
        );
    }
    let n = found.len();
    planner.pending.extend(found);
    Ok(n)
}

/// The files a current manifest names that this reader may need: those past its state, and
/// compacted files it may re-point onto. Returns how many were new.
fn take_named(replica: &Replica, planner: &mut Planner, files: Vec<FileInfo>) -> usize {
    let snap = replica.current();
    let mut new_files = 0;
    for f in files {
        let wanted = f.max > snap.txid || (f.level > 0 && snap.can_repoint(&f));
        if !wanted || planner.pending.contains(&f) {
            continue;
        }
        if POLLED_LEVELS.contains(&f.level) {
            let last = planner
                .last_listed
                .entry(f.level)
                .or_insert_with(|| f.clone());
            if f.name() > last.name() {
                *last = f.clone();
            }
        }
        crate::log_debug!("named {f}");
        planner.pending.push(f);
        new_files += 1;
    }
    new_files
}

/// Lists the polled levels together (one round trip), each from the last file seen in it.
/// Returns how many new files it listed.
async fn list_new(replica: &Arc<Replica>, planner: &mut Planner) -> Result<usize> {
    // Each level is listed from the newest file seen in it, that file included: if every
    // level comes back without it and without anything newer, the replica was deleted or
    // replaced under us, which listing only what is new would never show (the reader would
    // look fresh forever). A healthy replica keeps its newest snapshot, and the newest
    // L0 and L1 files until they are compacted upward.
    let lists = POLLED_LEVELS.map(|level| {
        let seen = planner.last_listed.get(&level).cloned();
        let store = replica.store.clone();
        async move {
            match &seen {
                Some(f) => store.list_level_from(level, f).await,
                None => store.list_level(level, None).await,
            }
            .map(|files| (seen, files))
        }
    });
    let listed_levels = futures::future::try_join_all(lists).await?;
    let seen_any = listed_levels.iter().any(|(seen, _)| seen.is_some());
    if seen_any && listed_levels.iter().all(|(_, files)| files.is_empty()) {
        let newest = listed_levels
            .iter()
            .filter_map(|(s, _)| s.as_ref())
            .max_by_key(|f| f.max);
        return Err(Error::NoState {
            url: replica.store.url().to_string(),
            reason: format!(
                "its newest files ({}) are gone and nothing newer replaced them: the replica was deleted or replaced",
                newest.map_or(String::new(), |f| f.to_string())
            ),
        });
    }
    let listed_levels = listed_levels.into_iter().map(|(seen, mut files)| {
        files.retain(|f| seen.as_ref().is_none_or(|s| f.name() > s.name()));
        files
    });
    let mut new_files = 0;
    for (level, listed) in POLLED_LEVELS.into_iter().zip(listed_levels) {
        if let Some(newest) = listed.iter().max_by_key(|f| f.name()) {
            planner.last_listed.insert(level, newest.clone());
        }
        for f in &listed {
            crate::log_debug!("listed {f}");
        }
        new_files += listed.len();
        planner.pending.extend(listed);
    }
    Ok(new_files)
}

/// Extends the chain with the pending files, re-points onto compacted ones, and publishes
/// the new state. `new_files` is what this poll learnt of (returned, at least 1 when a
/// re-plan was needed).
async fn extend(replica: &Arc<Replica>, planner: &mut Planner, new_files: usize) -> Result<usize> {
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
                return replica
                    .replan(planner, false)
                    .await
                    .map(|()| new_files.max(1));
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
    let stuck = planner.pending.iter().any(|f| f.max > snap.txid);
    if stuck && best_start(&planner.pending, snap.txid.get() + 1).is_none() {
        // Newer files exist but none continues our chain: what continued it was compacted
        // and deleted before we listed it. Rebuild from a full listing.
        if snap.txid != start.txid {
            replica.publish(snap, &moved);
        }
        return replica
            .replan(planner, false)
            .await
            .map(|()| new_files.max(1));
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
    Ok(new_files)
}

/// Among `files`, the one that continues a state ending just before `next` (it starts at
/// or before `next` and ends at or after it; see `plan`) and reaches furthest (higher
/// level on ties).
fn best_start(files: &[FileInfo], next: u64) -> Option<FileInfo> {
    files
        .iter()
        .filter(|f| f.min.get() <= next && f.max.get() >= next)
        .max_by_key(|f| (f.max, f.level))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::next_interval;
    use std::time::Duration;

    #[test]
    fn polls_are_spread_by_a_tenth() {
        let base = Duration::from_secs(10);
        let waits: Vec<_> = (0..200).map(|_| super::jittered(base)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= base.mul_f64(0.9) && *w <= base.mul_f64(1.1)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 50, "spread, not one value");
    }

    #[test]
    fn quiet_polls_back_off_to_the_bound_and_activity_resets() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut wait = base;
        let mut seen = vec![];
        for _ in 0..7 {
            wait = next_interval(wait, true, base, max);
            seen.push(wait.as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            next_interval(wait, false, base, max),
            base,
            "activity: back to base"
        );
        // A bound not above the base: never back off.
        assert_eq!(next_interval(base, true, base, Duration::ZERO), base);
        assert_eq!(next_interval(base, true, base, base), base);
    }
}
