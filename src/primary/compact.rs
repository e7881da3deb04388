//! Compaction and retention inside the primary, as Litestream does them, so that a replica
//! written only by this extension stays fast to read and bounded in size:
//!
//! - every `levels` interval (Litestream's defaults: 30s, 5m, 1h), the files of level k-1
//!   that follow the newest file of level k are merged into one level-k file (the newest
//!   version of each page; timestamp, commit and TXID range of the inputs);
//! - every `snapshot_interval` (24h) a snapshot (level 9) of the newest shipped state;
//! - L0 files covered by L1 are deleted `l0_retention` (5m) after they were compacted;
//! - snapshots older than `snapshot_retention` (24h) are deleted (the newest is always kept),
//!   and with them the files of levels 1–3 and the claims below the oldest one kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Primary;
use crate::config::Retention;
use crate::error::{Error, Result};
use crate::ltx::{decode_file, Encoder, Header, Txid};
use crate::storage::layout::SNAPSHOT_LEVEL;
use crate::storage::FileInfo;

pub(super) fn start(p: &Arc<Primary>) -> Result<()> {
    crate::runtime::handle()?.spawn(run(Arc::downgrade(p)));
    Ok(())
}

struct Compactor {
    last_run: BTreeMap<u8, Instant>,
    last_snapshot: Option<Instant>,
    last_retention: Option<Instant>,
    /// L0 files compacted into L1, and when: deleted once `l0_retention` has passed.
    compacted_l0: Vec<(FileInfo, Instant)>,
}

async fn run(weak: Weak<Primary>) {
    let started = Instant::now();
    let mut c = Compactor {
        last_run: BTreeMap::new(),
        last_snapshot: None,
        last_retention: None,
        compacted_l0: Vec::new(),
    };
    loop {
        let Some(p) = weak.upgrade() else { return };
        let r = p.config.primary.retention.clone();
        let tick = r
            .levels
            .iter()
            .copied()
            .min()
            .unwrap_or(r.snapshot_interval)
            .min(r.l0_retention)
            .clamp(Duration::from_millis(200), Duration::from_secs(10))
            / 2;
        if let Err(e) = c.tick(&p, &r, started).await {
            crate::log_warn!("litestream: {}: compaction: {e}", p.db_path.display());
        }
        drop(p);
        tokio::time::sleep(tick).await;
    }
}

impl Compactor {
    async fn tick(&mut self, p: &Primary, r: &Retention, started: Instant) -> Result<()> {
        let due = |last: Option<&Instant>, every: Duration| {
            last.copied().unwrap_or(started).elapsed() >= every
        };
        for (i, every) in r.levels.iter().enumerate() {
            let level = i as u8 + 1;
            if due(self.last_run.get(&level), *every) {
                self.last_run.insert(level, Instant::now());
                if let Some(inputs) = compact_level(p, level).await? {
                    if level == 1 {
                        let now = Instant::now();
                        self.compacted_l0
                            .extend(inputs.into_iter().map(|f| (f, now)));
                    }
                }
            }
        }
        if due(self.last_snapshot.as_ref(), r.snapshot_interval) {
            self.last_snapshot = Some(Instant::now());
            snapshot(p).await?;
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.compacted_l0)
            .into_iter()
            .partition(|(_, at)| at.elapsed() >= r.l0_retention);
        self.compacted_l0 = kept;
        for (f, _) in expired {
            p.store.delete(&p.store.file_rel(0, f.min, f.max)).await?;
        }
        // Retention lists every level: not on every tick.
        if due(
            self.last_retention.as_ref(),
            r.l0_retention.min(r.snapshot_retention) / 2,
        ) {
            self.last_retention = Some(Instant::now());
            enforce_snapshot_retention(p, r).await?;
        }
        Ok(())
    }
}

/// Merges the files of `level - 1` that follow the newest file of `level` into one file of
/// `level`. Returns the inputs, or None when there was nothing to merge.
async fn compact_level(p: &Primary, level: u8) -> Result<Option<Vec<FileInfo>>> {
    let done = p.store.list_level(level, None).await?;
    let below = p.store.list_level(level - 1, None).await?;
    // Continue after the newest file of this level; with none left (retention removed them
    // all), start from the oldest file below.
    let after = match done.iter().map(|f| f.max.get()).max() {
        Some(max) => max,
        None => below.iter().map(|f| f.min.get()).min().unwrap_or(1) - 1,
    };
    let mut inputs = Vec::new();
    let mut next = after + 1;
    for f in &below {
        if f.min.get() < next {
            continue;
        }
        if f.min.get() != next {
            break;
        }
        next = f.max.get() + 1;
        inputs.push(f.clone());
    }
    if inputs.is_empty() {
        return Ok(None);
    }
    let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut last: Option<Header> = None;
    let mut first_pre = 0;
    let mut post = 0;
    let mut checksums = true;
    for f in &inputs {
        let rel = p.store.file_rel(f.level, f.min, f.max);
        let bytes = p.store.get(&rel).await?.ok_or_else(|| Error::NotFound {
            file: p.store.describe(f),
        })?;
        let d = decode_file(&bytes).map_err(|e| Error::corrupt(p.store.describe(f), e))?;
        if last.is_none() {
            first_pre = d.header.pre_apply_checksum;
        }
        checksums &= d.header.has_checksums();
        post = d.trailer.post_apply_checksum;
        pages.extend(d.pages.into_iter().map(|pg| (pg.pgno, pg.data)));
        last = Some(d.header);
    }
    let Some(last) = last else { return Ok(None) };
    let (min, max) = (inputs[0].min, last.max_txid);
    let mut h = Header::new(last.page_size, last.commit, min, max, last.timestamp);
    h.node_id = last.node_id;
    if checksums {
        h.flags &= !Header::FLAG_NO_CHECKSUM;
        h.pre_apply_checksum = first_pre;
    } else {
        post = 0;
    }
    let bytes = encode(h, pages.range(..=last.commit), post)?;
    p.store
        .put_new(&p.store.file_rel(level, min, max), bytes)
        .await?;
    crate::log_info!(
        "litestream: {}: compacted {} files into L{level} {min}-{max}",
        p.db_path.display(),
        inputs.len()
    );
    Ok(Some(inputs))
}

fn encode<'a>(
    h: Header,
    pages: impl Iterator<Item = (&'a u32, &'a Vec<u8>)>,
    post: u64,
) -> Result<Bytes> {
    let what = format!("compacting {}-{}", h.min_txid, h.max_txid);
    let corrupt = |e| Error::corrupt(what.clone(), e);
    let mut enc = Encoder::new(Vec::new(), h).map_err(corrupt)?;
    for (&pgno, data) in pages {
        enc.add_page(pgno, data).map_err(corrupt)?;
    }
    let (out, _) = enc.finish(post).map_err(corrupt)?;
    Ok(Bytes::from(out))
}

/// A snapshot of the newest shipped state, read back through the replica reader.
async fn snapshot(p: &Primary) -> Result<()> {
    let Some(txid) = Some(p.published().shipped_txid).filter(|&t| t > 0) else {
        return Ok(());
    };
    let snaps = p.store.list_level(SNAPSHOT_LEVEL, None).await?;
    if snaps.iter().any(|f| f.max.get() >= txid) {
        return Ok(());
    }
    let mut rc = p.config.clone();
    rc.role = crate::config::Role::Replica;
    rc.poll_interval = Duration::from_secs(3600);
    let (max, bytes) = tokio::task::spawn_blocking(move || -> Result<(Txid, Bytes)> {
        let replica = crate::replica::Replica::open(&rc)?;
        let snap = replica.current();
        let mut h = Header::new(
            snap.page_size,
            snap.commit(),
            Txid::new(1),
            snap.txid,
            snap.timestamp_ms,
        );
        if snap.checksum.is_some() {
            h.flags &= !Header::FLAG_NO_CHECKSUM;
        }
        let mut enc = Encoder::new(Vec::new(), h).map_err(|e| Error::corrupt("snapshot", e))?;
        write_pages(&replica, &snap, &mut enc)?;
        let (out, _) = enc
            .finish(snap.checksum.unwrap_or(0))
            .map_err(|e| Error::corrupt("snapshot", e))?;
        Ok((snap.txid, Bytes::from(out)))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    p.store
        .put_new(&p.store.file_rel(SNAPSHOT_LEVEL, Txid::new(1), max), bytes)
        .await?;
    Ok(())
}

fn write_pages(
    replica: &Arc<crate::replica::Replica>,
    snap: &Arc<crate::replica::Snapshot>,
    enc: &mut Encoder<Vec<u8>>,
) -> Result<()> {
    let lock = crate::ltx::lock_pgno(snap.page_size);
    let zeros = vec![0u8; snap.page_size as usize];
    for pgno in (1..=snap.commit()).filter(|&pg| pg != lock) {
        let page = replica.read_page(snap, pgno)?;
        enc.add_page(pgno, page.as_deref().unwrap_or(&zeros))
            .map_err(|e| Error::corrupt("snapshot", e))?;
    }
    Ok(())
}

/// Deletes snapshots older than the retention (never the newest), then everything of
/// levels 1–3 and the claims below the oldest snapshot kept.
async fn enforce_snapshot_retention(p: &Primary, r: &Retention) -> Result<()> {
    let snaps = p.store.list_level(SNAPSHOT_LEVEL, None).await?;
    let Some(newest) = snaps.iter().max_by_key(|f| f.max) else {
        return Ok(());
    };
    let cutoff = crate::clock::now_ms() - r.snapshot_retention.as_millis() as i64;
    let mut kept_floor = newest.max;
    for f in &snaps {
        if f == newest {
            continue;
        }
        let ts = snapshot_time(p, f).await?;
        if ts < cutoff {
            p.store
                .delete(&p.store.file_rel(f.level, f.min, f.max))
                .await?;
        } else {
            kept_floor = kept_floor.min(f.max);
        }
    }
    for level in 1..=3 {
        for f in p.store.list_level(level, None).await? {
            if f.max < kept_floor {
                p.store
                    .delete(&p.store.file_rel(level, f.min, f.max))
                    .await?;
            }
        }
    }
    for f in p.store.list_level(0, None).await? {
        if f.max < kept_floor {
            p.store.delete(&p.store.file_rel(0, f.min, f.max)).await?;
        }
    }
    p.store.delete_claims_below(kept_floor).await
}

async fn snapshot_time(p: &Primary, f: &FileInfo) -> Result<i64> {
    let b = p
        .store
        .read_range(f, 0..crate::ltx::HEADER_SIZE as u64)
        .await?;
    Header::decode(&b)
        .map(|h| h.timestamp)
        .map_err(|e| Error::corrupt(p.store.describe(f), e))
}
