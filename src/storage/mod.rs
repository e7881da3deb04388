//! Object storage: the replica's files by level, listed and read by byte range, with
//! request and byte counters. Nothing here knows what is inside an LTX file. With age keys
//! (`crypt`), every object is encrypted on its way out and decrypted on its way in, a range
//! at a time: the layers above see plaintext objects and plaintext ranges.

pub mod crypt;
pub mod layout;
pub mod manifest;
pub mod provider;
pub mod url;

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::ltx::Txid;
use layout::{parse_file_name, Layout};

/// One LTX file in the replica, as listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileInfo {
    pub level: u8,
    pub min: Txid,
    pub max: Txid,
    pub size: u64,
}

impl FileInfo {
    pub fn name(&self) -> String {
        layout::file_name(self.min, self.max)
    }

    /// A file for tests of planning code: level and TXID range, nominal size.
    #[cfg(test)]
    pub fn for_test(level: u8, min: u64, max: u64) -> FileInfo {
        FileInfo {
            level,
            min: Txid::new(min),
            max: Txid::new(max),
            size: 100,
        }
    }
}

impl std::fmt::Display for FileInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{}/{}", self.level, self.name())
    }
}

/// Counters of what this replica cost in storage requests.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub get_requests: AtomicU64,
    pub get_bytes: AtomicU64,
    pub put_requests: AtomicU64,
    pub put_bytes: AtomicU64,
    pub list_requests: AtomicU64,
    pub errors: AtomicU64,
    /// Second GETs sent for a read that had not answered within `hedge_after`.
    pub hedged: AtomicU64,
    /// Hedged reads the second GET won.
    pub hedge_wins: AtomicU64,
    /// Attempts repeated after a transient failure (5xx, reset, truncated body, timeout).
    pub retries: AtomicU64,
}

/// Files up to this size are uploaded in one request; larger ones stream from disk.
pub const STREAM_ABOVE: u64 = 16 << 20;

/// What a conditional GET found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The object still has the entity tag given.
    NotModified,
    Missing,
    Changed {
        bytes: Bytes,
        etag: Option<String>,
    },
}

/// What a conditional put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Yes,
    AlreadyExists,
}

pub struct Store {
    url: String,
    backend: url::Backend,
    pub stats: StorageStats,
    /// A read or listing not answered after this many milliseconds is sent again, and the
    /// first answer wins (0 = never).
    hedge_after_ms: AtomicU64,
    /// How long one operation keeps retrying transient failures before it reports one.
    retry_for: Duration,
    /// age keys: when set, every object is encrypted (see `crypt`).
    keys: Option<Arc<crypt::Keys>>,
    /// The layouts of encrypted objects read so far (header and sizes), by file.
    sealed: parking_lot::Mutex<lru::LruCache<FileInfo, crypt::Layout>>,
    /// Decrypted chunks of encrypted objects, by file and chunk number, most recently used
    /// kept: a page whose chunk was read before costs neither a read nor a decryption
    /// (reads of neighbouring pages, the header and index of a file, come in runs).
    chunks: parking_lot::Mutex<lru::LruCache<(FileInfo, u64), Bytes>>,
    /// Where the files of each level live: the backend's, or for a store that cannot list
    /// (plain HTTP) what its manifest says.
    layout: parking_lot::Mutex<Layout>,
}

/// The slowest link a transfer's deadline allows for (bytes a second): a request moving
/// more bytes gets more time per attempt.
const SLOWEST_LINK: u64 = 1 << 20;
/// Reads up to this size are hedged (pages, headers, page indexes; not a restore's parts).
const HEDGE_UP_TO: u64 = 1 << 20;

/// Layouts of encrypted files kept (a few hundred bytes each).
const SEALED_LAYOUTS: usize = 4096;
/// Decrypted chunks kept (64 KiB each: 16 MiB).
const DECRYPTED_CHUNKS: usize = 256;
/// Reads spanning more chunks than this (a restore's parts) are not kept.
const KEEP_CHUNKS_UP_TO: u64 = 4;

/// The longest one attempt of a request may take before it is abandoned (and retried):
/// a request that gets no answer must not hold a read, a listing or an upload for the HTTP
/// client's own minute.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a failure may go away if the request is sent again: the store's 5xx and 429
/// answers (after object_store's own retries), a connection reset, a body cut short, no
/// answer in time. Not: a missing object, a refused condition, a permission.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Storage { source, .. } => matches!(**source, object_store::Error::Generic { .. }),
        Error::Timeout { .. } => true,
        // Only a short read makes this at this layer: the body was cut.
        Error::Corrupt {
            source: crate::ltx::LtxError::Truncated { .. },
            ..
        } => true,
        _ => false,
    }
}

impl Store {
    pub fn open(
        replica_url: &str,
        timeouts: url::Timeouts,
        keys: Option<Arc<crypt::Keys>>,
        sse: &url::Sse,
    ) -> Result<Store> {
        let backend = url::open(replica_url, timeouts, sse)?;
        Ok(Store {
            url: replica_url.to_string(),
            layout: parking_lot::Mutex::new(backend.layout),
            backend,
            stats: StorageStats::default(),
            hedge_after_ms: AtomicU64::new(0),
            retry_for: timeouts.retry_for,
            keys,
            sealed: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(SEALED_LAYOUTS).expect("not zero"),
            )),
            chunks: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DECRYPTED_CHUNKS).expect("not zero"),
            )),
        })
    }

    /// The size of `f`'s plaintext: its listed size, or for an encrypted replica what its
    /// age header says (read once).
    pub async fn plain_size(&self, f: &FileInfo) -> Result<u64> {
        match &self.keys {
            None => Ok(f.size),
            Some(_) => Ok(self.sealed_layout(f).await?.plain_size),
        }
    }

    /// The layout of the encrypted file `f`, from its first bytes (one read, then kept).
    async fn sealed_layout(&self, f: &FileInfo) -> Result<crypt::Layout> {
        if let Some(l) = self.sealed.lock().get(f) {
            return Ok(l.clone());
        }
        let first = self
            .read_sealed(f, 0..f.size.min(crypt::HEADER_READ))
            .await?;
        let layout = crypt::Layout::parse(&self.describe(f), &first, f.size)?;
        self.sealed.lock().put(f.clone(), layout.clone());
        Ok(layout)
    }

    /// Runs `op` until it succeeds, fails for good, or `retry_for` has passed: each attempt
    /// bounded by `ATTEMPT_TIMEOUT` and, if `hedged`, sent a second time when it has not
    /// answered after `hedge_after`; transient failures retried with exponential backoff
    /// and jitter.
    async fn call<T, F, Fut>(
        &self,
        what: &(dyn Fn() -> String + Sync),
        hedged: bool,
        op: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_sized(what, hedged, 0, op).await
    }

    /// `call` for a request that moves `bytes`: each attempt may take longer by the time
    /// those bytes need at [`SLOWEST_LINK`] (an 8 MiB part of a restore on a slow link must
    /// not time out as a page read would).
    async fn call_sized<T, F, Fut>(
        &self,
        what: &(dyn Fn() -> String + Sync),
        hedged: bool,
        bytes: u64,
        op: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let transfer = Duration::from_secs_f64(bytes as f64 / SLOWEST_LINK as f64);
        let deadline = Instant::now() + self.retry_for + transfer;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            // An attempt may take a little longer than the whole retry window (the HTTP
            // client retries refused connections within it), never the client's own minute.
            let limit = ATTEMPT_TIMEOUT.min(self.retry_for + Duration::from_secs(1)) + transfer;
            let timed_out = || Error::Timeout {
                what: what(),
                after: limit,
            };
            let r = if hedged {
                self.hedge(&op, limit, timed_out).await
            } else {
                tokio::time::timeout(limit, op())
                    .await
                    .unwrap_or_else(|_| Err(timed_out()))
            };
            match r {
                Err(e) if is_transient(&e) => {
                    let pause = backoff.next_pause();
                    if Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    crate::log_debug!("litestream: {e} (retrying in {pause:?})");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt of `op`, sent again when it has not answered within `hedge_after`, and
    /// again at twice that, and so on (at most `MAX_IN_FLIGHT` at once): the first success
    /// wins and the others are dropped. A request lost in a store that stopped answering for
    /// a moment is overtaken by one sent after it answers again.
    ///
    /// Bounded by `limit`: then the failure of an attempt that ended is reported (its cause
    /// says more than the time), else `timed_out()`.
    async fn hedge<T, F, Fut>(
        &self,
        op: &F,
        limit: Duration,
        timed_out: impl Fn() -> Error,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        use futures::stream::{FuturesUnordered, StreamExt};
        const MAX_IN_FLIGHT: usize = 4;
        let mut wait = self.hedge_after();
        if wait.is_zero() {
            return tokio::time::timeout(limit, op())
                .await
                .unwrap_or_else(|_| Err(timed_out()));
        }
        let give_up = tokio::time::sleep(limit);
        tokio::pin!(give_up);
        let attempt = |which: usize| {
            let f = op();
            async move { (which, f.await) }
        };
        let mut flying = FuturesUnordered::new();
        flying.push(attempt(0));
        let mut sent = 1usize;
        let mut last_err = None;
        loop {
            let next_hedge = tokio::time::sleep(wait);
            tokio::pin!(next_hedge);
            tokio::select! {
                done = flying.next() => match done {
                    Some((which, Ok(v))) => {
                        if which > 0 {
                            self.stats.hedge_wins.fetch_add(1, Ordering::Relaxed);
                        }
                        return Ok(v);
                    }
                    Some((_, Err(e))) => {
                        last_err = Some(e);
                        if flying.is_empty() {
                            return Err(last_err.expect("set above"));
                        }
                    }
                    None => return Err(last_err.expect("an attempt was made")),
                },
                _ = &mut give_up => return Err(last_err.unwrap_or_else(timed_out)),
                _ = &mut next_hedge, if flying.len() < MAX_IN_FLIGHT => {
                    self.stats.hedged.fetch_add(1, Ordering::Relaxed);
                    let which = sent;
                    flying.push(attempt(which));
                    sent += 1;
                    wait *= 2;
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn hedge_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.hedge_after_ms.load(Ordering::Relaxed))
    }

    /// Sets the hedging threshold (zero: off).
    pub fn set_hedge_after(&self, d: std::time::Duration) {
        let ms = d.as_millis().min(u64::MAX as u128) as u64;
        self.hedge_after_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the replica is a local folder (file://), read with positional reads.
    pub fn is_local(&self) -> bool {
        self.backend.local_root.is_some()
    }

    fn level_path(&self, level: u8) -> Path {
        join(&self.backend.root, &self.layout.lock().level_dir(level))
    }

    fn file_path(&self, f: &FileInfo) -> Path {
        join(&self.level_path(f.level), &f.name())
    }

    /// The file's path relative to the replica root (`ltx/0/…ltx`, or `0000/…ltx` on S3).
    pub fn relative_path(&self, f: &FileInfo) -> String {
        format!("{}/{}", self.layout.lock().level_dir(f.level), f.name())
    }

    /// A name for messages: the replica URL's root and the file within it.
    pub fn describe(&self, f: &FileInfo) -> String {
        format!("{} ({})", self.file_path(f), self.url)
    }

    fn parse_listed(&self, location: &Path, size: u64) -> Option<FileInfo> {
        let rel: Vec<_> = location
            .prefix_match(&self.backend.root)?
            .map(|p| p.as_ref().to_string())
            .collect();
        let level = match (*self.layout.lock(), rel.as_slice()) {
            (Layout::HexLevels, [lvl, _]) if lvl.len() == 4 => u8::from_str_radix(lvl, 16).ok()?,
            (Layout::LtxDecimal, [ltx, lvl, _]) if ltx == "ltx" => lvl.parse().ok()?,
            _ => return None,
        };
        let (min, max) = parse_file_name(rel.last()?)?;
        Some(FileInfo {
            level,
            min,
            max,
            size,
        })
    }

    /// The file a listing would show for `plain_len` bytes written at `level`, `min..=max`;
    /// None for an encrypted replica, whose stored size only a listing tells.
    pub fn stored_info(&self, level: u8, min: Txid, max: Txid, plain_len: u64) -> Option<FileInfo> {
        self.keys.is_none().then_some(FileInfo {
            level,
            min,
            max,
            size: plain_len,
        })
    }

    /// Where the files of each level live.
    pub fn layout(&self) -> Layout {
        *self.layout.lock()
    }

    /// Whether the store can list its objects (a plain HTTP server cannot: there the
    /// manifest is the listing).
    pub fn can_list(&self) -> bool {
        self.backend.lists
    }

    /// The files the manifest names, for a store that cannot list; its layout is taken
    /// from the manifest.
    async fn listed_by_manifest(&self) -> Result<Vec<FileInfo>> {
        let no_state = |reason: String| Error::NoState {
            url: self.url.clone(),
            reason,
        };
        let Some(bytes) = self.get(manifest::NAME).await? else {
            return Err(no_state(format!(
                "it has no {}: a replica served over plain HTTP is read through the manifest its primary writes (this extension's primary with manifest=true)",
                manifest::NAME
            )));
        };
        let m = manifest::Manifest::decode(&bytes)
            .map_err(|e| no_state(format!("its {} is unusable: {e}", manifest::NAME)))?;
        *self.layout.lock() = m.layout;
        Ok(m.files)
    }

    /// Every LTX file of every level, in one recursive listing.
    pub async fn list_all(&self) -> Result<Vec<FileInfo>> {
        if !self.backend.lists {
            return self.listed_by_manifest().await;
        }
        let what = || format!("listing {}", self.url);
        let metas: Vec<_> = self
            .call(&what, true, || async {
                self.stats.list_requests.fetch_add(1, Ordering::Relaxed);
                self.backend
                    .store
                    .list(Some(&self.backend.root))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.fail(self.backend.root.to_string(), e))
            })
            .await?;
        let mut files: Vec<FileInfo> = metas
            .iter()
            .filter_map(|m| self.parse_listed(&m.location, m.size))
            .collect();
        files.sort_by_key(|f| (f.level, f.min, f.max));
        Ok(files)
    }

    /// Files of one level whose names sort after `after` (start-after listing where the
    /// store supports it, so a poll does not re-list the whole level).
    pub async fn list_level(&self, level: u8, after: Option<&FileInfo>) -> Result<Vec<FileInfo>> {
        let offset = after.map(FileInfo::name);
        self.list_level_offset(level, offset).await
    }

    /// Files of one level whose names sort at or after `from`'s: `from` itself, if it is
    /// still there, and what came after it.
    pub async fn list_level_from(&self, level: u8, from: &FileInfo) -> Result<Vec<FileInfo>> {
        // Every name of the level ends in ".ltx": the name without its last character sorts
        // just before it, and after every other name before it.
        let mut offset = from.name();
        offset.pop();
        self.list_level_offset(level, Some(offset)).await
    }

    async fn list_level_offset(&self, level: u8, offset: Option<String>) -> Result<Vec<FileInfo>> {
        let after = |f: &FileInfo| {
            offset
                .as_ref()
                .is_none_or(|o| f.name().as_str() > o.as_str())
        };
        if !self.backend.lists {
            let mut files = self.listed_by_manifest().await?;
            files.retain(|f| f.level == level && after(f));
            return Ok(files);
        }
        let dir = self.level_path(level);
        let what = || format!("listing {dir} ({})", self.url);
        let metas: Vec<_> = self
            .call(&what, true, || async {
                self.stats.list_requests.fetch_add(1, Ordering::Relaxed);
                let stream = match &offset {
                    Some(o) => self
                        .backend
                        .store
                        .list_with_offset(Some(&dir), &join(&dir, o)),
                    None => self.backend.store.list(Some(&dir)),
                };
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.fail(dir.to_string(), e))
            })
            .await?;
        let mut files: Vec<FileInfo> = metas
            .iter()
            .filter_map(|m| self.parse_listed(&m.location, m.size))
            .filter(|f| f.level == level)
            // Some stores ignore the offset (fake-gcs-server does; S3-compatibles may).
            .filter(|f| after(f))
            .collect();
        files.sort_by_key(|f| (f.min, f.max));
        Ok(files)
    }

    /// Reads a byte range from a thread outside the runtime (SQLite's), waiting for it. A
    /// file:// replica is read right on the calling thread with one positional read: a page
    /// miss on a local disk should cost a system call, not two hops between thread pools.
    pub fn read_range_blocking(self: &Arc<Self>, f: &FileInfo, range: Range<u64>) -> Result<Bytes> {
        if self.keys.is_none() {
            if let Some(local) = self.read_range_local(f, range.clone()) {
                return self.plaintext(f, &range, local?);
            }
        }
        let (store, f) = (self.clone(), f.clone());
        crate::runtime::block_on(async move { store.read_range(&f, range).await })
    }

    fn read_range_local(&self, f: &FileInfo, range: Range<u64>) -> Option<Result<Bytes>> {
        use std::os::unix::fs::FileExt;
        let root = self.backend.local_root.as_ref()?;
        let path = root.join(self.relative_path(f));
        self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
        let want = range.end.saturating_sub(range.start) as usize;
        let result = std::fs::File::open(&path).and_then(|file| {
            let mut buf = vec![0u8; want];
            let mut done = 0;
            while done < want {
                match file.read_at(&mut buf[done..], range.start + done as u64)? {
                    0 => break,
                    n => done += n,
                }
            }
            buf.truncate(done);
            Ok(buf)
        });
        Some(match result {
            Ok(buf) if buf.len() == want => {
                self.stats
                    .get_bytes
                    .fetch_add(want as u64, Ordering::Relaxed);
                Ok(Bytes::from(buf))
            }
            Ok(buf) => Err(self.short_read(f, &range, buf.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::NotFound {
                    file: self.describe(f),
                })
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::io(format!("reading {}", self.describe(f)), e))
            }
        })
    }

    /// Reads a byte range: hedged when `hedge_after` is set (a second identical GET when the
    /// first has not answered by then; the first successful answer wins), and retried when
    /// it fails in a way that may pass (a body cut short is one: it is never returned).
    ///
    /// With age keys, `range` is of the plaintext: the chunks that hold it are read and
    /// decrypted (the object's header first, once).
    pub async fn read_range(&self, f: &FileInfo, range: Range<u64>) -> Result<Bytes> {
        let Some(keys) = &self.keys else {
            let bytes = self.read_sealed(f, range.clone()).await?;
            return self.plaintext(f, &range, bytes);
        };
        if !keys.decrypts() {
            return Err(crypt::needs_identity(&self.describe(f)));
        }
        let layout = self.sealed_layout(f).await?;
        if range.end > layout.plain_size {
            return Err(self.short_read(f, &range, 0));
        }
        let span = layout.chunk_span(&range);
        let numbers = layout.chunk_numbers(&range);
        let (first, count) = (numbers.start, numbers.end - numbers.start);
        let at = |plain: &Bytes| {
            plain.slice((range.start - span.start) as usize..(range.end - span.start) as usize)
        };
        let cached: Option<Vec<Bytes>> = {
            let mut kept = self.chunks.lock();
            numbers
                .map(|i| kept.get(&(f.clone(), i)).cloned())
                .collect()
        };
        if let Some(parts) = cached {
            let plain = if parts.len() == 1 {
                parts.into_iter().next().unwrap_or_default()
            } else {
                Bytes::from(parts.concat())
            };
            return Ok(at(&plain));
        }
        let sealed = layout.sealed_range(&range);
        let chunks = self.read_sealed(f, sealed.clone()).await?;
        let plain = Bytes::from(layout.open(
            keys,
            &self.describe(f),
            span.clone(),
            sealed.start,
            chunks,
        )?);
        if count <= KEEP_CHUNKS_UP_TO {
            let mut kept = self.chunks.lock();
            for i in 0..count {
                let a = (i * crypt::CHUNK) as usize;
                let b = (a + crypt::CHUNK as usize).min(plain.len());
                kept.put((f.clone(), first + i), plain.slice(a..b));
            }
        }
        Ok(at(&plain))
    }

    /// A range read from a replica without keys: an age file there is an error that says
    /// what is missing, not an LTX file with a bad magic number.
    fn plaintext(&self, f: &FileInfo, range: &Range<u64>, bytes: Bytes) -> Result<Bytes> {
        if range.start == 0 && bytes.starts_with(crypt::MAGIC) {
            return Err(crypt::needs_identity(&self.describe(f)));
        }
        Ok(bytes)
    }

    /// Reads a range of the object as stored: retried; hedged when small (a second copy of
    /// a large read would only halve the bandwidth of the first).
    async fn read_sealed(&self, f: &FileInfo, range: Range<u64>) -> Result<Bytes> {
        let what = || format!("reading {} of {}", range.start, self.describe(f));
        let len = range.end.saturating_sub(range.start);
        self.call_sized(&what, len <= HEDGE_UP_TO, len, || {
            self.read_range_once(f, range.clone())
        })
        .await
    }

    async fn read_range_once(&self, f: &FileInfo, range: Range<u64>) -> Result<Bytes> {
        self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .backend
            .store
            .get_range(&self.file_path(f), range.clone())
            .await
            .map_err(|e| self.fail(self.describe(f), e))?;
        self.stats
            .get_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != want {
            return Err(self.short_read(f, &range, bytes.len()));
        }
        Ok(bytes)
    }

    /// The path of a level's file relative to the replica root, for writing one.
    pub fn file_rel(&self, level: u8, min: Txid, max: Txid) -> String {
        format!(
            "{}/{}",
            self.layout.lock().level_dir(level),
            layout::file_name(min, max)
        )
    }

    /// Creates the object at `rel` (relative to the replica root) unless it exists: a
    /// conditional put (`If-None-Match: *` on S3), so that of two writers exactly one wins.
    ///
    /// A retried attempt may find the object its predecessor created without an answer:
    /// AlreadyExists then too, and the caller decides whose it is.
    pub async fn put_new(&self, rel: &str, bytes: Bytes) -> Result<Created> {
        self.put_mode(rel, bytes, object_store::PutMode::Create)
            .await
    }

    /// Replaces (or creates) the object at `rel`: for objects that change, such as the
    /// manifest; LTX files are written with `put_new`.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.put_mode(rel, bytes, object_store::PutMode::Overwrite)
            .await
            .map(|_| ())
    }

    /// One object written whole (encrypted first with age keys), in `mode`.
    async fn put_mode(
        &self,
        rel: &str,
        bytes: Bytes,
        mode: object_store::PutMode,
    ) -> Result<Created> {
        use object_store::{PutOptions, PutPayload};
        let path = join(&self.backend.root, rel);
        let bytes = match &self.keys {
            Some(keys) => Bytes::from(
                keys.seal(&bytes)
                    .map_err(|e| Error::io(format!("encrypting {path}"), e))?,
            ),
            None => bytes,
        };
        let what = || format!("writing {path} ({})", self.url);
        self.call(&what, false, || async {
            self.stats.put_requests.fetch_add(1, Ordering::Relaxed);
            let n = bytes.len() as u64;
            let opts = PutOptions {
                mode: mode.clone(),
                attributes: self.backend.put_attributes.clone(),
                ..Default::default()
            };
            match self
                .backend
                .store
                .put_opts(&path, PutPayload::from(bytes.clone()), opts)
                .await
            {
                Ok(_) => {
                    self.stats.put_bytes.fetch_add(n, Ordering::Relaxed);
                    Ok(Created::Yes)
                }
                // S3 answers 409 ConditionalRequestConflict while another conditional
                // write of the name is in flight: nothing exists yet, so AWS advises to
                // retry (the retry then finds the winner's object, or creates it).
                Err(e @ object_store::Error::AlreadyExists { .. })
                    if e.to_string().contains("ConditionalRequestConflict") =>
                {
                    let source = Box::new(e);
                    let e = object_store::Error::Generic {
                        store: "S3",
                        source,
                    };
                    Err(self.fail(path.to_string(), e))
                }
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(Created::AlreadyExists),
                Err(e) => Err(self.fail(path.to_string(), e)),
            }
        })
        .await
    }

    /// Uploads the local file `local` to `rel` unless the object exists. Up to
    /// [`STREAM_ABOVE`] bytes this is one conditional put; a larger file streams from disk
    /// in a multipart upload (which has no create-only mode, so existence is checked first:
    /// callers that need a single writer claim the name beforehand, as the primary does).
    pub async fn put_file(&self, rel: &str, local: &std::path::Path) -> Result<Created> {
        let io = |e| Error::io(format!("reading {}", local.display()), e);
        let size = tokio::fs::metadata(local).await.map_err(io)?.len();
        if size <= STREAM_ABOVE {
            let bytes = tokio::fs::read(local).await.map_err(io)?;
            return self.put_new(rel, Bytes::from(bytes)).await;
        }
        let Some(keys) = self.keys.clone() else {
            return self.put_stream(rel, local, size).await;
        };
        // Encrypted beside the file first (streaming), then uploaded from there.
        let mut sealed = local.as_os_str().to_owned();
        sealed.push(".age");
        let sealed = std::path::PathBuf::from(sealed);
        let (src, dst) = (local.to_path_buf(), sealed.clone());
        tokio::task::spawn_blocking(move || keys.seal_file(&src, &dst))
            .await
            .map_err(|e| Error::Internal(format!("encrypting {}: {e}", local.display())))?
            .map_err(|e| Error::io(format!("encrypting {}", local.display()), e))?;
        let size = tokio::fs::metadata(&sealed).await.map_err(io)?.len();
        let out = self.put_stream(rel, &sealed, size).await;
        let _ = tokio::fs::remove_file(&sealed).await;
        out
    }

    /// Uploads `local` (`size` bytes, as is) to `rel` in a multipart upload, unless the
    /// object exists.
    async fn put_stream(&self, rel: &str, local: &std::path::Path, size: u64) -> Result<Created> {
        use tokio::io::AsyncReadExt;
        let io = |e| Error::io(format!("reading {}", local.display()), e);
        let path = join(&self.backend.root, rel);
        match self.backend.store.head(&path).await {
            Ok(_) => return Ok(Created::AlreadyExists),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fail(path.to_string(), e)),
        }
        self.stats.put_requests.fetch_add(1, Ordering::Relaxed);
        let fail = |e| self.fail(path.to_string(), e);
        let opts = object_store::PutMultipartOptions {
            attributes: self.backend.put_attributes.clone(),
            ..Default::default()
        };
        let upload = self
            .backend
            .store
            .put_multipart_opts(&path, opts)
            .await
            .map_err(fail)?;
        let part = self.backend.part_size;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, part);
        let mut f = tokio::fs::File::open(local).await.map_err(io)?;
        let mut buf = vec![0u8; part];
        loop {
            let n = f.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(self.backend.multipart_concurrency)
                .await
                .map_err(fail)?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(fail)?;
        self.stats.put_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(Created::Yes)
    }

    /// Deletes the object at `rel`; one that is already gone is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        let path = join(&self.backend.root, rel);
        let what = || format!("deleting {path} ({})", self.url);
        self.call(&what, false, || async {
            match self.backend.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail(path.to_string(), e)),
            }
        })
        .await
    }

    /// Whether the store honours create-only writes, on which the single-writer claims
    /// depend: a probe object is created twice (the second must fail), then deleted.
    pub async fn honours_create_only(&self) -> Result<bool> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let rel = format!("probes/create-only-{}-{nanos}", std::process::id());
        let probe = Bytes::from_static(b"litestream: create-only probe\n");
        // The first write may answer AlreadyExists too: a retry after an answer that was
        // lost finds its own object (the name is this process's alone).
        self.put_new(&rel, probe.clone()).await?;
        let second = self.put_new(&rel, probe).await?;
        self.delete(&rel).await?;
        Ok(second == Created::AlreadyExists)
    }

    /// Deletes the single-writer claims (`claims/<TXID>`) of TXIDs below `txid`.
    pub async fn delete_claims_below(&self, txid: Txid) -> Result<()> {
        let dir = join(&self.backend.root, "claims");
        let what = || format!("listing {dir} ({})", self.url);
        let metas: Vec<_> = self
            .call(&what, true, || async {
                self.stats.list_requests.fetch_add(1, Ordering::Relaxed);
                self.backend
                    .store
                    .list(Some(&dir))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.fail(dir.to_string(), e))
            })
            .await?;
        for m in metas {
            let below = m
                .location
                .filename()
                .and_then(Txid::parse)
                .is_some_and(|t| t < txid);
            if below {
                self.delete(&format!(
                    "claims/{}",
                    m.location.filename().unwrap_or_default()
                ))
                .await?;
            }
        }
        Ok(())
    }

    /// Whether an object exists at `rel` (a HEAD request).
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        let path = join(&self.backend.root, rel);
        let what = || format!("looking up {path} ({})", self.url);
        self.call(&what, true, || async {
            match self.backend.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.fail(path.to_string(), e)),
            }
        })
        .await
    }

    /// The whole object at `rel`, or None when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let Some(bytes) = self.get_sealed(rel).await? else {
            return Ok(None);
        };
        self.opened(rel, bytes).map(Some)
    }

    /// The plaintext of the whole object at `rel`, as stored `bytes`.
    fn opened(&self, rel: &str, bytes: Bytes) -> Result<Bytes> {
        let name = format!("{rel} ({})", self.url);
        match &self.keys {
            Some(keys) if !keys.decrypts() => Err(crypt::needs_identity(&name)),
            Some(keys) => Ok(Bytes::from(keys.open_whole(&name, &bytes)?)),
            None if bytes.starts_with(crypt::MAGIC) => Err(crypt::needs_identity(&name)),
            None => Ok(bytes),
        }
    }

    /// The object at `rel` unless it still has the entity tag `etag` (a conditional GET,
    /// `If-None-Match`: one request, and no body while nothing changed).
    pub async fn get_if_changed(&self, rel: &str, etag: Option<&str>) -> Result<Fetched> {
        match self.fetch_sealed(rel, etag).await? {
            Fetched::Changed { bytes, etag } => Ok(Fetched::Changed {
                bytes: self.opened(rel, bytes)?,
                etag,
            }),
            other => Ok(other),
        }
    }

    /// The object at `rel` as stored, unless it still has the entity tag `etag`.
    async fn fetch_sealed(&self, rel: &str, etag: Option<&str>) -> Result<Fetched> {
        let path = join(&self.backend.root, rel);
        let what = || format!("reading {path} ({})", self.url);
        self.call(&what, true, || async {
            self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
            let opts = object_store::GetOptions {
                if_none_match: etag.map(str::to_string),
                ..Default::default()
            };
            let r = match self.backend.store.get_opts(&path, opts).await {
                Ok(r) => r,
                Err(object_store::Error::NotModified { .. }) => return Ok(Fetched::NotModified),
                Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Missing),
                Err(e) => return Err(self.fail(path.to_string(), e)),
            };
            let etag = r.meta.e_tag.clone();
            let bytes = r
                .bytes()
                .await
                .map_err(|e| self.fail(path.to_string(), e))?;
            self.stats
                .get_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(Fetched::Changed { bytes, etag })
        })
        .await
    }

    /// The whole object at `rel` as stored.
    async fn get_sealed(&self, rel: &str) -> Result<Option<Bytes>> {
        Ok(match self.fetch_sealed(rel, None).await? {
            Fetched::Changed { bytes, .. } => Some(bytes),
            Fetched::Missing | Fetched::NotModified => None,
        })
    }

    /// A range that came back shorter than asked: the object is truncated.
    fn short_read(&self, f: &FileInfo, range: &Range<u64>, got: usize) -> Error {
        Error::corrupt(
            self.describe(f),
            crate::ltx::LtxError::Truncated {
                what: format!("range {}..{} returned {got} bytes", range.start, range.end),
            },
        )
    }

    fn fail(&self, what: String, e: object_store::Error) -> Error {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let what = if what.contains(&self.url) {
            what
        } else {
            format!("{what} ({})", self.url)
        };
        Error::storage(what, e)
    }
}

fn join(base: &Path, rel: &str) -> Path {
    let mut p = base.clone();
    for part in rel.split('/') {
        p = p.clone().join(part);
    }
    p
}
