//! The disk cache (`cache_path`, bounded by `disk_cache_size`): decoded pages kept on local
//! disk across restarts, shared by every process on the machine that names the same folder.
//!
//! An entry is keyed by the replica (a hash of its URL), the LTX file it was read from (level,
//! TXID range and header timestamp: files are immutable, so an entry never goes stale) and
//! the page number. A reader only ever looks up the file its pinned snapshot's index names
//! for a page, so it can never be served a version older than the TXID it sees.
//!
//! Each entry is one file, `<root>/<replica>/<file>/<pgno>`: the page followed by its LTX page
//! checksum (CRC-64 over page number and data). It is written to a unique temporary name and
//! renamed into place, so a reader in another process sees a whole entry or none; a torn or
//! mismatched entry reads as a miss and is removed. When the folder grows past its bound,
//! the oldest entries (by modification time) are removed down to 90 % of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::snapshot::FileMeta;
use crate::error::{Error, Result};
use crate::ltx::page_checksum;

pub struct DiskCache {
    root: PathBuf,
    capacity: u64,
    /// Bytes this process believes the folder holds (recounted by every eviction).
    used: AtomicU64,
    evicting: Mutex<()>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub writes: AtomicU64,
}

impl DiskCache {
    /// Opens (creating) the cache folder of `replica_url` under `path`.
    pub fn open(path: &Path, replica_url: &str, capacity: u64) -> Result<DiskCache> {
        let root = path.join(format!("{:016x}", fnv1a(replica_url.as_bytes())));
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating cache_path {}", root.display()), e))?;
        let cache = DiskCache {
            used: AtomicU64::new(0),
            root,
            capacity,
            evicting: Mutex::new(()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        let used = cache.entries().iter().map(|e| e.1).sum();
        cache.used.store(used, Ordering::Relaxed);
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn path(&self, file: &FileMeta, pgno: u32) -> PathBuf {
        let i = &file.info;
        self.root
            .join(format!(
                "{}-{}-{}-{}",
                i.level, i.min, i.max, file.header.timestamp
            ))
            .join(pgno.to_string())
    }

    /// Whether an entry exists (without reading or verifying it).
    pub fn contains(&self, file: &FileMeta, pgno: u32) -> bool {
        self.path(file, pgno).exists()
    }

    /// The page `pgno` as read from `file`, if cached and intact.
    pub fn get(&self, file: &FileMeta, pgno: u32) -> Option<Vec<u8>> {
        let path = self.path(file, pgno);
        let page_size = file.header.page_size as usize;
        let entry = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let intact = entry.len() == page_size + 8 && {
            let (page, sum) = entry.split_at(page_size);
            page_checksum(pgno, page).to_be_bytes() == sum
        };
        if !intact {
            crate::log_warn!("disk cache entry {} is damaged; dropped", path.display());
            let _ = std::fs::remove_file(&path);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let mut page = entry;
        page.truncate(page_size);
        Some(page)
    }

    /// Stores a page. Failures (disk full, permissions) are logged, never returned: the
    /// cache is an optimisation.
    pub fn put(&self, file: &FileMeta, pgno: u32, page: &[u8]) {
        let path = self.path(file, pgno);
        if path.exists() {
            return;
        }
        if let Err(e) = write_entry(&path, pgno, page) {
            crate::log_warn!("disk cache: cannot write {}: {e}", path.display());
            return;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let used = self
            .used
            .fetch_add(page.len() as u64 + 8, Ordering::Relaxed);
        if used > self.capacity {
            self.evict();
        }
    }

    /// Every entry: (path, bytes, modified).
    fn entries(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(m) = f.metadata() {
                    let modified = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    out.push((f.path(), m.len(), modified));
                }
            }
        }
        out
    }

    /// Removes the oldest entries until the folder is at 90 % of its bound.
    fn evict(&self) {
        let Some(_one) = self.evicting.try_lock() else {
            return;
        };
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        let target = self.capacity / 10 * 9;
        for (path, len, _) in entries {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir); // only when empty
                }
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

fn write_entry(path: &Path, pgno: u32, page: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        pgno,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(page)?;
        f.write_all(&page_checksum(pgno, page).to_be_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// FNV-1a, 64 bits: a stable name for a replica URL's folder (std's hasher is seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Header, Txid};
    use crate::storage::FileInfo;

    fn meta(level: u8, min: u64, max: u64, ts: i64) -> FileMeta {
        FileMeta {
            id: 0,
            info: FileInfo {
                level,
                min: Txid::new(min),
                max: Txid::new(max),
                size: 0,
            },
            header: Header::new(512, 4, Txid::new(min), Txid::new(max), ts),
            post_apply_checksum: 0,
        }
    }

    #[test]
    fn entries_are_per_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), "s3://b/p", 1 << 20).unwrap();
        let a = meta(0, 1, 1, 10);
        let b = meta(0, 2, 2, 20);
        let page = vec![7u8; 512];
        c.put(&a, 3, &page);
        assert_eq!(c.get(&a, 3), Some(page.clone()));
        assert_eq!(c.get(&b, 3), None, "another file's page 3 is another entry");
        assert_eq!(
            c.get(&meta(0, 1, 1, 11), 3),
            None,
            "a rewritten file is another"
        );
        // Another process (another DiskCache on the folder) sees the entry.
        let other = DiskCache::open(dir.path(), "s3://b/p", 1 << 20).unwrap();
        assert_eq!(other.used(), 520);
        assert_eq!(other.get(&a, 3), Some(page.clone()));
        // Another replica does not.
        let elsewhere = DiskCache::open(dir.path(), "s3://b/q", 1 << 20).unwrap();
        assert_eq!(elsewhere.get(&a, 3), None);
        // A damaged entry is a miss, and is removed.
        let path = c.path(&a, 3);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(c.get(&a, 3), None);
        assert!(!path.exists());
    }

    #[test]
    fn bounded_by_size_oldest_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), "file:///r", 520 * 10).unwrap();
        let a = meta(0, 1, 1, 10);
        for pgno in 1..=30 {
            c.put(&a, pgno, &vec![pgno as u8; 512]);
        }
        assert!(c.used() <= 520 * 10, "{}", c.used());
        assert!(c.get(&a, 30).is_some(), "the newest stays");
        assert!(c.get(&a, 1).is_none(), "the oldest went");
    }
}
