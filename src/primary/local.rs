//! The local database as SQLite would read it now — the database file, with the newest
//! committed frame of each page taken from the WAL — for the files that must carry every
//! page (the first snapshot, a re-sync) and for the checksums of the whole database.
//!
//! "Committed" is what the wal-index says while connections have it open; without one (no
//! connection since the last closed), it is SQLite's recovery rule over the WAL's frames.
//! A caller reading while other processes write holds SQLite's checkpointer lock
//! (`DbFile::lock_checkpoints`): then no checkpoint changes the database file, and the
//! committed frames of the WAL cannot be overwritten while we read them.
//!
//! The database file is read through the primary's handle (`DbFile`), never through a file
//! descriptor of our own (closing one would drop the process's POSIX locks on the file);
//! the WAL, which SQLite never locks, is read directly.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use super::shm::Index;
use super::wal::{self, WalHeader, WalPos};
use super::DbFile;
use crate::error::{Error, Result};
use crate::ltx::lock_pgno;

/// How many times (1 ms apart) the wal-index and the WAL's header are read until they name
/// the same generation.
const RESTART_SETTLE_TRIES: usize = 50;

pub struct LocalDb<'a> {
    db: Option<&'a mut dyn DbFile>,
    wal: Option<(File, WalHeader)>,
    /// Page → offset of its newest committed frame in the WAL.
    overlay: BTreeMap<u32, u64>,
    /// 0 for a database with no pages yet.
    pub page_size: u32,
    pub commit: u32,
    /// The end of the last committed transaction in the WAL, if it has one.
    pub wal_end: Option<WalPos>,
    /// The WAL's header, when it has a valid one.
    pub wal_header: Option<WalHeader>,
    /// The wal-index read with it, when a connection has one open.
    pub index: Option<Index>,
}

/// The WAL, if it exists.
fn open_if_exists(p: &Path) -> Result<Option<File>> {
    match File::open(p) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("opening {}", p.display()), e)),
    }
}

/// Whether a database header says WAL mode (bytes 18 and 19 are 2).
pub fn is_wal_mode(db: &mut dyn DbFile) -> bool {
    let mut hdr = [0u8; 20];
    matches!(db.read_db(&mut hdr, 0), Ok(20)) && hdr[18] == 2 && hdr[19] == 2
}

impl<'a> LocalDb<'a> {
    /// The database as of now: `db` is the primary's handle on the database file (None when
    /// it does not exist), through which the wal-index is read too.
    pub fn open(db: Option<&'a mut dyn DbFile>, db_path: &Path) -> Result<LocalDb<'a>> {
        let wal_path = super::beside(db_path, "-wal");
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| Error::io(format!("reading {p}"), e)
        };
        let mut local = LocalDb {
            db,
            wal: None,
            overlay: BTreeMap::new(),
            page_size: 0,
            commit: 0,
            wal_end: None,
            wal_header: None,
            index: None,
        };
        if let Some(f) = local.db.as_mut() {
            let mut hdr = [0u8; 100];
            if f.read_db(&mut hdr, 0).map_err(io(db_path))? == hdr.len() {
                local.page_size = match u16::from_be_bytes([hdr[16], hdr[17]]) {
                    1 => 65536,
                    n => u32::from(n),
                };
                let len = f.db_size().map_err(io(db_path))?;
                local.commit = (len / u64::from(local.page_size.max(1))) as u32;
            }
        }
        let Some(f) = open_if_exists(&wal_path)? else {
            local.index = local.read_index();
            return Ok(local);
        };
        // A WAL restart while the wal-index, the WAL's header and its frames are read shows
        // as a disagreement between them: read them again. SQLite moves the wal-index to the
        // new generation first and writes the header with the first frame, holding the write
        // lock, so this settles at once; a header that never follows (its writer died)
        // leaves SQLite's recovery rule over the old generation.
        for attempt in 1..=RESTART_SETTLE_TRIES {
            let index = local.read_index();
            let last_try = attempt == RESTART_SETTLE_TRIES;
            let read = read_wal(&f, index, last_try).map_err(io(&wal_path))?;
            local.index = index;
            match read {
                WalRead::Moved => std::thread::sleep(Duration::from_millis(1)),
                WalRead::NoHeader => break,
                WalRead::Read {
                    header,
                    overlay,
                    last,
                } => {
                    local.wal_header = Some(header);
                    local.overlay = overlay;
                    if let Some((commit, end)) = last {
                        local.commit = commit;
                        local.page_size = header.page_size;
                        local.wal_end = Some(end);
                    }
                    local.wal = Some((f, header));
                    break;
                }
            }
        }
        Ok(local)
    }

    /// What the wal-index says now, if a connection has it open.
    fn read_index(&mut self) -> Option<Index> {
        self.db.as_mut().and_then(|d| super::shm::read(&mut **d))
    }

    /// Page `pgno` (1-based) as SQLite would read it; zeros past the end of the file.
    pub fn page(&mut self, pgno: u32) -> Result<Vec<u8>> {
        if let (Some(&off), Some((f, h))) = (self.overlay.get(&pgno), &self.wal) {
            return wal::read_page(f, self.page_size, off, (h.salt1, h.salt2))
                .map_err(|e| Error::io("reading the WAL", e));
        }
        let mut page = vec![0u8; self.page_size as usize];
        if let Some(f) = self.db.as_mut() {
            let at = u64::from(pgno - 1) * u64::from(self.page_size);
            f.read_db(&mut page, at)
                .map_err(|e| Error::io("reading the database", e))?;
        }
        Ok(page)
    }

    /// Every page number of the database, the lock page excepted.
    pub fn pgnos(&self) -> impl Iterator<Item = u32> {
        let lock = lock_pgno(self.page_size.max(512));
        (1..=self.commit).filter(move |&p| p != lock)
    }

    /// Where the committed part of the WAL ends (its start when it holds no commit), if
    /// there is a valid WAL.
    pub fn wal_position(&self) -> Option<WalPos> {
        self.wal_header.map(|h| self.wal_end.unwrap_or(h.start()))
    }

    /// Whether some connection (of any process) has the database open now.
    pub fn in_use(&self) -> bool {
        self.index.is_some()
    }
}

/// What one read of the WAL found.
enum WalRead {
    /// No valid header: the WAL adds nothing to the database file.
    NoHeader,
    /// It moved on while it was read (a restart): read it again.
    Moved,
    Read {
        header: WalHeader,
        /// Page → offset of its newest committed frame.
        overlay: BTreeMap<u32, u64>,
        /// The database size in pages after the last committed transaction, and where it
        /// ends, if the WAL holds one.
        last: Option<(u32, WalPos)>,
    },
}

/// Reads what the WAL holds committed, by the wal-index `index` when a connection has one
/// open, else by SQLite's recovery rule. `last_try`: a disagreement between the wal-index
/// and the WAL is not a restart in progress.
fn read_wal(f: &File, index: Option<Index>, last_try: bool) -> std::io::Result<WalRead> {
    let Some(h) = wal::read_header(f)? else {
        return Ok(WalRead::NoHeader);
    };
    let mut overlay = BTreeMap::new();
    match index {
        Some(i) if i.salts() == (h.salt1, h.salt2) => {
            let last = (i.mx_frame > 0).then(|| {
                let end = WalPos {
                    offset: i.end_offset(),
                    cksum1: i.frame_cksum.0,
                    cksum2: i.frame_cksum.1,
                    ..h.start()
                };
                (i.n_page, end)
            });
            // Every committed frame is in the database file already: read only that (a
            // writer may restart the WAL over them while we read).
            if i.n_backfill < i.mx_frame {
                let txns = wal::committed_until(f, &h, &h.start(), i.end_offset())?;
                if txns.last().map(|t| t.end.offset) != Some(i.end_offset()) {
                    if !last_try {
                        return Ok(WalRead::Moved);
                    }
                    return Err(std::io::Error::other(
                        "the wal-index says more is committed than the WAL holds",
                    ));
                }
                for t in &txns {
                    overlay.extend(t.pages.iter().map(|(&p, &o)| (p, o)));
                }
            }
            Ok(WalRead::Read {
                header: h,
                overlay,
                last,
            })
        }
        Some(_) if !last_try => Ok(WalRead::Moved),
        // No connection has the WAL open: what SQLite's recovery will find.
        _ => {
            let txns = wal::committed_after(f, &h, &h.start())?;
            for t in &txns {
                overlay.extend(t.pages.iter().map(|(&p, &o)| (p, o)));
            }
            Ok(WalRead::Read {
                header: h,
                overlay,
                last: txns.last().map(|t| (t.commit, t.end)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::shm::tests::index;
    use crate::primary::wal::tests::write_wal;

    /// What one read of the WAL concludes, row by row: a wal-index that names another
    /// generation, or more frames than the WAL holds, is a restart in progress (read again)
    /// until the last try; then the first is SQLite's recovery rule, the second an error.
    #[test]
    fn a_wal_that_moves_while_it_is_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-wal");
        // Two transactions of two frames each: 4 frames, the last commit at frame 4.
        write_wal(
            &path,
            512,
            (10, 1),
            &[vec![(1, 1), (2, 1)], vec![(2, 2), (3, 2)]],
        );
        let f = File::open(&path).unwrap();
        let read = |i: Option<Index>, last_try: bool| read_wal(&f, i, last_try);
        let overlay_of = |r: WalRead| match r {
            WalRead::Read { overlay, last, .. } => (overlay.len(), last.map(|(c, _)| c)),
            WalRead::Moved => panic!("moved"),
            WalRead::NoHeader => panic!("no header"),
        };
        // The wal-index agrees: what it says is committed.
        assert_eq!(
            overlay_of(read(Some(index((10, 1), 512, 4, 2)), false).unwrap()),
            (3, Some(3))
        );
        assert_eq!(
            overlay_of(read(Some(index((10, 1), 512, 2, 1)), false).unwrap()),
            (2, Some(3))
        );
        // No wal-index: the recovery rule, every committed frame.
        assert_eq!(overlay_of(read(None, false).unwrap()), (3, Some(3)));
        // Another generation in the wal-index: moved, then the recovery rule.
        assert!(matches!(
            read(Some(index((11, 9), 512, 0, 0)), false),
            Ok(WalRead::Moved)
        ));
        assert_eq!(
            overlay_of(read(Some(index((11, 9), 512, 0, 0)), true).unwrap()),
            (3, Some(3))
        );
        // More frames committed than the WAL holds: moved, then an error.
        assert!(matches!(
            read(Some(index((10, 1), 512, 6, 3)), false),
            Ok(WalRead::Moved)
        ));
        let err = read(Some(index((10, 1), 512, 6, 3)), true).err().unwrap();
        assert!(
            err.to_string()
                .contains("more is committed than the WAL holds"),
            "{err}"
        );
    }
}
