//! The record kept beside a hydrated copy (`<copy>.state`, and `<copy>.hydrating.state` for a
//! copy being written), so that a later open adopts a complete copy, or goes on with an
//! unfinished one, instead of fetching every page again.
//!
//! A page of the copy is reused for a newer state only when that state reads it from one
//! of the files of the recorded state (same name, size and header timestamp): such a file
//! ends at or before the recorded TXID, so it holds the page's newest version up to both
//! states, which is the version the copy holds. A replica recreated under the same URL has
//! other files, and nothing of the copy is reused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FileMeta, Snapshot};

/// What names a file of a state: (level, min TXID, max TXID, size, header timestamp).
type FileName = (u8, u64, u64, u64, i64);

fn name_of(f: &FileMeta) -> FileName {
    let i = &f.info;
    (
        i.level,
        i.min.get(),
        i.max.get(),
        i.size,
        f.header.timestamp,
    )
}

/// Whether page `pgno` is set in a bitmap of 64 pages a word.
pub fn has_page(words: &[u64], pgno: u32) -> bool {
    let i = (pgno.max(1) - 1) as usize;
    words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets page `pgno` in a bitmap of 64 pages a word (grown as needed).
pub fn set_page(words: &mut Vec<u64>, pgno: u32) {
    let i = (pgno.max(1) - 1) as usize;
    if words.len() <= i / 64 {
        words.resize(i / 64 + 1, 0);
    }
    words[i / 64] |= 1 << (i % 64);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub replica_url: String,
    pub txid: u64,
    pub page_size: u32,
    pub pages: u32,
    /// Inode of the data file described: a record whose file was replaced is not trusted.
    pub ino: u64,
    /// The files the state reads: (level, min TXID, max TXID, size, header timestamp).
    pub files: Vec<FileName>,
    /// Pages written so far (a bitmap in hex, 64 pages a word) while the copy is being
    /// written; none once it is complete.
    pub done: Option<String>,
}

/// Where the record of the data file `data` lives.
pub fn record_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(".state");
    PathBuf::from(p)
}

impl CopyRecord {
    pub fn for_state(replica_url: &str, snap: &Snapshot, ino: u64) -> CopyRecord {
        CopyRecord {
            replica_url: replica_url.to_string(),
            txid: snap.txid.get(),
            page_size: snap.page_size,
            pages: snap.commit(),
            ino,
            files: snap.files.values().map(|f| name_of(f)).collect(),
            done: None,
        }
    }

    /// The record at `path`; none when missing or unreadable (then nothing is reused).
    pub fn load(path: &Path) -> Option<CopyRecord> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the record durably: a temporary file, synced, renamed over the old one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut &f, &text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    pub fn set_done(&mut self, done: Option<&[u64]>) {
        self.done = done.map(|words| words.iter().map(|w| format!("{w:016x}")).collect());
    }

    fn done_words(&self) -> Option<Vec<u64>> {
        let hex = self.done.as_ref()?;
        (0..hex.len() / 16)
            .map(|i| u64::from_str_radix(hex.get(i * 16..i * 16 + 16)?, 16).ok())
            .collect()
    }

    /// Which pages of `now` (a bitmap, 64 pages a word) the copy already holds in the version
    /// `now` shows. None when nothing can be reused: another replica, page size, or a
    /// state older than the record's.
    pub fn reusable(&self, replica_url: &str, now: &Snapshot) -> Option<Vec<u64>> {
        if self.replica_url != replica_url
            || self.page_size != now.page_size
            || now.txid.get() < self.txid
        {
            return None;
        }
        let done = match &self.done {
            Some(_) => Some(self.done_words()?),
            None => None,
        };
        let files: HashSet<_> = self.files.iter().copied().collect();
        let same: HashSet<_> = now
            .files
            .values()
            .filter(|f| files.contains(&name_of(f)))
            .map(|f| f.id)
            .collect();
        let mut words = vec![0u64; (now.commit() as usize).div_ceil(64)];
        for (pgno, loc) in now.index.iter() {
            let written = pgno <= self.pages && done.as_ref().is_none_or(|d| has_page(d, pgno));
            if written && same.contains(&loc.file) {
                set_page(&mut words, pgno);
            }
        }
        Some(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::index::FileId;
    use crate::replica::snapshot::LoadedFile;
    use std::sync::Arc;

    /// A file of a 4-page database written at `ts`.
    fn file(id: FileId, level: u8, min: u64, max: u64, pages: &[u32], ts: i64) -> LoadedFile {
        let mut f = LoadedFile::for_test(id, level, min, max, 4, pages);
        Arc::get_mut(&mut f.meta).unwrap().header.timestamp = ts;
        f
    }

    fn bits(words: &[u64], pages: u32) -> Vec<u32> {
        (1..=pages).filter(|p| has_page(words, *p)).collect()
    }

    #[test]
    fn pages_read_from_the_recorded_files_are_reused() {
        let base = file(0, 9, 1, 1, &[1, 2, 3, 4], 10);
        let at_2 = Snapshot::build(&[base.clone(), file(1, 0, 2, 2, &[2], 20)]).unwrap();
        let mut rec = CopyRecord::for_state("s3://b/db", &at_2, 7);
        // Later: page 3 changed; the L0 file of TXID 2 was compacted into an L1 file.
        let later = Snapshot::build(&[
            base,
            file(2, 1, 2, 3, &[2, 3], 20),
            file(3, 0, 4, 4, &[4], 40),
        ])
        .unwrap();
        let words = rec.reusable("s3://b/db", &later).unwrap();
        assert_eq!(bits(&words, 4), vec![1], "2 and 3 moved files, 4 changed");
        let words = rec.reusable("s3://b/db", &at_2).unwrap();
        assert_eq!(bits(&words, 4), vec![1, 2, 3, 4]);
        // Unfinished: only what was written counts.
        rec.set_done(Some(&[0b0101]));
        let words = rec.reusable("s3://b/db", &at_2).unwrap();
        assert_eq!(bits(&words, 4), vec![1, 3]);
        // Another replica, or an older state: nothing.
        assert!(rec.reusable("s3://b/other", &at_2).is_none());
        let at_1 = Snapshot::build(&[file(0, 9, 1, 1, &[1, 2, 3, 4], 10)]).unwrap();
        assert!(rec.reusable("s3://b/db", &at_1).is_none());
    }

    #[test]
    fn a_recreated_replica_reuses_nothing() {
        let at_2 = Snapshot::build(&[file(0, 9, 1, 2, &[1, 2], 10)]).unwrap();
        let rec = CopyRecord::for_state("u", &at_2, 1);
        // The same names, written at another time.
        let again = Snapshot::build(&[file(0, 9, 1, 2, &[1, 2], 99)]).unwrap();
        assert!(bits(&rec.reusable("u", &again).unwrap(), 2).is_empty());
    }

    #[test]
    fn records_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let at = Snapshot::build(&[file(0, 9, 1, 1, &[1], 10)]).unwrap();
        let mut rec = CopyRecord::for_state("u", &at, 42);
        rec.set_done(Some(&[u64::MAX, 1]));
        let path = record_path(&dir.path().join("copy.db"));
        rec.save(&path).unwrap();
        assert_eq!(CopyRecord::load(&path), Some(rec.clone()));
        assert_eq!(rec.done_words(), Some(vec![u64::MAX, 1]));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(CopyRecord::load(&path), None);
    }
}
