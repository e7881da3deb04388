//! Cold starts at the speed of the network: one engine that brings every page of a state
//! from storage, used by `litestream_restore`, a primary's restore-on-open and hydration.
//!
//! The state's page index already says where the newest version of each page is, so each
//! page is fetched and written once, whatever later files overwrote. Its frames are grouped
//! into ranged reads of up to `restore_part_size` bytes of one file (a snapshot becomes a
//! few large reads), `restore_concurrency` in flight; each range is decoded and written by
//! the calling thread as it arrives, so memory holds at most that many ranges and three
//! more whatever the database's size.
//! Pages go straight to their file, never through the page cache: a restore does not evict
//! what readers of the replica keep hot. A range that fails after the store's own retries
//! is read again page by page through the replica (which knows where a page went when
//! compaction deleted its file meanwhile).
//!
//! `write_database` writes a state out as an ordinary database file: every page exactly as
//! the LTX files hold it (page 1 too, unlike what the VFS presents), missing pages and the
//! lock page as zeros, to a temporary name, synced, then renamed. When the file that
//! produced the state carries database checksums (Litestream 0.5 writes none; other writers
//! may), the pages written must add up to its post-apply checksum, or nothing is renamed
//! into place.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::index::Loc;
use super::{page_in, prefetch, Replica, Snapshot};
use crate::error::{Error, Result};
use crate::ltx::{DatabaseChecksum, LtxError};

/// A program's own view of cold starts (the C API's `litestream_set_progress`): called
/// after each part with what runs, the bytes done and the total; true asks to stop.
pub type Observer = Arc<dyn Fn(&str, u64, u64) -> bool + Send + Sync>;

static OBSERVER: std::sync::RwLock<Option<Observer>> = std::sync::RwLock::new(None);

/// Sets (or with None removes) the process's observer of cold starts.
pub fn observe(observer: Option<Observer>) {
    if let Ok(mut o) = OBSERVER.write() {
        *o = observer;
    }
}

fn observer() -> Option<Observer> {
    OBSERVER.read().ok().and_then(|o| o.clone())
}

/// How far the cold start running on a replica has got (`litestream_stats`' `restore`).
#[derive(Default)]
pub struct Progress {
    /// What runs: "restore <path>" or "hydration"; None before the first.
    what: Mutex<Option<String>>,
    started: Mutex<Option<Instant>>,
    pub pages_total: AtomicU64,
    pub pages_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub gets: AtomicU64,
    /// Set when it ended: "done" or the error.
    outcome: Mutex<Option<String>>,
}

impl Progress {
    fn start(&self, what: String, pages: u64, bytes: u64) {
        *self.what.lock() = Some(what);
        *self.started.lock() = Some(Instant::now());
        *self.outcome.lock() = None;
        self.pages_total.store(pages, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        for c in [&self.pages_done, &self.bytes_done, &self.gets] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn end(&self, outcome: &Result<()>) {
        *self.outcome.lock() = Some(match outcome {
            Ok(()) => "done".into(),
            Err(e) => e.to_string(),
        });
    }

    /// The figures as `litestream_stats` shows them; None before any cold start.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        let what = self.what.lock().clone()?;
        let seconds = self
            .started
            .lock()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let (done, total) = (
            self.bytes_done.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        );
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        let outcome = self.outcome.lock().clone();
        let eta =
            (outcome.is_none() && rate > 0.0).then(|| total.saturating_sub(done) as f64 / rate);
        Some(serde_json::json!({
            "what": what,
            "state": outcome.unwrap_or_else(|| "running".into()),
            "pages_done": self.pages_done.load(Ordering::Relaxed),
            "pages_total": self.pages_total.load(Ordering::Relaxed),
            "bytes_done": done,
            "bytes_total": total,
            "gets": self.gets.load(Ordering::Relaxed),
            "percent": if total == 0 { 100.0 } else { (done as f64 * 100.0 / total as f64).min(100.0) },
            "seconds": seconds,
            "bytes_per_second": rate,
            "eta_seconds": eta,
        }))
    }
}

/// Fetches the frames of `pages` (each the newest version of its page in `snap`) and hands
/// every decoded page to `put`, in the calling thread, as its range arrives; `range_done`
/// follows each range's pages (hydration records its progress there). Reports to
/// `replica.progress` and the observer as `what`; stops with `Error::Interrupted` when
/// `interrupted` or the observer says so.
pub(super) fn fetch_pages(
    replica: &Arc<Replica>,
    snap: &Arc<Snapshot>,
    what: String,
    interrupted: &dyn Fn() -> bool,
    pages: Vec<(u32, Loc)>,
    mut put: impl FnMut(u32, &[u8]) -> Result<()>,
    mut range_done: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (parallel, part) = {
        let s = replica.settings();
        (s.restore_concurrency.max(1), s.restore_part_size)
    };
    let ranges = prefetch::coalesce(pages, part);
    let progress = &replica.progress;
    progress.start(
        what.clone(),
        ranges.iter().map(|r| r.run.len() as u64).sum(),
        ranges.iter().map(|r| r.end - r.start).sum(),
    );
    let mut jobs = Vec::with_capacity(ranges.len());
    let mut names = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let meta = snap
            .file(r.file)
            .ok_or_else(|| Error::Internal("a page points to an unknown file".into()))?;
        names.push(replica.store.describe(&meta.info));
        jobs.push((meta.info.clone(), r.start..r.end));
    }
    // Two answers wait at most; the rest stay in the reads in flight.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let store = replica.store.clone();
    crate::runtime::handle()?.spawn(async move {
        use futures::StreamExt;
        let reads = jobs.into_iter().enumerate().map(|(i, (info, range))| {
            let store = store.clone();
            async move { (i, store.read_range(&info, range).await) }
        });
        let mut arriving = futures::stream::iter(reads).buffer_unordered(parallel);
        while let Some(read) = arriving.next().await {
            // The caller stopped (an error): the reads in flight are dropped with us.
            if tx.send(read).await.is_err() {
                return;
            }
        }
    });
    let observer = observer();
    let total = progress.bytes_total.load(Ordering::Relaxed);
    let outcome = (|| {
        for _ in 0..ranges.len() {
            let (i, bytes) = rx
                .blocking_recv()
                .ok_or_else(|| Error::Internal("the restore reads ended early".into()))?;
            let r = &ranges[i];
            match bytes {
                Ok(bytes) => {
                    progress.gets.fetch_add(1, Ordering::Relaxed);
                    for (pgno, loc) in &r.run {
                        let page = page_in(&bytes, r.start, *loc, snap.page_size, *pgno)
                            .map_err(|e| Error::corrupt(names[i].clone(), e))?;
                        put(*pgno, &page)?;
                    }
                }
                Err(e) => {
                    crate::log_info!(
                        "{what}: a ranged read failed ({e}); reading its pages one by one"
                    );
                    for (pgno, _) in &r.run {
                        let page = replica.read_page(snap, *pgno)?;
                        let zeros;
                        let page: &[u8] = match &page {
                            Some(p) => p,
                            None => {
                                zeros = vec![0u8; snap.page_size as usize];
                                &zeros
                            }
                        };
                        put(*pgno, page)?;
                    }
                }
            }
            progress
                .pages_done
                .fetch_add(r.run.len() as u64, Ordering::Relaxed);
            let done = progress
                .bytes_done
                .fetch_add(r.end - r.start, Ordering::Relaxed)
                + (r.end - r.start);
            range_done()?;
            let stop = observer.as_ref().is_some_and(|o| o(&what, done, total));
            if stop || interrupted() {
                return Err(Error::Interrupted { what: what.clone() });
            }
        }
        Ok(())
    })();
    progress.end(&outcome);
    if outcome.is_ok() {
        if let Some(p) = progress.to_json() {
            crate::log_info!("{what}: {p}");
        }
    }
    outcome
}

/// Writes the state `snap` to `path` as a database file. Returns the number of pages. An
/// interrupted restore leaves nothing under `path` nor its temporary name.
pub fn write_database(
    replica: &Arc<Replica>,
    snap: &Arc<Snapshot>,
    path: &Path,
    interrupted: &dyn Fn() -> bool,
) -> Result<u32> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".litestream-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", tmp.display()), e);
    let ps = snap.page_size as u64;
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        f.set_len(snap.commit() as u64 * ps)
            .map_err(|e| io("sizing", e))?;
        let mut checksum = DatabaseChecksum::new(snap.page_size);
        let pages: Vec<(u32, Loc)> = snap.index.iter().collect();
        let mut written = vec![0u64; (snap.commit() as usize).div_ceil(64)];
        fetch_pages(
            replica,
            snap,
            format!("restore {}", path.display()),
            interrupted,
            pages,
            |pgno, page| {
                checksum.add(pgno, page);
                written[(pgno as usize - 1) / 64] |= 1 << ((pgno - 1) % 64);
                f.write_all_at(page, (pgno as u64 - 1) * ps)
                    .map_err(|e| io("writing", e))
            },
            || Ok(()),
        )?;
        // Pages no file holds are zeros (the file was sized so); they count in the sum.
        let zeros = vec![0u8; ps as usize];
        for pgno in 1..=snap.commit() {
            if written[(pgno as usize - 1) / 64] & (1 << ((pgno - 1) % 64)) == 0 {
                checksum.add(pgno, &zeros);
            }
        }
        if let Some(expected) = snap.checksum {
            let got = checksum.finish();
            if got != expected {
                return Err(Error::corrupt(
                    format!("state {} of {}", snap.txid, replica.store.url()),
                    LtxError::ChecksumMismatch {
                        what: "database (restored pages against the post-apply checksum)",
                        expected,
                        got,
                    },
                ));
            }
        }
        f.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| snap.commit())
}
