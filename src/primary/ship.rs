//! The leader: the process that ships. Two tasks run for it:
//!
//! - the *copier* copies what the wal-index says is committed into the mirrors (`mirror.rs`),
//!   woken by commits of this process and polling the wal-index for those of others;
//! - the *shipper*, each round, reads the transactions the mirrors hold since the last round,
//!   from however many WAL generations, writes them as one LTX file (MinTXID..MaxTXID, the
//!   newest version of each page) to the spool folder, and uploads spooled files in TXID
//!   order. When commits come faster than uploads, a round simply finds more transactions.
//!
//! Single writer: before a file starting at TXID N is uploaded, the leader creates the claim
//! object `claims/<N>` with a conditional put, naming its node and the file's last TXID. Two
//! primaries continuing one replica both need the claim of the same TXID, so exactly one of
//! them can write it; the other stops shipping. A claim or file that already exists and is
//! ours (an earlier attempt whose answer was lost) is a success, not a lost race.
//!
//! A failing store stalls shipping, never skips or reorders a TXID: the round is retried with
//! exponential backoff and full jitter, and what was spooled waits on disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::lease::Lease;
use super::local::LocalDb;
use super::mirror::{Copied, Mirrors};
use super::progress::{Mark, Published, Publisher};
use super::state::{DbStamp, Position, State, StateFile};
use super::sums::PageSums;
use super::wal::{self, WalPos};
use super::Primary;
use crate::error::{Error, Result};
use crate::ltx::{Encoder, Header, Txid};
use crate::storage::{Created, STREAM_ABOVE};

/// The leader's state, shared by its tasks and the VFS hooks of its process.
pub(super) struct Leader {
    _lease: Lease,
    pub node_id: u64,
    /// Write-transaction ends seen in this process: the copier's cue.
    notes: AtomicU64,
    /// When the newest of them happened (ms since the epoch): the timestamp of its file.
    pub last_note_ms: AtomicI64,
    /// Set by the copier when it has caught up and waits: only then does a commit wake it.
    /// While commits keep coming it copies at its own pace, which spares each commit a
    /// thread wake-up.
    copier_idle: AtomicBool,
    /// Wakes the copier (a write transaction ended, or someone waits for shipping).
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the shipper (the copier finished a round).
    pub copied: Arc<tokio::sync::Notify>,
    /// Someone waits for the shipper: it cuts short the `sync_interval` pause.
    pub hurry: Arc<tokio::sync::Notify>,
    /// Threads of this process waiting for the replica.
    waiting: AtomicUsize,
    /// The persisted state and its file, changed only through `update_state`.
    state: Mutex<(State, StateFile)>,
    /// The copies of the WAL the shipper reads; the copier and WAL restarts write them.
    pub mirrors: Mutex<Mirrors>,
    published: Mutex<Published>,
    published_cv: Condvar,
    publisher: Mutex<Publisher>,
    /// The last WAL restart was refused (its warning is not repeated).
    restart_refused: AtomicBool,
    /// The copier found that the mirrors cannot say what changed: ship the whole database.
    resync_wanted: AtomicBool,
    /// When the state file was last synced (ms since the epoch).
    state_synced_ms: AtomicI64,
    /// The replica's manifest, rewritten after uploads and compactions.
    pub feed: super::feed::Feed,
}

/// How often the state file is synced as uploads land. Between syncs a power failure can
/// leave it behind the replica: start-up then finds the newer files to be this database's
/// own (`startup.rs`) and ships the whole database after them.
const STATE_SYNC_EVERY_MS: i64 = 1000;

impl Leader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lease: Lease,
        node_id: u64,
        state: State,
        state_file: StateFile,
        mirrors: Mirrors,
        published: Published,
        publisher: Publisher,
        feed: super::feed::Feed,
    ) -> Leader {
        Leader {
            _lease: lease,
            node_id,
            notes: AtomicU64::new(0),
            last_note_ms: AtomicI64::new(crate::clock::now_ms()),
            copier_idle: AtomicBool::new(true),
            wake: Arc::new(tokio::sync::Notify::new()),
            copied: Arc::new(tokio::sync::Notify::new()),
            hurry: Arc::new(tokio::sync::Notify::new()),
            waiting: AtomicUsize::new(0),
            state: Mutex::new((state, state_file)),
            mirrors: Mutex::new(mirrors),
            published: Mutex::new(published),
            published_cv: Condvar::new(),
            publisher: Mutex::new(publisher),
            restart_refused: AtomicBool::new(false),
            resync_wanted: AtomicBool::new(false),
            state_synced_ms: AtomicI64::new(crate::clock::now_ms()),
            feed,
        }
    }

    pub fn note_write_end(&self) {
        self.last_note_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        // SeqCst with the copier's going idle (`copy_loop`): one of the two sees the other,
        // so a commit is never left uncopied while the copier sleeps. The load first: while
        // the copier is busy a commit writes nothing shared but `notes`.
        self.notes.fetch_add(1, Ordering::SeqCst);
        if self.copier_idle.load(Ordering::SeqCst) && self.copier_idle.swap(false, Ordering::SeqCst)
        {
            self.wake.notify_one();
        }
    }

    /// Wakes the copier now, whatever its pace.
    pub fn wake_copier(&self) {
        self.wake.notify_one();
    }

    /// A checkpoint started (here or in another process): wakes the copier if it is idle,
    /// so that a WAL restart after the checkpoint finds the copy done. A busy copier is
    /// left to its pace: waking it at every checkpoint only added rounds, each with its
    /// system calls, beside the writers.
    pub fn checkpoint_hint(&self) {
        if self.copier_idle.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// SQLite of this process is restarting the WAL: copy what the copier has not reached
    /// and seal the mirror. False refuses the restart, which leaves the WAL growing until a
    /// restart succeeds.
    pub fn before_wal_restart(&self, db: &Path, index: Option<super::shm::Committed>) -> bool {
        let sealed = self.copy_new(index).and_then(|c| {
            if let Copied::Lost(why) = c {
                // What is lost is lost already; the whole database ships next, and
                // refusing the restart would not bring it back.
                self.want_resync(db, &why);
                return Ok(());
            }
            self.mirrors.lock().seal()
        });
        self.copied.notify_one();
        // SQLite retries a refused restart at every write (and its busy handler in a loop):
        // say it once until a restart succeeds again.
        let was_refused = self
            .restart_refused
            .swap(sealed.is_err(), Ordering::Relaxed);
        match sealed {
            Ok(()) => true,
            Err(e) => {
                if !was_refused {
                    crate::log_warn!(
                        "litestream: {}: WAL restarts refused until its frames can be copied: {e}",
                        db.display()
                    );
                }
                self.set_counters(|c| {
                    c.last_error = Some(format!("copying the WAL before a restart: {e}"))
                });
                false
            }
        }
    }

    fn want_resync(&self, db: &Path, why: &str) {
        if !self.resync_wanted.swap(true, Ordering::SeqCst) {
            crate::log_warn!(
                "litestream: {}: {why}; shipping the whole database",
                db.display()
            );
            self.publish(|p| p.resync_pending = true);
        }
        self.copied.notify_one();
    }

    /// Copies what was committed in the WAL since the last copy into its mirror, and
    /// publishes how far copying got.
    pub fn copy_new(&self, index: Option<super::shm::Committed>) -> Result<Copied> {
        let mut m = self.mirrors.lock();
        let c = m.copy_new(index)?;
        if c == Copied::Some {
            let (copied, gens) = (m.copied(), m.generations());
            self.publish(|p| {
                p.copied = copied;
                p.remember(&gens);
            });
        }
        Ok(c)
    }

    pub fn published(&self) -> Published {
        self.published.lock().clone()
    }

    /// Changes what is published, writes it for the other processes, and wakes waiters.
    pub fn publish(&self, f: impl FnOnce(&mut Published)) {
        let mut p = self.published.lock();
        f(&mut p);
        if let Err(e) = self.publisher.lock().write(&p) {
            crate::log_warn!("litestream: {e}");
        }
        drop(p);
        self.published_cv.notify_all();
    }

    fn set_counters(&self, f: impl FnOnce(&mut super::progress::Counters)) {
        self.publish(|p| f(&mut p.counters));
    }

    /// Waits until the replica holds `target` (in this process, which leads).
    pub fn wait_covered(
        &self,
        target: &Mark,
        deadline: Instant,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
        self.hurry.notify_one();
        let mut p = self.published.lock();
        let out = loop {
            if let Some(why) = &p.counters.stopped {
                break Err(format!("replication stopped: {why}"));
            }
            if p.covers(target) {
                break Ok(());
            }
            if self.published_cv.wait_until(&mut p, deadline).timed_out() && !p.covers(target) {
                break Err(super::waited_too_long(&p, timeout));
            }
        };
        drop(p);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        out
    }

    /// SQLite deleted the WAL after everything in it shipped: the database file alone
    /// holds the shipped state from now on.
    pub fn wal_deleted(&self, db_path: &Path) -> Result<()> {
        self.mirrors.lock().clear()?;
        self.update_state(true, |s| {
            s.shipped.wal = None;
            s.left = DbStamp::of(db_path);
        })?;
        self.publish(|p| {
            p.copied = None;
            if let Some((_, w)) = &mut p.shipped {
                w.offset = wal::HEADER_SIZE;
            }
        });
        Ok(())
    }

    /// Changes the persisted state and writes it out (and syncs it, if `durable`).
    pub fn update_state(&self, durable: bool, f: impl FnOnce(&mut State)) -> Result<()> {
        let mut guard = self.state.lock();
        let (s, file) = &mut *guard;
        f(s);
        if durable {
            self.state_synced_ms
                .store(crate::clock::now_ms(), Ordering::Relaxed);
        }
        file.save(s, durable)
    }

    /// Whether the state file is due for a sync.
    fn state_sync_due(&self) -> bool {
        crate::clock::now_ms() - self.state_synced_ms.load(Ordering::Relaxed) >= STATE_SYNC_EVERY_MS
    }

    /// Syncs the state file now (the process gives up leading).
    pub fn sync_state(&self) -> Result<()> {
        self.update_state(true, |_| {})
    }
}

/// An encoded file waiting to be uploaded.
pub(super) struct Spooled {
    pub body: Body,
    pub min: u64,
    /// The state after it, and the number of the WAL generation it ends in.
    pub after: Position,
    pub after_seq: Option<u32>,
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
    /// The first file must end exactly here: an upload that was in flight when the last
    /// leader stopped (its claim names this range; it may land yet).
    pub until: Option<WalPos>,
}

pub(super) fn spool_dir(meta_dir: &Path) -> PathBuf {
    meta_dir.join("spool")
}

/// Where an encoded file waits until it ships: in memory, or in the spool folder once it
/// is larger than one request carries (`STREAM_ABOVE`: it then streams from disk).
pub(super) enum Body {
    Memory(Bytes),
    File(PathBuf),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
        }
    }

    fn discard(&self) {
        if let Body::File(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Keeps what is written in memory, and moves it to `path` (a temporary name beside it
/// first) once it outgrows `STREAM_ABOVE`.
struct Spill {
    path: PathBuf,
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Spill {
    fn tmp(&self) -> PathBuf {
        self.path.with_extension("tmp")
    }

    fn finish(self) -> std::io::Result<Body> {
        let tmp = self.tmp();
        match self.file {
            None => Ok(Body::Memory(Bytes::from(self.mem))),
            Some(f) => {
                // Not synced: until it has shipped, the WAL or its mirrors still hold what
                // it holds, and after a crash the file is rebuilt from there.
                f.into_inner().map_err(|e| e.into_error())?;
                std::fs::rename(&tmp, &self.path)?;
                Ok(Body::File(self.path))
            }
        }
    }
}

impl std::io::Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = self.file.as_mut() {
            return f.write(buf);
        }
        self.mem.extend_from_slice(buf);
        if self.mem.len() as u64 > STREAM_ABOVE {
            let mut f = BufWriter::new(File::create(self.tmp())?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// Encodes an LTX file from `pages`, in ascending order, into memory (or `path` when it is
/// large). Returns it and its post-apply checksum.
pub(super) fn write_ltx(
    path: &Path,
    header: Header,
    pages: impl Iterator<Item = Result<(u32, Vec<u8>)>>,
    sums: &mut Option<PageSums>,
) -> Result<(Body, u64)> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let corrupt = |e| Error::corrupt(path.display().to_string(), e);
    let with_checksums = header.has_checksums();
    let commit = header.commit;
    let spill = Spill {
        path: path.to_path_buf(),
        mem: Vec::new(),
        file: None,
    };
    let mut enc = Encoder::new(spill, header).map_err(corrupt)?;
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
    Ok((w.finish().map_err(io)?, post))
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
    fn encode_new(&mut self, p: &Primary, l: &Leader) -> Result<bool> {
        let mut parts = Vec::new();
        let end_seq;
        {
            let mut mirrors = l.mirrors.lock();
            let mut at = self.cursor;
            while let Some(src) = mirrors.source(at)? {
                at = Some(src.end);
                parts.push(src);
            }
            end_seq = at.and_then(|a| mirrors.generation_of((a.salt1, a.salt2)).map(|g| g.seq));
        }
        if parts.is_empty() {
            return Ok(false);
        }
        let io = |e| Error::io("reading a copy of the WAL", e);
        // Page number → (part, frame offset) of its newest version.
        let mut frames = std::collections::BTreeMap::new();
        let mut count = 0u64;
        let mut last = None;
        'parts: for (i, src) in parts.iter_mut().enumerate() {
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
                count += 1;
                last = Some((t.commit, t.end, i));
                // An upload in flight when the last leader stopped: this file ends where
                // that one did.
                if self.until == Some(t.end) {
                    break 'parts;
                }
            }
        }
        let (commit, end, last_part) = last.expect("every part has a transaction");
        let end_seq = if self.until.is_some() {
            l.mirrors
                .lock()
                .generation_of((end.salt1, end.salt2))
                .map(|g| g.seq)
        } else {
            end_seq
        };
        self.until = None;
        let (min, max) = (self.txid + 1, self.txid + count);
        let ts = l.last_note_ms.load(Ordering::Relaxed).max(1);
        let mut h = header(self, l.node_id, commit, min, max, ts);
        if last_part == 0 {
            let src = &parts[0];
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
        if min == 1 && !covers_all(&frames, commit, page_size) {
            // The first file must hold every page, and these transactions did not write
            // them all (the database had pages before): ship the whole database instead.
            drop(pages);
            self.resync(p, l)?;
            return Ok(true);
        }
        let (body, post) = write_ltx(&path, h, pages, &mut self.sums)?;
        self.enqueue(body, min, max, post, Some(end), end_seq);
        Ok(true)
    }

    /// Queues a spooled file for upload; the state after it becomes the encoded position.
    pub fn enqueue(
        &mut self,
        body: Body,
        min: u64,
        max: u64,
        post: u64,
        cursor: Option<WalPos>,
        seq: Option<u32>,
    ) {
        self.chain = self.sums.as_ref().map(PageSums::checksum);
        self.cursor = cursor;
        self.txid = max;
        self.queue.push_back(Spooled {
            body,
            min,
            after: Position {
                txid: max,
                checksum: post,
                wal: cursor,
            },
            after_seq: seq,
        });
    }

    /// Ships the whole local database as the next TXID: the mirrors could not say what
    /// changed since the last file (the WAL was restarted over frames nobody copied). Read
    /// with checkpoints held off, so that the file is one state of the database, and the
    /// copier goes on from exactly that state.
    fn resync(&mut self, p: &Primary, l: &Leader) -> Result<()> {
        let dir = super::mirror::mirror_dir(&p.meta_dir);
        let min = self.txid + 1;
        let hold = p.config.open_timeout.max(Duration::from_secs(10));
        l.publish(|pb| pb.resync_pending = true);
        p.with_database(Some(hold), |db| {
            let mut mirrors = l.mirrors.lock();
            let mut local = LocalDb::open(db, &p.db_path)?;
            self.page_size = local.page_size.max(self.page_size);
            if let Some(s) = self.sums.as_mut() {
                *s = PageSums::new(local.page_size.max(512));
            }
            let h = header(
                self,
                l.node_id,
                local.commit,
                min,
                min,
                crate::clock::now_ms(),
            );
            let path =
                spool_dir(&p.meta_dir).join(format!("{}-{}.ltx", Txid::new(min), Txid::new(min)));
            let at = local.wal_position();
            let pages = local.pgnos().map(|pg| local.page(pg).map(|d| (pg, d)));
            let (body, post) = write_ltx(&path, h, pages, &mut self.sums)?;
            *mirrors = Mirrors::fresh(&dir, &p.db_path, at)?;
            let seq = at.and_then(|a| mirrors.generation_of((a.salt1, a.salt2)).map(|g| g.seq));
            self.enqueue(body, min, min, post, at, seq);
            let (copied, gens) = (mirrors.copied(), mirrors.generations());
            drop(mirrors);
            l.publish(|pb| {
                pb.copied = copied;
                pb.remember(&gens);
                pb.counters.resyncs += 1;
                pb.resync_pending = false;
            });
            Ok(())
        })?;
        l.update_state(true, |s| s.resync = true)
    }

    /// Uploads the oldest spooled file: claim its first TXID, then create the file.
    async fn upload_front(&mut self, p: &Primary, l: &Leader) -> Result<Uploaded> {
        let Some(f) = self.queue.front() else {
            return Ok(Uploaded::Yes);
        };
        let (min, after, seq) = (f.min, f.after, f.after_seq);
        // Before the claim: after a crash the next leader re-encodes exactly this range, the
        // one the claim names. (Not synced: a process crash keeps it; after a power failure
        // `claim` finds out.)
        l.update_state(false, |s| s.in_flight = Some((min, after)))?;
        let n = f.body.len();
        let deadline = upload_timeout(n);
        let claimed = tokio::time::timeout(deadline, claim(p, l, min, after.txid))
            .await
            .map_err(|_| timed_out("claiming", min, deadline))??;
        if let Claimed::Lost(why) = claimed {
            return Ok(Uploaded::Lost(why));
        }
        let rel = p.store.file_rel(0, Txid::new(min), Txid::new(after.txid));
        // Already there, under our claim: an earlier attempt landed without its answer.
        let put = async {
            match &self.queue.front().expect("front checked above").body {
                Body::Memory(bytes) => p.store.put_new(&rel, bytes.clone()).await,
                Body::File(path) => p.store.put_file(&rel, path).await,
            }
        };
        tokio::time::timeout(deadline, put)
            .await
            .map_err(|_| timed_out("uploading", min, deadline))??;
        tokio::task::block_in_place(|| {
            let durable = l.state_sync_due();
            l.update_state(durable, |s| {
                s.shipped = after;
                s.in_flight = None;
                s.resync = false;
            })
        })?;
        l.feed
            .uploaded(
                p.store
                    .stored_info(0, Txid::new(min), Txid::new(after.txid), n),
            )
            .await;
        let f = self.queue.pop_front().expect("front checked above");
        f.body.discard();
        if let Some(w) = &after.wal {
            l.mirrors.lock().release(w);
        }
        let pending = self.queue.len();
        l.publish(|pb| {
            pb.shipped_txid = after.txid;
            pb.shipped = match (after.wal, seq) {
                (Some(w), Some(s)) => Some((s, w)),
                _ => pb.shipped,
            };
            let c = &mut pb.counters;
            c.pending_files = pending;
            c.uploads += 1;
            c.upload_bytes += n;
            c.last_upload_ms = Some(crate::clock::now_ms());
            c.last_error = None;
            c.stalled_since_ms = None;
        });
        Ok(Uploaded::Yes)
    }

    /// One round: encode what the mirrors hold, then upload every spooled file.
    async fn round(&mut self, p: &Primary, l: &Leader) -> Result<Option<String>> {
        tokio::task::block_in_place(|| -> Result<()> {
            if l.resync_wanted.swap(false, Ordering::SeqCst) {
                if let Err(e) = self.resync(p, l) {
                    l.resync_wanted.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            self.encode_new(p, l)?;
            Ok(())
        })?;
        let (txid, pending) = (self.txid, self.queue.len());
        l.set_counters(|c| {
            c.encoded_txid = txid;
            c.pending_files = pending;
        });
        while !self.queue.is_empty() {
            if let Uploaded::Lost(why) = self.upload_front(p, l).await? {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }
}

fn covers_all<T>(frames: &std::collections::BTreeMap<u32, T>, commit: u32, page_size: u32) -> bool {
    let lock = crate::ltx::lock_pgno(page_size);
    (1..=commit).all(|pg| pg == lock || frames.contains_key(&pg))
}

/// How long one upload attempt may take before it is abandoned and retried: a stalled
/// request must not hold shipping for the client's own minute-long timeout.
fn upload_timeout(bytes: u64) -> Duration {
    Duration::from_secs(15) + Duration::from_secs(bytes / (1 << 20))
}

fn timed_out(what: &str, min: u64, after: Duration) -> Error {
    Error::Timeout {
        what: format!("{what} the file of TXID {}", Txid::new(min)),
        after,
    }
}

enum Uploaded {
    Yes,
    Lost(String),
}

enum Claimed {
    Ours,
    Lost(String),
}

/// The claim of TXID `min` for the file `min..max` of this node: created now, or already
/// there and ours (an earlier attempt, whose answer was lost, or the last leader's).
async fn claim(p: &Primary, l: &Leader, min: u64, max: u64) -> Result<Claimed> {
    let name = format!("claims/{}", Txid::new(min));
    let mine = serde_json::json!({
        "node_id": format!("{:016x}", l.node_id),
        "max_txid": Txid::new(max).to_string(),
    });
    if p.store
        .put_new(&name, Bytes::from(mine.to_string()))
        .await?
        == Created::Yes
    {
        return Ok(Claimed::Ours);
    }
    let theirs = p.store.get(&name).await?.unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_slice(&theirs).unwrap_or_default();
    if parsed["node_id"] != mine["node_id"] {
        return Ok(Claimed::Lost(format!(
            "another primary ({}) already wrote TXID {} to {}",
            String::from_utf8_lossy(&theirs).trim(),
            Txid::new(min),
            p.store.url()
        )));
    }
    if parsed["max_txid"].is_string() && parsed["max_txid"] != mine["max_txid"] {
        // Ours, for another range: an attempt of a leader whose record of it was lost. If
        // that file landed, it would overlap ours; say so rather than guess.
        let other = parsed["max_txid"].as_str().and_then(Txid::parse);
        if let Some(other) = other {
            let rel = p.store.file_rel(0, Txid::new(min), other);
            if p.store.exists(&rel).await? {
                return Ok(Claimed::Lost(format!(
                    "the replica holds {rel}, an earlier attempt of this database for TXIDs this leader numbered otherwise; reopen with restore=always or restore=never"
                )));
            }
        }
    }
    Ok(Claimed::Ours)
}

/// Starts the tasks of a new leader: the copier (WAL to mirrors) and the shipper (mirrors
/// to the replica), and its wake-up socket.
pub(super) fn start(p: &Arc<Primary>, shipper: Shipper) -> Result<()> {
    let rt = crate::runtime::handle()?;
    rt.spawn(copy_loop(Arc::downgrade(p)));
    rt.spawn(run(Arc::downgrade(p), shipper));
    if let Some(sock) = p.wake_to.listen() {
        rt.spawn(wake_loop(Arc::downgrade(p), sock));
    }
    Ok(())
}

/// The first pause after a failed round; its bound doubles at each failure, up to
/// `LAST_RETRY`, and each pause is drawn at random below it (full jitter), so that many
/// primaries failing together do not retry together.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A round of a background task failed: says so (log and `litestream_stats`) and returns
/// how long to wait before the next.
fn failed(p: &Primary, l: &Leader, what: &str, e: &Error, backoff: &mut Duration) -> Duration {
    let wait = crate::backoff::jitter(*backoff);
    crate::log_warn!(
        "litestream: {}: {what}: {e} (retrying in {wait:?})",
        p.db_path.display()
    );
    l.set_counters(|c| {
        c.last_error = Some(e.to_string());
        c.retries += 1;
        c.stalled_since_ms.get_or_insert_with(crate::clock::now_ms);
    });
    *backoff = (*backoff * 2).min(LAST_RETRY);
    wait
}

/// How often the copier looks at the WAL while commits keep coming. A WAL restart copies
/// what it has not reached, about this much of the workload's WAL.
const COPY_PACE: Duration = Duration::from_millis(1);
/// How often it polls the wal-index for commits of other processes when idle (they wake it
/// when they are in a hurry).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// A copier that keeps finding nothing polls less often, up to this: an idle database costs
/// a few wake-ups a second, not fifty (a thousand primaries in one process). Commits through
/// the extension wake it at once; a writer without the extension is seen within this.
const IDLE_POLL_MAX: Duration = Duration::from_millis(250);

/// The copier: copies what is committed into the mirrors, so that a WAL restart finds
/// little left to copy. Woken by the first commit after it went idle (or a wake-up from
/// another process), it then copies every `COPY_PACE` until a round finds nothing new, and
/// polls every `IDLE_POLL` otherwise, twice as long after each quiet poll up to
/// `IDLE_POLL_MAX`. It also keeps the pin (`Pin`).
async fn copy_loop(weak: Weak<Primary>) {
    let mut backoff = FIRST_RETRY;
    let mut pin = Pin::default();
    let mut idle_poll = IDLE_POLL;
    // The wal-index and commit count of the last round that found nothing to do.
    let mut quiet: Option<(super::shm::Index, u64)> = None;
    loop {
        let Some(p) = weak.upgrade() else { return };
        let Some(l) = p.leader.get().cloned() else {
            return;
        };
        let seen = l.notes.load(Ordering::SeqCst);
        // The wal-index header from shared memory, read right on this worker: a hand-off to
        // a blocking thread on every idle poll is what a thousand idle primaries would pay.
        let committed = p.committed();
        let index = committed.and_then(|c| c.index());
        // Nothing happened since a round that found nothing, and no checkpoint has finished
        // with the WAL's frames (so none can be waiting for the pin to restart it): sleep on.
        let restartable = index.is_some_and(|i| i.all_backfilled());
        if quiet.is_some() && quiet == index.map(|i| (i, seen)) && !restartable && p.holds_pin() {
            let wake = l.wake.clone();
            drop((p, l));
            pause_or_wake(backed_off(&mut idle_poll), &wake).await;
            continue;
        }
        let found = match tokio::task::block_in_place(|| l.copy_new(committed)) {
            Ok(Copied::Some) => {
                backoff = FIRST_RETRY;
                l.copied.notify_one();
                true
            }
            Ok(Copied::Nothing) => false,
            Ok(Copied::Lost(why)) => {
                l.want_resync(&p.db_path, &why);
                false
            }
            Err(e) => {
                let wait = failed(&p, &l, "copying the WAL", &e, &mut backoff);
                drop((p, l));
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let watching = tokio::task::block_in_place(|| pin.keep(&p, &l, index));
        let wake = l.wake.clone();
        // Going idle: SeqCst with `note_write_end`, so a commit after the check wakes us.
        l.copier_idle.store(true, Ordering::SeqCst);
        let idle = !found && l.notes.load(Ordering::SeqCst) == seen;
        if !idle {
            l.copier_idle.store(false, Ordering::SeqCst);
        }
        quiet = match (idle && !watching, index) {
            (true, Some(i)) => Some((i, seen)),
            _ => None,
        };
        // Hold no strong reference while waiting, so the last connection's close ends the task.
        drop((p, l));
        let pause = match (idle, watching) {
            (false, _) => {
                idle_poll = IDLE_POLL;
                COPY_PACE
            }
            // A checkpoint of another process waits for the pin: look again soon.
            (true, true) => {
                idle_poll = IDLE_POLL;
                IDLE_POLL
            }
            (true, false) => backed_off(&mut idle_poll),
        };
        pause_or_wake(pause, &wake).await;
    }
}

/// The idle pause to take now, doubling the next one up to `IDLE_POLL_MAX`.
fn backed_off(idle_poll: &mut Duration) -> Duration {
    let pause = *idle_poll;
    *idle_poll = (pause * 2).min(IDLE_POLL_MAX);
    pause
}

async fn pause_or_wake(pause: Duration, wake: &tokio::sync::Notify) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = wake.notified() => {}
    }
}

/// The leader's pin: held whenever something committed could still be lost to a WAL
/// restart by a program without the extension. It is let go only for a checkpoint of
/// another process that waits to restart the WAL, once every committed frame is copied and
/// in the database file: holding the write lock, that checkpoint lets nobody commit until it
/// has restarted the WAL, and the pin is taken back as soon as the wal-index changes.
#[derive(Default)]
struct Pin {
    /// The wal-index as last seen.
    last: Option<(u32, u32, u32, u32)>,
    /// When a checkpoint of another process was last seen holding the locks, with nothing
    /// committed since: seen twice in a row, it is waiting (writers hold the write lock for
    /// moments only).
    seen_waiting: Option<Instant>,
}

/// How long a let-go pin waits for the checkpoint to go ahead before it is taken back.
const YIELD_FOR: Duration = Duration::from_secs(2);

impl Pin {
    /// Keeps the pin, or lets it go for a waiting checkpoint. Returns whether it is watching
    /// a checkpoint of another process (the copier then looks again soon).
    fn keep(&mut self, p: &Primary, l: &Leader, index: Option<super::shm::Index>) -> bool {
        if !p.holds_pin() {
            p.try_pin();
            return false;
        }
        let Some(i) = index else { return false };
        let key = (i.salt1, i.salt2, i.mx_frame, i.i_change);
        let quiet = self.last == Some(key);
        self.last = Some(key);
        // Restartable without losing anything: everything in the database file, and
        // everything copied. Quiet: a checkpoint holding the write lock commits nothing.
        let restartable = i.all_backfilled() && quiet;
        // (`foreign_checkpoint_running` takes SQLite's write lock for a moment: only asked
        // once the WAL is restartable, never on the rounds of a busy writer.)
        if !restartable || !l.mirrors.lock().caught_up(&i) || !p.foreign_checkpoint_running() {
            self.seen_waiting = None;
            return false;
        }
        match self.seen_waiting {
            Some(t) if t.elapsed() >= COPY_PACE => {}
            Some(_) => return true,
            None => {
                self.seen_waiting = Some(Instant::now());
                return true;
            }
        }
        self.seen_waiting = None;
        if l.mirrors.lock().seal().is_err() {
            return true;
        }
        p.unpin();
        // Watch until the checkpoint has restarted the WAL (the wal-index changes), or
        // ended without, or given up; then take the pin back at once: before anyone can
        // commit in the new generation. Closely at first (a checkpoint that retries soon),
        // then at a slower pace (one whose busy handler sleeps longer between tries).
        let started = Instant::now();
        let mut checked = started;
        while started.elapsed() < YIELD_FOR {
            let early = started.elapsed() < Duration::from_millis(20);
            std::thread::sleep(if early {
                Duration::from_micros(200)
            } else {
                Duration::from_millis(2)
            });
            let now = p
                .wal_index()
                .map(|n| (n.salt1, n.salt2, n.mx_frame, n.i_change));
            if now != Some(key) && p.try_pin() {
                return false;
            }
            if !early && checked.elapsed() >= Duration::from_millis(20) {
                checked = Instant::now();
                if !p.foreign_checkpoint_running() {
                    break;
                }
            }
        }
        p.try_pin();
        false
    }
}

/// Wake-ups from other processes: copy now (or, for a checkpoint's hint, if idle), and for
/// a waiting commit ship without the `sync_interval` pause.
async fn wake_loop(weak: Weak<Primary>, sock: std::os::unix::net::UnixDatagram) {
    let Ok(sock) = tokio::net::UnixDatagram::from_std(sock) else {
        return;
    };
    let mut buf = [0u8; 16];
    loop {
        let got = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await;
        let Some(p) = weak.upgrade() else { return };
        if let (Ok(Ok(n)), Some(l)) = (got, p.leader.get()) {
            match super::wake::Wake::of(&buf[..n]) {
                super::wake::Wake::Copy => l.wake_copier(),
                super::wake::Wake::Ship => {
                    l.wake_copier();
                    l.hurry.notify_one();
                }
                super::wake::Wake::Checkpoint => l.checkpoint_hint(),
            }
        }
    }
}

async fn run(weak: Weak<Primary>, mut sh: Shipper) {
    let mut backoff = FIRST_RETRY;
    loop {
        let Some(p) = weak.upgrade() else { return };
        let Some(l) = p.leader.get().cloned() else {
            return;
        };
        let started = tokio::time::Instant::now();
        match sh.round(&p, &l).await {
            Ok(None) => {
                backoff = FIRST_RETRY;
                // A hint for readers: a failure is retried after the next upload or by
                // the compactor, and never holds shipping back.
                if let Err(e) = l.feed.publish(&p.store).await {
                    crate::log_warn!("litestream: {}: manifest: {e}", p.db_path.display());
                }
            }
            Ok(Some(lost)) => {
                crate::log_warn!(
                    "litestream: {}: shipping stopped: {lost}",
                    p.db_path.display()
                );
                l.set_counters(|c| c.stopped = Some(lost));
                return;
            }
            Err(e) => {
                // A waiter does not cut a failure's pause short: the store needs it.
                let wait = failed(&p, &l, "shipping", &e, &mut backoff);
                drop((p, l));
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        let interval = p.config.primary.sync_interval;
        let (copied, hurry) = (l.copied.clone(), l.hurry.clone());
        // A round may stop early (the first file after a takeover ends where the last
        // leader's upload did): go on at once with what the mirrors still hold.
        let more = l.mirrors.lock().has_more(sh.cursor);
        // Hold no strong reference while waiting, so the last connection's close ends the
        // task (and the lease with the leader).
        let weak_leader = Arc::downgrade(&l);
        drop((p, l));
        if !more {
            // Everything copied so far has shipped: wait for the copier's next round.
            copied.notified().await;
        }
        // `sync_interval` apart from the last round's start: a commit after a quiet spell
        // ships at once, commits that keep coming merge into one file per interval. A
        // waiting commit (here, or another process's wake-up) cuts the pause short.
        let due = started + interval;
        let waiting = weak_leader
            .upgrade()
            .is_some_and(|l| l.waiting.load(Ordering::SeqCst) > 0);
        if !waiting && due > tokio::time::Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = hurry.notified() => {}
            }
        }
    }
}
