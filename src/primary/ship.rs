//! The shipper: one tokio task per primary. Each round it reads the transactions the WAL's
//! mirrors (`mirror.rs`) hold since the last round, from however many WAL generations,
//! writes them as one LTX file (MinTXID..MaxTXID, the newest version of each page) to the
//! spool folder, and uploads spooled files in TXID order. When commits come faster than
//! uploads, a round simply finds more transactions: they are merged.
//!
//! Single writer: before a file starting at TXID N is uploaded, the primary creates the claim
//! object `claims/<N>` with a conditional put. Two primaries continuing one replica both need
//! the claim of the same TXID, so exactly one of them can write it; the other stops shipping.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::local::LocalDb;
use super::state::Position;
use super::sums::PageSums;
use super::wal::{self, WalPos};
use super::Primary;
use crate::error::{Error, Result};
use crate::ltx::{Encoder, Header, Txid};
use crate::storage::Created;

/// An encoded file waiting to be uploaded.
pub(super) struct Spooled {
    pub path: PathBuf,
    pub min: u64,
    /// The state after it.
    pub after: Position,
    /// Write ends noted before the round that encoded it (0 for the file a start-up
    /// queues): once it ships, everything committed before them has shipped.
    pub notes: u64,
}

/// The shipper's own state; only its task touches it.
pub(super) struct Shipper {
    /// Where the last encoded transaction ends in the WAL (None: at its start).
    pub cursor: Option<WalPos>,
    pub txid: u64,
    pub page_size: u32,
    /// Page checksums of the newest encoded state (None with `checksum=off`).
    pub sums: Option<PageSums>,
    /// The database checksum the next file starts from (its pre-apply), when known.
    pub chain: Option<u64>,
    pub queue: VecDeque<Spooled>,
}

pub(super) fn spool_dir(meta_dir: &Path) -> PathBuf {
    meta_dir.join("spool")
}

/// Writes an LTX file to `path` (via a temporary name) from `pages`, in ascending order.
pub(super) fn write_ltx(
    path: &Path,
    header: Header,
    pages: impl Iterator<Item = Result<(u32, Vec<u8>)>>,
    sums: &mut Option<PageSums>,
) -> Result<u64> {
    let tmp = path.with_extension("tmp");
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let corrupt = |e| Error::corrupt(tmp.display().to_string(), e);
    let with_checksums = header.has_checksums();
    let commit = header.commit;
    let mut enc =
        Encoder::new(BufWriter::new(File::create(&tmp).map_err(io)?), header).map_err(corrupt)?;
    for page in pages {
        let (pgno, data) = page?;
        if pgno > commit {
            continue;
        }
        if let Some(s) = sums.as_mut() {
            s.set(pgno, &data);
        }
        enc.add_page(pgno, &data).map_err(corrupt)?;
    }
    if let Some(s) = sums.as_mut() {
        s.truncate(commit);
    }
    let post = match (with_checksums, sums.as_ref()) {
        (true, Some(s)) => s.checksum(),
        _ => 0,
    };
    let (w, _) = enc.finish(post).map_err(corrupt)?;
    // Not synced: until it has shipped, the WAL or its mirrors still hold what it holds,
    // and after a crash the file is rebuilt from there.
    w.into_inner().map_err(|e| io(e.into_error()))?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(post)
}

/// A header for a file of this primary: with checksums when both ends are known.
pub(super) fn header(
    sh: &Shipper,
    node_id: u64,
    commit: u32,
    min: u64,
    max: u64,
    ts: i64,
) -> Header {
    let mut h = Header::new(sh.page_size, commit, Txid::new(min), Txid::new(max), ts);
    h.node_id = node_id;
    let pre = if min == 1 { Some(0) } else { sh.chain };
    if let (Some(_), Some(pre)) = (&sh.sums, pre) {
        h.flags &= !Header::FLAG_NO_CHECKSUM;
        h.pre_apply_checksum = pre;
    }
    h
}

impl Shipper {
    /// Encodes the transactions the mirrors hold after the last encoded one, across as
    /// many WAL generations as they hold, into one spooled file. Returns whether there
    /// were any.
    fn encode_new(&mut self, p: &Primary) -> Result<bool> {
        let mut parts = Vec::new();
        {
            let mut mirrors = p.mirrors.lock();
            let mut at = self.cursor;
            while let Some(src) = mirrors.source(at)? {
                at = Some(src.end);
                parts.push(src);
            }
        }
        if parts.is_empty() {
            return Ok(false);
        }
        let io = |e| Error::io("reading a copy of the WAL", e);
        // Page number → (part, frame offset) of its newest version.
        let mut frames = std::collections::BTreeMap::new();
        let mut count = 0u64;
        let mut last = None;
        for (i, src) in parts.iter_mut().enumerate() {
            let txns = match src.txns.take() {
                Some(listed) => listed,
                None => {
                    wal::copied_until(&src.file, &src.hdr, &src.from, src.end.offset).map_err(io)?
                }
            };
            if txns.is_empty() {
                return Err(Error::Internal(format!(
                    "a copy of the WAL has no committed frame between offsets {} and {}",
                    src.from.offset, src.end.offset
                )));
            }
            if self.page_size == 0 {
                self.page_size = src.hdr.page_size;
                self.sums = self.sums.take().map(|_| PageSums::new(src.hdr.page_size));
            } else if self.page_size != src.hdr.page_size {
                return Err(Error::Internal(format!(
                    "the WAL's page size {} differs from the database's {}",
                    src.hdr.page_size, self.page_size
                )));
            }
            for t in &txns {
                frames.extend(t.pages.iter().map(|(&pg, &off)| (pg, (i, off))));
            }
            count += txns.len() as u64;
            last = txns.last().map(|t| (t.commit, t.end));
        }
        let (commit, end) = last.expect("every part has a transaction");
        let (min, max) = (self.txid + 1, self.txid + count);
        let ts = p.last_note_ms.load(Ordering::Relaxed).max(1);
        let mut h = header(self, p.node_id, commit, min, max, ts);
        if let [src] = &parts[..] {
            // The WAL range the file holds, as Litestream's own L0 files say; a file that
            // spans generations has none (as a compacted file).
            h.wal_offset = src.from.offset as i64;
            h.wal_size = (end.offset - src.from.offset) as i64;
            h.wal_salt1 = src.hdr.salt1;
            h.wal_salt2 = src.hdr.salt2;
        }
        let path =
            spool_dir(&p.meta_dir).join(format!("{}-{}.ltx", Txid::new(min), Txid::new(max)));
        let page_size = self.page_size;
        let pages = frames.iter().map(|(&pgno, &(i, off))| {
            let src = &parts[i];
            wal::read_page(&src.file, page_size, off, (src.hdr.salt1, src.hdr.salt2))
                .map(|data| (pgno, data))
                .map_err(io)
        });
        let post = if min == 1 && !covers_all(&frames, commit, page_size) {
            // The first file must hold every page; take the ones this batch did not write
            // from the database file.
            let local = LocalDb::open(&p.db_path, &p.wal_path)?;
            let all = local.pgnos().map(|pg| local.page(pg).map(|d| (pg, d)));
            write_ltx(&path, h, all, &mut self.sums)?
        } else {
            write_ltx(&path, h, pages, &mut self.sums)?
        };
        self.enqueue(path, min, max, post, Some(end));
        Ok(true)
    }

    /// Queues a spooled file for upload; the state after it becomes the encoded position.
    pub fn enqueue(
        &mut self,
        path: PathBuf,
        min: u64,
        max: u64,
        post: u64,
        cursor: Option<WalPos>,
    ) {
        self.chain = self.sums.as_ref().map(PageSums::checksum);
        self.cursor = cursor;
        self.txid = max;
        self.queue.push_back(Spooled {
            path,
            min,
            after: Position {
                txid: max,
                checksum: post,
                wal: cursor,
            },
            notes: 0,
        });
    }

    /// Uploads the oldest spooled file: claim its first TXID, then create the file.
    async fn upload_front(&mut self, p: &Primary) -> Result<Uploaded> {
        let Some(f) = self.queue.front() else {
            return Ok(Uploaded::Yes);
        };
        let (min, after, path) = (f.min, f.after, f.path.clone());
        p.update_state(false, |s| s.in_flight = Some((min, after)))?;
        let claim = format!("claims/{}", Txid::new(min));
        let mine = format!("{{\"node_id\":\"{:016x}\"}}", p.node_id);
        if p.store.put_new(&claim, Bytes::from(mine.clone())).await? == Created::AlreadyExists {
            let theirs = p.store.get(&claim).await?.unwrap_or_default();
            if theirs != mine.as_bytes() {
                return Ok(Uploaded::Lost(format!(
                    "another primary ({}) already wrote TXID {} to {}",
                    String::from_utf8_lossy(&theirs).trim(),
                    Txid::new(min),
                    p.store.url()
                )));
            }
        }
        let rel = p.store.file_rel(0, Txid::new(min), Txid::new(after.txid));
        let n = std::fs::metadata(&path).map_or(0, |m| m.len());
        // Already there with our claim: an earlier attempt landed without its answer.
        p.store.put_file(&rel, &path).await?;
        p.update_state(true, |s| {
            s.shipped = after;
            s.in_flight = None;
            s.resync = false;
        })?;
        let f = self.queue.pop_front().expect("front checked above");
        let _ = std::fs::remove_file(&f.path);
        if let Some(w) = &after.wal {
            p.mirrors.lock().release(w);
        }
        let pending = self.queue.len();
        p.set_progress(|pr| {
            pr.shipped = Some(after);
            pr.shipped_notes = pr.shipped_notes.max(f.notes);
            pr.pending_files = pending;
            pr.uploads += 1;
            pr.upload_bytes += n;
            pr.last_upload = Some(SystemTime::now());
            pr.last_error = None;
        });
        Ok(Uploaded::Yes)
    }

    /// One round: encode what the mirrors hold, then upload every spooled file.
    async fn round(&mut self, p: &Primary) -> Result<Option<String>> {
        let notes = p.mirrors.lock().notes;
        tokio::task::block_in_place(|| -> Result<()> {
            if self.encode_new(p)? {
                if let Some(new) = self.queue.back_mut() {
                    new.notes = notes;
                }
            }
            Ok(())
        })?;
        let (txid, pending) = (self.txid, self.queue.len());
        p.set_progress(|pr| {
            pr.encoded_txid = txid;
            pr.pending_files = pending;
        });
        while !self.queue.is_empty() {
            if let Uploaded::Lost(why) = self.upload_front(p).await? {
                return Ok(Some(why));
            }
        }
        p.set_progress(|pr| pr.shipped_notes = pr.shipped_notes.max(notes));
        Ok(None)
    }
}

fn covers_all<T>(frames: &std::collections::BTreeMap<u32, T>, commit: u32, page_size: u32) -> bool {
    let lock = crate::ltx::lock_pgno(page_size);
    (1..=commit).all(|pg| pg == lock || frames.contains_key(&pg))
}

enum Uploaded {
    Yes,
    Lost(String),
}

/// Starts the tasks of `p`: the copier (WAL to mirrors) and the shipper (mirrors to the
/// replica).
pub(super) fn start(p: &Arc<Primary>, shipper: Shipper) -> Result<()> {
    let rt = crate::runtime::handle()?;
    rt.spawn(copy_loop(Arc::downgrade(p)));
    rt.spawn(run(Arc::downgrade(p), shipper));
    Ok(())
}

/// The first pause after a failed round; it doubles at each failure, up to `LAST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A round of a background task failed: says so (log and `litestream_stats`) and returns
/// how long to wait before the next, doubling `backoff`.
fn failed(p: &Primary, what: &str, e: &Error, backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    crate::log_warn!(
        "litestream: {}: {what}: {e} (retrying in {wait:?})",
        p.db_path.display()
    );
    p.set_progress(|pr| pr.last_error = Some(e.to_string()));
    *backoff = (wait * 2).min(LAST_RETRY);
    wait
}

/// How often the copier looks at the WAL while commits keep coming. A WAL restart copies
/// what it has not reached, about this much of the workload's WAL.
const COPY_PACE: Duration = Duration::from_millis(1);

/// The copier: copies what write transactions committed into the mirrors, so that a WAL
/// restart finds little left to copy. Woken by the first commit after it went idle, it then
/// copies every `COPY_PACE` until a round finds no new write.
async fn copy_loop(weak: Weak<Primary>) {
    let mut backoff = FIRST_RETRY;
    loop {
        let Some(p) = weak.upgrade() else { return };
        let seen = p.notes.load(Ordering::SeqCst);
        match tokio::task::block_in_place(|| p.copy_new()) {
            Ok(()) => {
                backoff = FIRST_RETRY;
                p.copied.notify_one();
            }
            Err(e) => {
                let wait = failed(&p, "copying the WAL", &e, &mut backoff);
                drop(p);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        let wake = p.wake.clone();
        // Going idle: SeqCst with `note_write_end`, so a commit after the check wakes us.
        p.copier_idle.store(true, Ordering::SeqCst);
        let idle = p.notes.load(Ordering::SeqCst) == seen;
        if !idle {
            p.copier_idle.store(false, Ordering::SeqCst);
        }
        // Hold no strong reference while waiting, so the last connection's close ends the task.
        drop(p);
        if idle {
            wake.notified().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(COPY_PACE) => {}
                _ = wake.notified() => {}
            }
        }
    }
}

async fn run(weak: Weak<Primary>, mut sh: Shipper) {
    let mut backoff = FIRST_RETRY;
    loop {
        let Some(p) = weak.upgrade() else { return };
        match sh.round(&p).await {
            Ok(None) => backoff = FIRST_RETRY,
            Ok(Some(lost)) => {
                crate::log_warn!(
                    "litestream: {}: shipping stopped: {lost}",
                    p.db_path.display()
                );
                p.set_progress(|pr| pr.stopped = Some(lost));
                return;
            }
            Err(e) => {
                let wait = failed(&p, "shipping", &e, &mut backoff);
                drop(p);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        let interval = p.config.primary.sync_interval;
        let (copied, hurry) = (p.copied.clone(), p.hurry.clone());
        drop(p);
        // Everything copied so far has shipped: wait for the copier's next round.
        copied.notified().await;
        let waited_for = weak.upgrade().is_some_and(|p| {
            let pr = p.progress.lock();
            pr.shipped_notes < pr.wanted_notes
        });
        if !interval.is_zero() && !waited_for {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = hurry.notified() => {}
            }
        }
    }
}
