//! A read replica: the state of one replica URL in this process, shared by every connection
//! that opens it. It owns the store client, the page cache and the current [`Snapshot`];
//! its poller (one tokio task) publishes newer snapshots as Litestream ships files.

pub mod cache;
mod copy_record;
pub mod disk_cache;
pub mod feed;
pub mod files;
pub mod hydrate;
pub mod index;
pub mod meter;
pub mod pace;
pub mod plan;
mod poller;
pub mod prefetch;
pub mod registry;
pub mod restore;
pub mod retain;
pub mod snapshot;
pub mod timetravel;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ltx::{self, Txid};
use crate::storage::url::Timeouts;
use crate::storage::{FileInfo, Store};
use cache::PageCache;
use index::{FileId, Loc};
pub use snapshot::{FileMeta, LoadedFile, Moved, Snapshot};

/// Settings that may change while the replica is open (`PRAGMA litestream_<name> = …`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    /// The longest wait between polls of a replica nobody reads (`poll_interval_max`).
    pub poll_interval_max: Duration,
    pub open_timeout: Duration,
    /// Cold starts: ranged reads in flight, and the most bytes each covers.
    pub restore_concurrency: usize,
    pub restore_part_size: u64,
    /// Follow the replica's manifest (`manifest`), and list anyway this often
    /// (`list_interval`).
    pub manifest: bool,
    pub list_interval: Duration,
    /// Reads fail when the last successful poll is older than this (`max_lag`; 0: never).
    pub max_lag: Duration,
}

/// What the poller last did, for `PRAGMA litestream_stats`.
#[derive(Debug, Default, Clone)]
pub struct PollStatus {
    pub polls: u64,
    pub last_poll: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub replans: u64,
    /// The last error a page read returned to SQLite (SQLite itself can only show its code).
    pub last_read_error: Option<String>,
    /// How polls learn of new files (the change feed), as of the last poll.
    pub feed: feed::FeedStatus,
}

pub struct Replica {
    pub store: Arc<Store>,
    pub cache: PageCache,
    settings: Mutex<Settings>,
    current: RwLock<Arc<Snapshot>>,
    pub status: Mutex<PollStatus>,
    /// Planning state, used by one planner at a time (the poller, or a reader that found
    /// a file gone).
    planner: tokio::sync::Mutex<Planner>,
    next_file_id: AtomicU32,
    wake: tokio::sync::Notify,
    /// Read transactions holding a state now, and the page versions kept for them.
    pub retention: Arc<retain::Retention>,
    read_ahead: ReadAhead,
    /// B-tree aware prefetch (children of interior pages).
    pub prefetcher: prefetch::Prefetcher,
    /// Pages on local disk (`cache_path`), shared across restarts and processes.
    pub disk: Option<disk_cache::DiskCache>,
    /// A full local copy restored in the background (`hydration_enabled`).
    pub hydration: Option<Arc<hydrate::Hydration>>,
    /// How far the newest cold start (restore or hydration) got.
    pub progress: restore::Progress,
    /// Read transactions started on the newest state (the poller backs off without them).
    reads: AtomicU64,
    /// The poller waits longer than `poll_interval` (nobody read lately).
    pub backed_off: std::sync::atomic::AtomicBool,
    /// Headers of files met while time travelling (immutable, small).
    headers: Mutex<HashMap<FileInfo, crate::ltx::Header>>,
    /// Page indexes of files used by past states (time travel).
    indexes: Mutex<files::IndexCache>,
}

/// A state held by a read transaction. While it is held, the page versions it reads are
/// kept readable (see [`retain`]).
pub struct Pinned {
    pub snapshot: Arc<Snapshot>,
    /// The publish epoch of a pinned newest state; none for a past state (time travel).
    epoch: Option<u64>,
    replica: Arc<Replica>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(epoch) = self.epoch {
            self.replica.retention.unpin(epoch);
        }
    }
}

/// What the planner remembers between polls.
#[derive(Default)]
struct Planner {
    /// Newest file listed per level: the next listing of that level starts after it.
    last_listed: HashMap<u8, FileInfo>,
    /// Listed files that may extend or compact the current chain.
    pending: Vec<FileInfo>,
    /// Stable ids of the files met so far, so cache keys survive a re-plan.
    ids: HashMap<FileInfo, FileId>,
    /// The change feed, as far as the polls followed it.
    follow: feed::Follow,
}

impl Replica {
    /// Opens the replica: lists it, plans, loads the page indexes of the plan, and starts
    /// the poller. Waits up to `open_timeout` for a replica that has no files yet.
    pub fn open(config: &Config) -> Result<Arc<Replica>> {
        let store = Arc::new(Store::open(
            &config.replica_url,
            Timeouts {
                retry_for: config.open_timeout,
            },
            config.age.clone(),
            &config.sse,
        )?);
        store.set_hedge_after(config.hedge_after);
        let local = store.is_local();
        let disk = match &config.cache_path {
            Some(path) => Some(disk_cache::DiskCache::open(
                path,
                &config.replica_url,
                config.disk_cache_size,
            )?),
            None => None,
        };
        let replica = Arc::new(Replica {
            store,
            cache: PageCache::new(config.cache_size),
            settings: Mutex::new(Settings {
                poll_interval: config.poll_interval,
                poll_interval_max: config.poll_interval_max,
                open_timeout: config.open_timeout,
                restore_concurrency: config.restore_concurrency,
                restore_part_size: config.restore_part_size,
                manifest: config.manifest,
                list_interval: config.list_interval,
                max_lag: config.max_lag,
            }),
            current: RwLock::new(Arc::new(Snapshot {
                txid: Txid::ZERO,
                page_size: 4096,
                timestamp_ms: 0,
                checksum: None,
                index: Default::default(),
                files: Default::default(),
                chain: Vec::new(),
            })),
            status: Mutex::new(PollStatus::default()),
            planner: tokio::sync::Mutex::new(Planner::default()),
            next_file_id: AtomicU32::new(0),
            wake: tokio::sync::Notify::new(),
            retention: Arc::new(retain::Retention::new(config.retain_size)),
            read_ahead: ReadAhead::default(),
            // A local replica's miss costs a system call: no b-tree prefetch unless asked.
            prefetcher: prefetch::Prefetcher::new(config.prefetch.unwrap_or(if local {
                0
            } else {
                prefetch::DEFAULT_PREFETCH
            })),
            disk,
            hydration: config.hydration.clone().map(|path| {
                let path =
                    path.unwrap_or_else(|| hydrate::Hydration::default_path(&config.replica_url));
                Arc::new(hydrate::Hydration::new(path, &config.replica_url))
            }),
            progress: restore::Progress::default(),
            reads: AtomicU64::new(0),
            backed_off: std::sync::atomic::AtomicBool::new(false),
            headers: Mutex::new(HashMap::new()),
            indexes: Mutex::new(files::IndexCache::new(INDEX_CACHE_ENTRIES)),
        });
        if let Some(rate) = config.max_requests_per_second {
            pace::set_rate(rate);
        }
        let r = replica.clone();
        let (timeout, poll) = (config.open_timeout, config.poll_interval);
        crate::runtime::block_on(Self::initial_plan(r, timeout, poll))?;
        poller::start(&replica)?;
        if let Some(h) = replica.hydration.clone() {
            let r = Arc::downgrade(&replica);
            std::thread::Builder::new()
                .name("litestream-hydrate".into())
                .spawn(move || h.run(r))
                .map_err(|e| Error::io("starting the hydration thread", e))?;
        }
        Ok(replica)
    }

    /// Plans until the replica has files, or `timeout` passes. Each listing is bounded by
    /// the store's retry window (`open_timeout`) and its per-attempt limit, so a store that
    /// accepts connections and never answers cannot hold the open; loading the files listed
    /// is not (a large replica may take longer than that).
    async fn initial_plan(r: Arc<Replica>, timeout: Duration, poll: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let listed = r.store.list_all().await?;
            let mut planner = r.planner.lock().await;
            match r.replan_from(&mut planner, listed, true).await {
                Err(Error::Empty { .. }) if Instant::now() < deadline => {
                    drop(planner);
                    tokio::time::sleep(poll.min(Duration::from_millis(250))).await;
                }
                Err(Error::Empty { url, .. }) => {
                    return Err(Error::Empty {
                        url,
                        note: format!(" (waited open_timeout={timeout:?})"),
                    })
                }
                other => return other,
            }
        }
    }

    /// Before a read transaction on the newest state: an error when `max_lag` is set and
    /// the replica has not answered a poll for longer (it was deleted, the store is down),
    /// recorded as the last read error too.
    pub fn check_lag(&self) -> Result<()> {
        let max = self.settings.lock().max_lag;
        if max.is_zero() {
            return Ok(());
        }
        let mut status = self.status.lock();
        let age = status
            .last_success
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age <= max {
            return Ok(());
        }
        let e = Error::Stale {
            url: self.store.url().to_string(),
            age_secs: age.as_secs(),
            max_lag: crate::units::format_duration(max),
            cause: status
                .last_error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}")),
        };
        status.last_read_error = Some(e.to_string());
        Err(e)
    }

    /// The newest published state. A reader pins it for one read transaction.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    /// Read transactions started on the newest state so far (and SQL functions that asked
    /// about it).
    pub fn reads_started(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Someone looked at the newest state outside a read transaction.
    pub fn note_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Before a read transaction on the newest state: when the poller has backed off (nobody
    /// read for a while) and its last poll is older than `poll_interval`, poll now, so that
    /// the transaction sees what a reader polling all along would. A failed poll is logged
    /// and the transaction goes on with the state there is.
    pub fn fresh_for_reading(self: &Arc<Self>) {
        if !self.backed_off.load(Ordering::Relaxed) {
            return;
        }
        let base = self.settings().poll_interval;
        let stale = self
            .status
            .lock()
            .last_success
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > base);
        if !stale {
            return;
        }
        let started = SystemTime::now();
        if let Err(e) = self.catch_up_now(false) {
            crate::log_warn!("polling {} before a read failed: {e}", self.store.url());
            return;
        }
        let mut status = self.status.lock();
        status.polls += 1;
        status.last_poll = Some(started);
        status.last_success = status.last_poll;
        drop(status);
        self.backed_off.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Pins a state (the newest, or a past one) for a read transaction.
    pub fn pin(self: &Arc<Self>, past: Option<&Arc<Snapshot>>) -> Pinned {
        let (snapshot, epoch) = match past {
            Some(past) => (past.clone(), None),
            None => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                let (snap, epoch) = self.retention.pin(|| self.current());
                (snap, Some(epoch))
            }
        };
        Pinned {
            snapshot,
            epoch,
            replica: self.clone(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().clone()
    }

    pub fn set_poll_interval(&self, d: Duration) {
        self.settings.lock().poll_interval = d;
        self.wake.notify_one();
    }

    /// Makes `snap` the newest state. Cache entries of pages it moved to another file with the
    /// same content are re-keyed; superseded versions are kept for read transactions pinned
    /// to older states that may read them, and dropped otherwise.
    fn publish(&self, snap: Snapshot, moved: &[Moved]) {
        match &self.hydration {
            Some(h) => h.publishing(&self.current(), snap, moved, |s| self.publish_now(s, moved)),
            None => self.publish_now(snap, moved),
        }
    }

    fn publish_now(&self, snap: Snapshot, moved: &[Moved]) {
        let prev = self.current();
        let next = Arc::new(snap);
        let out = self.retention.publish(&prev, &next, moved, || {
            *self.current.write() = next.clone();
        });
        for m in moved {
            if let Some(to) = m.to {
                self.cache.rekey((m.from.file, m.pgno), (to.file, m.pgno));
            }
        }
        for key in out.unneeded {
            self.cache.remove(key);
        }
        let mut wanted = out.superseded;
        wanted.extend(self.retention.take_deferred());
        self.keep_superseded(wanted, &next);
        self.retention.release_files(&next.files);
    }

    /// Keeps superseded versions that pinned states may read: from the page cache or the
    /// disk cache, else as a redirect to a compacted file among `next`'s that holds the same
    /// version, else fetched now while their files still exist (in the background: a pinned
    /// reader that gets there first reads the file itself). What cannot be kept now is
    /// tried again at the next publish (Litestream may delete an L0 file as soon as the
    /// compaction that replaces it is written, before we list that compaction).
    fn keep_superseded(&self, wanted: Vec<retain::Wanted>, next: &Snapshot) {
        let mut fetch = Vec::new();
        for w in wanted {
            let held = || {
                let frame = self.retention.held_frame(w.loc)?;
                let page = ltx::decode_page_frame(&frame, w.meta.header.page_size, w.key.1);
                page.ok().map(Arc::from)
            };
            let page = self.cache.take(w.key).or_else(held).or_else(|| {
                let disk = self.disk.as_ref()?;
                Some(disk.get(&w.meta, w.key.1)?.into())
            });
            if let Some(page) = page {
                self.retention
                    .keep(w.key, retain::Kept::Page(page), w.epoch);
            } else if let Some((meta, loc)) = self.same_version_in(&w, next) {
                self.retention
                    .keep(w.key, retain::Kept::Elsewhere { meta, loc }, w.epoch);
            } else if w.gone {
                self.retention.defer(w);
            } else {
                fetch.push(w);
            }
        }
        // What the budget cannot hold is not worth a request (a re-plan may replace most
        // of the database at once).
        let room = self.retention.usage().budget / next.page_size.max(512) as u64;
        fetch.truncate(room.min(usize::MAX as u64) as usize);
        if fetch.is_empty() {
            return;
        }
        let (store, retention) = (self.store.clone(), self.retention.clone());
        let task = async move {
            for (mut w, page) in fetch_frames(&store, fetch).await {
                match page {
                    Ok(page) => retention.keep(w.key, retain::Kept::Page(page), w.epoch),
                    Err(e) => {
                        crate::log_debug!(
                            "keeping page {} of {} for a pinned read transaction: {e}",
                            w.key.1,
                            store.describe(&w.meta.info)
                        );
                        w.gone = matches!(e, Error::NotFound { .. });
                        retention.defer(w);
                    }
                }
            }
        };
        if let Ok(handle) = crate::runtime::handle() {
            handle.spawn(task);
        }
    }

    /// A file among `snap`'s that holds the version `w` wants: one that covers the range of
    /// the version's file and ends by `w.until` holds the newest version of the page within
    /// its range, which is that one. Uses page indexes already in memory only.
    fn same_version_in(&self, w: &retain::Wanted, snap: &Snapshot) -> Option<(Arc<FileMeta>, Loc)> {
        let from = &w.meta.info;
        let pgno = w.key.1;
        let mut indexes = self.indexes.lock();
        snap.files.values().find_map(|f| {
            let covers = f.id != w.meta.id
                && f.info.min <= from.min
                && f.info.max >= from.max
                && f.info.max <= w.until;
            if !covers {
                return None;
            }
            let file = indexes.get(&f.info)?;
            let i = file.pages.binary_search_by_key(&pgno, |e| e.pgno).ok()?;
            let e = &file.pages[i];
            let loc = Loc {
                file: f.id,
                size: e.size,
                offset: e.offset,
            };
            Some((f.clone(), loc))
        })
    }

    /// Caches every page of a file that was read whole: a new L0 file is small, its pages
    /// are the ones that just changed (likely to be read), and once cached they no longer
    /// depend on the file surviving compaction. Litestream may delete an L0 file right
    /// after compacting it, before a reader that pinned a state built on it reads its pages.
    ///
    /// With `current`, only the pages `current` reads from this file are cached, and only
    /// the frames that lie within the bytes read (the head read of a large file at open).
    fn cache_whole_file(&self, file: &LoadedFile, current: Option<&Snapshot>) {
        let Some(bytes) = &file.bytes else { return };
        if current.is_none() {
            self.retention.hold_file(file.meta.id, bytes.clone());
        }
        let run: Vec<(u32, Loc)> = file
            .pages
            .iter()
            .filter(|e| e.offset + e.size as u64 <= bytes.len() as u64)
            .filter(|e| current.is_none_or(|s| s.index.get(e.pgno).file == file.meta.id))
            .map(|e| {
                let loc = Loc {
                    file: file.meta.id,
                    size: e.size,
                    offset: e.offset,
                };
                (e.pgno, loc)
            })
            .collect();
        self.cache_frames(&file.meta, file.meta.header.page_size, bytes, 0, &run, 0);
    }

    fn file_id(&self, planner: &mut Planner, info: &FileInfo) -> FileId {
        *planner
            .ids
            .entry(info.clone())
            .or_insert_with(|| self.next_file_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Loads one file's header and page index, remembering its header for time travel.
    async fn load(&self, planner: &mut Planner, info: &FileInfo) -> Result<LoadedFile> {
        let id = self.file_id(planner, info);
        let file = files::load(&self.store, info, id, 0).await?;
        self.headers
            .lock()
            .insert(info.clone(), file.meta.header.clone());
        self.indexes.lock().put(&file);
        Ok(file)
    }

    /// Loads the files of a chain: indexes from the index cache where it has them, the rest
    /// in parallel, then kept in the cache (files are immutable: a re-plan or a move in time
    /// reloads only what is new). `past`: for time travel, which needs only headers and
    /// indexes (no head read). All must share the first file's page size.
    async fn load_chain(
        &self,
        planner: &mut Planner,
        chain: &[FileInfo],
        past: bool,
    ) -> Result<Vec<LoadedFile>> {
        use futures::StreamExt;
        let mut slots: Vec<Option<LoadedFile>> = {
            let mut cache = self.indexes.lock();
            chain.iter().map(|f| cache.get(f)).collect()
        };
        let missing: Vec<(usize, FileInfo, FileId)> = chain
            .iter()
            .enumerate()
            .filter(|(i, _)| slots[*i].is_none())
            .map(|(i, f)| (i, f.clone(), self.file_id(planner, f)))
            .collect();
        let local = self.store.is_local();
        let mut loads = futures::stream::iter(missing.into_iter().map(|(i, f, id)| {
            let store = self.store.clone();
            // On object storage the live plan reads the first frames with each header (page 1
            // and the schema arrive with the page index); time travel only needs headers, and
            // a local replica's pages cost a system call each.
            let head = if past || local { 0 } else { files::HEAD_READ };
            async move { (i, files::load(&store, &f, id, head).await) }
        }))
        .buffer_unordered(8);
        while let Some((i, file)) = loads.next().await {
            let file = file?;
            self.headers
                .lock()
                .insert(file.meta.info.clone(), file.meta.header.clone());
            self.indexes.lock().put(&file);
            slots[i] = Some(file);
        }
        let loaded: Vec<LoadedFile> = slots.into_iter().flatten().collect();
        if let Some(first) = loaded.first() {
            for file in &loaded {
                files::check_page_size(&self.store, file, first.meta.header.page_size)?;
            }
        }
        Ok(loaded)
    }

    /// Lists the whole replica and rebuilds the state from the best plan. Publishes it if
    /// it is not older than the current one. `strict` (at open) makes gaps an error.
    async fn replan(&self, planner: &mut Planner, strict: bool) -> Result<()> {
        let listed = self.store.list_all().await?;
        self.replan_from(planner, listed, strict).await
    }

    async fn replan_from(
        &self,
        planner: &mut Planner,
        listed: Vec<FileInfo>,
        strict: bool,
    ) -> Result<()> {
        let url = self.store.url().to_string();
        let result = if strict {
            plan::plan(&listed, None)
        } else {
            plan::plan_reachable(&listed, None)
        };
        let chosen = result.map_err(|problem| problem.into_error(url.clone()))?;
        crate::log_debug!(
            "plan: {}",
            chosen
                .files
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let loaded = self.load_chain(planner, &chosen.files, false).await?;
        let Some(snap) = Snapshot::build(&loaded) else {
            return Err(Error::Empty {
                url,
                note: String::new(),
            });
        };
        if !self.store.is_local() {
            for file in &loaded {
                self.cache_whole_file(file, Some(&snap));
            }
        }
        planner.follow.listed(Instant::now());
        planner.last_listed.clear();
        for f in &listed {
            let last = planner
                .last_listed
                .entry(f.level)
                .or_insert_with(|| f.clone());
            if f.name() > last.name() {
                *last = f.clone();
            }
        }
        planner.pending.clear();
        let cur = self.current();
        if snap.txid >= cur.txid {
            let mut status = self.status.lock();
            status.replans += 1;
            status.last_success = Some(SystemTime::now());
            drop(status);
            let moved = replaced(&cur, &snap);
            self.publish(snap, &moved);
        }
        Ok(())
    }

    /// Reads page `pgno` of `snap`. `None` means the page reads as zeros (the lock page, a
    /// page no file holds).
    pub fn read_page(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        pgno: u32,
    ) -> Result<Option<Arc<[u8]>>> {
        self.read_page_metered(snap, pgno, None)
    }

    /// [`Replica::read_page`] for a connection, whose `meters` are charged for what a miss
    /// costs. A hit spends nothing, so the meters are installed for misses alone and the
    /// hit path stays an index lookup and a cache probe.
    pub fn read_page_metered(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        pgno: u32,
        meters: Option<&Arc<meter::Meters>>,
    ) -> Result<Option<Arc<[u8]>>> {
        let loc = snap.index.get(pgno);
        if loc.is_none() {
            return Ok(None);
        }
        if let Some(page) = self.cache.get((loc.file, pgno)) {
            return Ok(Some(page));
        }
        let result = match meters {
            Some(m) => meter::scope(m, || self.read_miss(snap, pgno, loc)),
            None => self.read_miss(snap, pgno, loc),
        };
        let result = result.map_err(|e| self.too_old(snap, e));
        if let Err(e) = &result {
            self.status.lock().last_read_error = Some(e.to_string());
        }
        result
    }

    /// A file that an older state reads is gone, and no copy of the page was kept: the
    /// state is older than the replica holds (not an I/O error: a new transaction reads).
    fn too_old(&self, snap: &Snapshot, e: Error) -> Error {
        let newest = self.current().txid;
        match e {
            Error::NotFound { file } if snap.txid < newest => Error::SnapshotTooOld {
                txid: snap.txid.to_string(),
                newest: newest.to_string(),
                file,
                retain_size: self.retention.usage().budget,
            },
            other => other,
        }
    }

    /// Reads a page location kept for pinned states: its bytes, or the same content in
    /// the file a compaction moved it to (itself perhaps kept in turn).
    fn read_kept(&self, mut kept: retain::Kept, page_size: u32, pgno: u32) -> Result<Arc<[u8]>> {
        loop {
            let (meta, loc) = match kept {
                retain::Kept::Page(page) => return Ok(page),
                retain::Kept::Elsewhere { meta, loc } => (meta, loc),
            };
            if let Some(page) = self.cache.get((loc.file, pgno)) {
                return Ok(page);
            }
            if let Some(next) = self.retention.get((loc.file, pgno)) {
                kept = next;
                continue;
            }
            if let Some(page) = self.disk.as_ref().and_then(|d| d.get(&meta, pgno)) {
                return Ok(page.into());
            }
            meter::allow(1)?;
            let started = Instant::now();
            let range = loc.offset..loc.offset + loc.size as u64;
            let bytes = self.store.read_range_blocking(&meta.info, range)?;
            meter::charge(1, bytes.len() as u64, started.elapsed());
            let page: Arc<[u8]> = page_in(&bytes, loc.offset, loc, page_size, pgno)
                .map_err(|e| Error::corrupt(self.store.describe(&meta.info), e))?
                .into();
            self.cache.insert((loc.file, pgno), page.clone());
            return Ok(page);
        }
    }

    /// A page not in the memory cache: from the hydrated copy, the disk cache, or storage.
    fn read_miss(
        self: &Arc<Self>,
        snap: &Arc<Snapshot>,
        pgno: u32,
        loc: Loc,
    ) -> Result<Option<Arc<[u8]>>> {
        if let Some(kept) = self.retention.get((loc.file, pgno)) {
            return self.read_kept(kept, snap.page_size, pgno).map(Some);
        }
        if let Some(page) = self.hydration.as_ref().and_then(|h| h.read(snap, pgno)) {
            return Ok(Some(page));
        }
        if let Some(page) = self.read_disk_cache(snap, pgno, loc) {
            return Ok(Some(page));
        }
        let ahead = self.prefetcher.on_miss(pgno);
        let fetched = if ahead.is_empty() {
            self.fetch(snap, pgno, loc)
        } else {
            self.prefetch(snap, pgno, loc, &ahead)
        };
        match fetched {
            Err(Error::NotFound { file }) => {
                // Compaction or retention deleted the file under us. Catch up with the
                // replica now: a poll re-points what compaction moved (and keeps it for
                // pinned states); failing that, a re-plan from a full listing.
                crate::log_info!("{file} is gone; catching up");
                for replan in [false, true] {
                    if let Err(e) = self.catch_up_now(replan) {
                        crate::log_warn!("catching up after {file} vanished failed: {e}");
                        self.status.lock().last_error = Some(e.to_string());
                        continue;
                    }
                    if let Some(page) = self.read_after_catch_up(snap, pgno, loc)? {
                        return Ok(Some(page));
                    }
                }
                // The read failed as a read: report the missing file.
                Err(Error::NotFound { file })
            }
            other => other.map(Some),
        }
    }

    /// Page `pgno` of `snap` (at `loc`, whose file is gone) after a catch-up: kept for
    /// pinned states, or the newest state's copy when it is no newer than `snap`'s.
    fn read_after_catch_up(
        &self,
        snap: &Snapshot,
        pgno: u32,
        loc: Loc,
    ) -> Result<Option<Arc<[u8]>>> {
        if let Some(kept) = self.retention.get((loc.file, pgno)) {
            return self.read_kept(kept, snap.page_size, pgno).map(Some);
        }
        let latest = self.current();
        let loc = latest.index.get(pgno);
        let usable = latest
            .file(loc.file)
            .is_some_and(|m| m.info.max <= snap.txid);
        if loc.is_none() || !usable {
            return Ok(None);
        }
        if let Some(page) = self.cache.get((loc.file, pgno)) {
            return Ok(Some(page));
        }
        self.fetch(&latest, pgno, loc).map(Some)
    }

    /// Fetches `pgno` from storage, and with it the frames of the following pages when
    /// they sit right after it in the same file and are not cached yet: one ranged read
    /// serves a run of pages (a table scan reads whole runs; a point lookup pays little
    /// more than for one page, since a request's latency dwarfs its size).
    fn fetch(&self, snap: &Snapshot, pgno: u32, loc: Loc) -> Result<Arc<[u8]>> {
        let meta = snap
            .file(loc.file)
            .ok_or_else(|| Error::Internal(format!("page {pgno} points to an unknown file")))?
            .clone();
        let mut run = vec![(pgno, loc)];
        let mut end = loc.offset + loc.size as u64;
        let mut next = pgno + 1;
        // On object storage a request's latency dwarfs its size: even a random miss reads a
        // few neighbours (overflow chains, the next leaf).
        let min = if self.store.is_local() {
            1
        } else {
            REMOTE_MIN_WINDOW
        };
        let window = self.read_ahead.window(pgno).max(min);
        while next <= snap.commit() && run.len() < window && end - loc.offset < READ_AHEAD_BYTES {
            let l = snap.index.get(next);
            if l.is_none()
                || l.file != loc.file
                || l.offset != end
                || self.cache.contains((l.file, next))
            {
                break;
            }
            run.push((next, l));
            end += l.size as u64;
            next += 1;
        }
        self.read_ahead.fetched(next);
        meter::allow(1)?;
        let started = Instant::now();
        let bytes = self
            .store
            .read_range_blocking(&meta.info, loc.offset..end)?;
        meter::charge(1, bytes.len() as u64, started.elapsed());
        let wanted = self.cache_frames(&meta, snap.page_size, &bytes, loc.offset, &run, pgno);
        match wanted {
            Some(Ok(page)) => Ok(page),
            Some(Err(e)) => Err(Error::corrupt(self.store.describe(&meta.info), e)),
            None => Err(Error::Internal(format!(
                "page {pgno} was not in its own read"
            ))),
        }
    }

    /// Decodes the frames `run` (pgno, location) out of `bytes`, which start at file offset
    /// `start`, and caches each page (noting the children of interior b-tree pages for
    /// prefetch), in memory and in the disk cache. Returns the outcome for page `want`; a bad
    /// neighbour is not cached and is reported when it is read itself.
    fn cache_frames(
        &self,
        meta: &FileMeta,
        page_size: u32,
        bytes: &[u8],
        start: u64,
        run: &[(u32, Loc)],
        want: u32,
    ) -> Option<std::result::Result<Arc<[u8]>, ltx::LtxError>> {
        let mut first = None;
        for (pgno, l) in run {
            let page = page_in(bytes, start, *l, page_size, *pgno).map(Arc::<[u8]>::from);
            if let Ok(p) = &page {
                self.prefetcher.observe(*pgno, p);
                self.cache.insert((meta.id, *pgno), p.clone());
                if let Some(disk) = &self.disk {
                    disk.put(meta, *pgno, p);
                }
            }
            if *pgno == want {
                first = Some(page);
            }
        }
        first
    }

    /// Page `pgno` of `snap` (at `loc`) from the disk cache, kept in memory too.
    fn read_disk_cache(&self, snap: &Snapshot, pgno: u32, loc: Loc) -> Option<Arc<[u8]>> {
        let disk = self.disk.as_ref()?;
        let meta = snap.file(loc.file)?;
        let page: Arc<[u8]> = disk.get(meta, pgno)?.into();
        self.prefetcher.observe(pgno, &page);
        self.cache.insert((loc.file, pgno), page.clone());
        Some(page)
    }

    /// Polls now (or re-plans from a full listing) before returning: a read found a file
    /// gone.
    pub fn catch_up_now(self: &Arc<Self>, replan: bool) -> Result<()> {
        let r = self.clone();
        crate::runtime::block_on(async move {
            let mut planner = r.planner.lock().await;
            if replan {
                r.replan(&mut planner, false).await
            } else {
                poller::poll_planned(&r, &mut planner, true)
                    .await
                    .map(|_| ())
            }
        })
    }
}

/// The locations of `prev` that `next`, built afresh by a re-plan, no longer reads. A page
/// whose location in `next` is a file ending at or before `prev`'s TXID did not change
/// between the two states (that file holds its newest version up to `next`), so its
/// location moves with the same content; any other is superseded.
fn replaced(prev: &Snapshot, next: &Snapshot) -> Vec<Moved> {
    let unchanged = |to: Loc| next.file(to.file).is_some_and(|f| f.info.max <= prev.txid);
    prev.index
        .differing(&next.index)
        .into_iter()
        .map(|pgno| (pgno, prev.index.get(pgno), next.index.get(pgno)))
        .filter(|(_, from, _)| !from.is_none())
        .map(|(pgno, from, to)| Moved {
            pgno,
            from,
            to: (!to.is_none() && unchanged(to)).then_some(to),
            until: prev.txid,
        })
        .collect()
}

/// Fetches the frames of `wanted` in coalesced ranged reads (one per run of nearby frames
/// of a file).
async fn fetch_frames(
    store: &Store,
    wanted: Vec<retain::Wanted>,
) -> Vec<(retain::Wanted, Result<Arc<[u8]>>)> {
    let mut by_key: HashMap<cache::PageKey, retain::Wanted> =
        wanted.into_iter().map(|w| (w.key, w)).collect();
    let frames = by_key.values().map(|w| (w.key.1, w.loc)).collect();
    let mut out = Vec::with_capacity(by_key.len());
    for r in prefetch::coalesce(frames, READ_AHEAD_BYTES) {
        let Some(meta) = r.run.first().and_then(|(p, _)| by_key.get(&(r.file, *p))) else {
            continue;
        };
        let meta = meta.meta.clone();
        let bytes = store.read_range(&meta.info, r.start..r.end).await;
        let bytes = bytes.map_err(Arc::new);
        for (pgno, loc) in r.run {
            let Some(w) = by_key.remove(&(loc.file, pgno)) else {
                continue;
            };
            let page = match &bytes {
                Ok(bytes) => page_in(bytes, r.start, loc, meta.header.page_size, pgno)
                    .map(Arc::from)
                    .map_err(|e| Error::corrupt(store.describe(&meta.info), e)),
                Err(e) => Err(Error::Again(e.clone())),
            };
            out.push((w, page));
        }
    }
    out
}

/// The page in the frame at `loc`, out of `bytes` read from its file from offset `start`.
fn page_in(
    bytes: &[u8],
    start: u64,
    loc: Loc,
    page_size: u32,
    pgno: u32,
) -> std::result::Result<Vec<u8>, ltx::LtxError> {
    let frame = (loc.offset.checked_sub(start))
        .and_then(|at| bytes.get(at as usize..(at + loc.size as u64) as usize))
        .ok_or_else(|| ltx::LtxError::truncated(format!("frame of page {pgno}")))?;
    ltx::decode_page_frame(frame, page_size, pgno)
}

/// How many page-index entries (16 bytes each) the index cache keeps: 32 MiB.
const INDEX_CACHE_ENTRIES: usize = 2 << 20;

/// Pages a miss on a remote store reads at least (when they follow it in the same file).
const REMOTE_MIN_WINDOW: usize = 4;

/// How far one page miss reads ahead through the frames of the same file, at most.
const READ_AHEAD_BYTES: u64 = 128 * 1024;

/// Sizes read-ahead from the access pattern, as an OS does: a miss right after the last
/// run doubles the window (a scan), any other miss starts again from one page (a point
/// lookup decodes only the page it needs). Shared by the replica's readers; a race only
/// blurs the heuristic.
#[derive(Default)]
struct ReadAhead {
    /// The page after the last run fetched.
    next: AtomicU32,
    /// Pages the next sequential miss may fetch.
    window: AtomicU32,
}

impl ReadAhead {
    fn window(&self, pgno: u32) -> usize {
        let w = if pgno == self.next.load(Ordering::Relaxed) {
            (self.window.load(Ordering::Relaxed).max(1) * 2).min(1024)
        } else {
            1
        };
        self.window.store(w, Ordering::Relaxed);
        w as usize
    }

    fn fetched(&self, next: u32) {
        self.next.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::ReadAhead;

    #[test]
    fn read_ahead_grows_on_sequential_misses_and_resets_on_random_ones() {
        let ra = ReadAhead::default();
        assert_eq!(ra.window(10), 1, "a first miss fetches one page");
        ra.fetched(11);
        assert_eq!(ra.window(11), 2, "the next page: sequential, double");
        ra.fetched(13);
        assert_eq!(ra.window(13), 4);
        ra.fetched(17);
        assert_eq!(
            ra.window(500),
            1,
            "a jump: back to one page (a point lookup)"
        );
        // A long scan: each miss is the page after the last run; the window doubles up to
        // its cap and stays there.
        let mut pos = 1000u32;
        let mut windows = Vec::new();
        for _ in 0..14 {
            let w = ra.window(pos);
            windows.push(w);
            pos += w as u32;
            ra.fetched(pos);
        }
        assert_eq!(&windows[..4], &[1, 2, 4, 8]);
        assert_eq!(*windows.last().unwrap(), 1024, "{windows:?}");
    }
}
