//! Time travel: the state of a replica at an instant.
//!
//! The state shown at instant T is that of the last file of a chain whose header timestamp
//! (milliseconds) is strictly before T (nanoseconds): the rule of `litestream restore
//! -timestamp` and of Litestream's Go extension, at every instant, file timestamps included. Timestamps grow with TXIDs within
//! each level, so each level is binary-searched by reading file headers (100 bytes each,
//! cached: files are immutable); the newest candidate that a chain from TXID 1 reaches
//! exactly is the state. Only headers and page indexes are read, never pages.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{plan, Replica, Snapshot};
use crate::clock;
use crate::error::{Error, Result};
use crate::ltx::{self, Header, Txid};
use crate::storage::FileInfo;

impl Replica {
    /// The state at instant `at_ns` (ns since the epoch).
    pub fn snapshot_at(self: &Arc<Self>, at_ns: i64) -> Result<Arc<Snapshot>> {
        let r = self.clone();
        crate::runtime::block_on(async move { r.snapshot_at_async(at_ns).await })
    }

    async fn snapshot_at_async(self: &Arc<Self>, at_ns: i64) -> Result<Arc<Snapshot>> {
        let listed = self.store.list_all().await?;
        let mut levels: BTreeMap<u8, Vec<FileInfo>> = BTreeMap::new();
        for f in &listed {
            levels.entry(f.level).or_default().push(f.clone());
        }
        let mut candidates = Vec::new();
        for files in levels.values() {
            if let Some(f) = self.last_before(files, at_ns).await? {
                candidates.push(f.max);
            }
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup();
        for target in candidates {
            if let Ok(p) = plan::plan(&listed, Some(target)) {
                if p.max_txid() == Some(target) {
                    return self.build_state(&p.files).await.map(Arc::new);
                }
            }
        }
        Err(self.before_earliest(&listed, at_ns).await)
    }

    /// Among `files` (one level, ascending TXIDs), the last whose timestamp is before
    /// `at_ns`.
    async fn last_before(&self, files: &[FileInfo], at_ns: i64) -> Result<Option<FileInfo>> {
        let (mut lo, mut hi) = (0usize, files.len());
        // Invariant: files[..lo] are before `at_ns`, files[hi..] at or after it.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = self.header(&files[mid]).await?.timestamp;
            if (ts as i128) * (clock::NS_PER_MS as i128) < at_ns as i128 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.checked_sub(1).map(|i| files[i].clone()))
    }

    /// A file's header, read once per process (files are immutable).
    pub(super) async fn header(&self, f: &FileInfo) -> Result<Header> {
        if let Some(h) = self.headers.lock().get(f) {
            return Ok(h.clone());
        }
        let bytes = self.store.read_range(f, 0..ltx::HEADER_SIZE as u64).await?;
        let h = Header::decode(&bytes).map_err(|e| Error::corrupt(self.store.describe(f), e))?;
        self.headers.lock().insert(f.clone(), h.clone());
        Ok(h)
    }

    /// Builds the state at the end of `chain`.
    async fn build_state(&self, chain: &[FileInfo]) -> Result<Snapshot> {
        let loaded = {
            let mut planner = self.planner.lock().await;
            self.load_chain(&mut planner, chain, true).await?
        };
        Snapshot::build(&loaded).ok_or_else(|| Error::Internal("empty chain".into()))
    }

    async fn before_earliest(&self, listed: &[FileInfo], at_ns: i64) -> Error {
        let mut earliest: Option<i64> = None;
        for f in listed.iter().filter(|f| f.min == Txid::new(1)) {
            if let Ok(h) = self.header(f).await {
                earliest = Some(earliest.map_or(h.timestamp, |e| e.min(h.timestamp)));
            }
        }
        let reason = match earliest {
            Some(e) => format!(
                "{} is not after the earliest reachable state ({})",
                clock::rfc3339_ns(at_ns),
                clock::rfc3339(e)
            ),
            None => format!(
                "no state of the replica is reachable at {}",
                clock::rfc3339_ns(at_ns)
            ),
        };
        Error::config("time", reason)
    }
}

/// One reachable state, as `litestream_history` lists it: the file whose end gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub txid: Txid,
    pub timestamp_ms: i64,
    pub level: u8,
    pub min_txid: Txid,
    pub file: String,
    pub size: u64,
}

impl Replica {
    /// Every state a chain from TXID 1 reaches exactly, one entry per file that ends at it,
    /// in TXID order (then level).
    pub fn history(self: &Arc<Self>) -> Result<Vec<HistoryEntry>> {
        let r = self.clone();
        crate::runtime::block_on(async move {
            let listed = r.store.list_all().await?;
            let mut entries = Vec::new();
            for f in reachable(&listed) {
                let h = r.header(&f).await?;
                entries.push(HistoryEntry {
                    txid: f.max,
                    timestamp_ms: h.timestamp,
                    level: f.level,
                    min_txid: f.min,
                    file: r.store.relative_path(&f),
                    size: f.size,
                });
            }
            Ok(entries)
        })
    }
}

/// The files whose end TXID a chain from TXID 1 reaches, in (max, level) order.
pub fn reachable(files: &[FileInfo]) -> Vec<FileInfo> {
    let mut by_max: Vec<&FileInfo> = files.iter().collect();
    by_max.sort_by_key(|f| (f.max, f.level));
    // A file extends a reachable state that ends from just before its start to just before
    // its end (it may overlap the state: see `plan`); every file that ends before this one
    // does was seen first.
    let mut ends = std::collections::BTreeSet::from([0u64]);
    let mut out = Vec::new();
    for f in by_max {
        if ends.range(f.min.get() - 1..f.max.get()).next().is_some() {
            ends.insert(f.max.get());
            out.push(f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> FileInfo {
        FileInfo::for_test(level, min, max)
    }

    #[test]
    fn reachable_states_skip_what_a_gap_cuts_off() {
        let files = vec![
            f(9, 1, 4),
            f(1, 5, 8),
            f(0, 7, 7),
            f(0, 8, 8),
            f(0, 9, 9),
            f(0, 11, 12),
        ];
        let got: Vec<_> = reachable(&files)
            .iter()
            .map(|f| (f.level, f.max.get()))
            .collect();
        // L0 7 and 8 continue from 6, which only the compacted 5..8 held: unreachable on
        // their own; 9 continues from 8 (reached by 5..8); 11..12 lies after a gap.
        assert_eq!(got, vec![(9, 4), (1, 8), (0, 9)]);
        // A compacted file that starts inside the state it continues (see `plan`).
        let overlap = vec![f(9, 1, 74), f(1, 73, 86), f(0, 87, 87)];
        let got: Vec<_> = reachable(&overlap).iter().map(|f| f.max.get()).collect();
        assert_eq!(got, vec![74, 86, 87]);
    }
}
