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
        // A WAL restart between reading the wal-index and the WAL's header: SQLite moves the
        // wal-index to the new generation first and writes the header with the first frame,
        // holding the write lock. Read both again until they agree; a header that never
        // follows (its writer died) leaves SQLite's recovery rule over the old generation.
        let mut agreed = None;
        for _ in 0..RESTART_SETTLE_TRIES {
            let index = local.read_index();
            let Some(h) = wal::read_header(&f).map_err(io(&wal_path))? else {
                local.index = index;
                return Ok(local);
            };
            agreed = Some((index, h));
            if index.is_none_or(|i| i.salts() == (h.salt1, h.salt2)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (index, h) = agreed.expect("tried at least once");
        local.index = index;
        local.wal_header = Some(h);
        match index {
            Some(i) if i.salts() == (h.salt1, h.salt2) => {
                if i.mx_frame > 0 {
                    local.commit = i.n_page;
                    local.page_size = h.page_size;
                    local.wal_end = Some(WalPos {
                        offset: i.end_offset(),
                        cksum1: i.frame_cksum.0,
                        cksum2: i.frame_cksum.1,
                        ..h.start()
                    });
                }
                // Every committed frame is in the database file already: read only that
                // (a writer may restart the WAL over them while we read).
                if i.n_backfill < i.mx_frame {
                    let txns = wal::committed_until(&f, &h, &h.start(), i.end_offset())
                        .map_err(io(&wal_path))?;
                    if txns.last().map(|t| t.end.offset) != Some(i.end_offset()) {
                        return Err(Error::io(
                            format!("reading {}", wal_path.display()),
                            std::io::Error::other(
                                "the wal-index says more is committed than the WAL holds",
                            ),
                        ));
                    }
                    for t in &txns {
                        local.overlay.extend(t.pages.iter().map(|(&p, &o)| (p, o)));
                    }
                }
            }
            // No connection has the WAL open (or a new generation has nothing committed
            // yet): what SQLite's recovery will find.
            _ => {
                let txns = wal::committed_after(&f, &h, &h.start()).map_err(io(&wal_path))?;
                for t in &txns {
                    local.overlay.extend(t.pages.iter().map(|(&p, &o)| (p, o)));
                }
                if let Some(last) = txns.last() {
                    local.page_size = h.page_size;
                    local.commit = last.commit;
                    local.wal_end = Some(last.end);
                }
            }
        }
        local.wal = Some((f, h));
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
