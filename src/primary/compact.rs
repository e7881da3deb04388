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
    /// What each level holds, as a TXID that grows when it changes: level 0 the shipped
    /// TXID, level k the end of the last file this process compacted into it.
    holds: BTreeMap<u8, u64>,
    /// What level k-1 held when level k last ran; a level whose inputs have not changed
    /// since is not listed again, so an idle database costs no request.
    consumed: BTreeMap<u8, u64>,
    /// Changes (files written or deleted) so far, and the count retention last saw.
    changes: u64,
    retention_saw: Option<(u64, u64)>,
    snapshot_saw: Option<u64>,
}

async fn run(weak: Weak<Primary>) {
    let started = Instant::now();
    let mut c = Compactor {
        last_run: BTreeMap::new(),
        last_snapshot: None,
        last_retention: None,
        compacted_l0: Vec::new(),
        holds: BTreeMap::new(),
        consumed: BTreeMap::new(),
        changes: 0,
        retention_saw: None,
        snapshot_saw: None,
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
        let before = c.changes;
        if let Err(e) = c.tick(&p, &r, started).await {
            crate::log_warn!("litestream: {}: compaction: {e}", p.db_path.display());
        }
        if let Some(l) = p.leader.get() {
            if c.changes != before {
                l.feed.relist().await;
            }
            // Also retries a manifest the shipper failed to write.
            if let Err(e) = l.feed.publish(&p.store).await {
                crate::log_warn!("litestream: {}: manifest: {e}", p.db_path.display());
            }
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
        let shipped = p.published().shipped_txid;
        self.holds.insert(0, shipped);
        for (i, every) in r.levels.iter().enumerate() {
            let level = i as u8 + 1;
            let inputs_hold = self.holds.get(&(level - 1)).copied().unwrap_or(0);
            if due(self.last_run.get(&level), *every)
                && self.consumed.get(&level) != Some(&inputs_hold)
            {
                self.last_run.insert(level, Instant::now());
                let merged = compact_level(p, level).await?;
                // Only once it succeeded: a failed run is tried again at the next interval.
                self.consumed.insert(level, inputs_hold);
                if let Some((inputs, max)) = merged {
                    self.changes += 1;
                    self.holds.insert(level, max.get());
                    if level == 1 {
                        let now = Instant::now();
                        self.compacted_l0
                            .extend(inputs.into_iter().map(|f| (f, now)));
                    }
                }
            }
        }
        if due(self.last_snapshot.as_ref(), r.snapshot_interval)
            && self.snapshot_saw != Some(shipped)
        {
            self.last_snapshot = Some(Instant::now());
            if snapshot(p).await? {
                self.changes += 1;
            }
            self.snapshot_saw = Some(shipped);
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.compacted_l0)
            .into_iter()
            .partition(|(_, at)| at.elapsed() >= r.l0_retention);
        self.compacted_l0 = kept;
        for (f, _) in expired {
            p.store.delete(&p.store.file_rel(0, f.min, f.max)).await?;
            self.changes += 1;
        }
        // Retention lists every level: not on every tick, and not again while nothing
        // changed (a snapshot that expires while the database is idle goes at the next
        // change).
        let saw = (shipped, self.changes);
        if due(
            self.last_retention.as_ref(),
            r.l0_retention.min(r.snapshot_retention) / 2,
        ) && self.retention_saw != Some(saw)
        {
            self.last_retention = Some(Instant::now());
            if enforce_snapshot_retention(p, r).await? {
                self.changes += 1;
            }
            self.retention_saw = Some((shipped, self.changes));
        }
        Ok(())
    }
}

/// Merges the files of `level - 1` that follow the newest file of `level` into one file of
/// `level`. Returns the inputs and the new file's last TXID, or None when there was
/// nothing to merge.
async fn compact_level(p: &Primary, level: u8) -> Result<Option<(Vec<FileInfo>, Txid)>> {
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
    Ok(Some((inputs, max)))
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

/// A snapshot of the newest shipped state, read back through the replica reader. Returns
/// whether one was written.
async fn snapshot(p: &Primary) -> Result<bool> {
    let Some(txid) = Some(p.published().shipped_txid).filter(|&t| t > 0) else {
        return Ok(false);
    };
    let snaps = p.store.list_level(SNAPSHOT_LEVEL, None).await?;
    if snaps.iter().any(|f| f.max.get() >= txid) {
        return Ok(false);
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
    Ok(true)
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
/// levels 1–3 and the claims below the oldest snapshot kept. Returns whether it deleted a
/// file.
async fn enforce_snapshot_retention(p: &Primary, r: &Retention) -> Result<bool> {
    let snaps = p.store.list_level(SNAPSHOT_LEVEL, None).await?;
    let Some(newest) = snaps.iter().max_by_key(|f| f.max) else {
        return Ok(false);
    };
    let cutoff = crate::clock::now_ms() - r.snapshot_retention.as_millis() as i64;
    let mut kept_floor = newest.max;
    let mut doomed = Vec::new();
    for f in &snaps {
        if f == newest {
            continue;
        }
        if snapshot_time(p, f).await? < cutoff {
            doomed.push(f.clone());
        } else {
            kept_floor = kept_floor.min(f.max);
        }
    }
    for level in 0..=3 {
        doomed.extend(
            p.store
                .list_level(level, None)
                .await?
                .into_iter()
                .filter(|f| f.max < kept_floor),
        );
    }
    for f in &doomed {
        p.store
            .delete(&p.store.file_rel(f.level, f.min, f.max))
            .await?;
    }
    p.store.delete_claims_below(kept_floor).await?;
    Ok(!doomed.is_empty())
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
