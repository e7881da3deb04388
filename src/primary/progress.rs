//! What the leader publishes for the other processes of the database (`<db>-litestream/
//! progress`): how far it has copied the WAL and shipped, the generations it knows, and its
//! counters. Followers read it to answer `sync=remote` commits, to check that a WAL restart
//! loses nothing, and for `litestream_stats`.
//!
//! Positions are compared through generation numbers: a WAL restart begins a new generation
//! (new salts), and the leader numbers them in the order it saw them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mirror::Generation;
use super::record::{self, Read};
use super::wal::{WalPos, HEADER_SIZE};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"LSPR";
const MAX_SIZE: u64 = 64 * 1024;
/// Generations remembered for waiters (a waiter looks its own up within milliseconds).
pub const HISTORY: usize = 64;

/// A committed point of the local database's history: where a transaction ends in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub salt1: u32,
    pub salt2: u32,
    pub offset: u64,
}

impl Mark {
    pub fn of(pos: &WalPos) -> Mark {
        Mark {
            salt1: pos.salt1,
            salt2: pos.salt2,
            offset: pos.offset,
        }
    }

    fn salts(&self) -> (u32, u32) {
        (self.salt1, self.salt2)
    }
}

/// Counters of the leader, for `litestream_stats` in every process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub encoded_txid: u64,
    pub pending_files: usize,
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Milliseconds since the epoch.
    pub last_upload_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Failed attempts (uploads, copies) since the process became the leader.
    pub retries: u64,
    /// Since when shipping has failed without a success (ms since the epoch).
    pub stalled_since_ms: Option<i64>,
    /// Set when shipping stopped for good (another primary won the replica).
    pub stopped: Option<String>,
    /// Whole-database files shipped because the WAL could not say what changed.
    pub resyncs: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The leader's process id.
    pub pid: u32,
    pub replica_url: String,
    pub checksum: bool,
    /// The generations seen most recently, oldest first.
    pub generations: Vec<Generation>,
    /// Where copying has reached.
    pub copied: Option<(Generation, WalPos)>,
    /// The newest TXID in the replica, and where in the WAL that state ends (the generation
    /// number with it); None when the database file alone held it.
    pub shipped_txid: u64,
    pub shipped: Option<(u32, WalPos)>,
    /// The leader is about to ship the whole database (the WAL cannot say what changed):
    /// a WAL restart loses nothing meanwhile.
    #[serde(default)]
    pub resync_pending: bool,
    pub counters: Counters,
}

impl Published {
    /// Whether the replica holds the state at `target`. False also while the generation of
    /// `target` is not known yet (the leader has not seen it).
    pub fn covers(&self, target: &Mark) -> bool {
        if target.offset <= HEADER_SIZE {
            return true;
        }
        let Some((shipped_seq, shipped)) = &self.shipped else {
            return false;
        };
        let seq = if target.salts() == (shipped.salt1, shipped.salt2) {
            *shipped_seq
        } else {
            match self
                .generations
                .iter()
                .find(|g| (g.salt1, g.salt2) == target.salts())
            {
                Some(g) => g.seq,
                None => return false,
            }
        };
        // Sequence numbers are compared as a window (they may wrap after 2^32 restarts).
        let ahead = seq.wrapping_sub(*shipped_seq) as i32;
        ahead < 0 || (ahead == 0 && target.offset <= shipped.offset)
    }

    /// Whether copying has reached `target` exactly: every committed frame of its
    /// generation up to it is in a mirror.
    pub fn copied_to(&self, target: &Mark) -> Option<Generation> {
        let (g, pos) = self.copied.as_ref()?;
        (Mark::of(pos) == *target).then_some(*g)
    }

    pub fn remember(&mut self, gens: &[Generation]) {
        for g in gens {
            if !self.generations.contains(g) {
                self.generations.push(*g);
            }
        }
        let excess = self.generations.len().saturating_sub(HISTORY);
        self.generations.drain(..excess);
    }
}

pub fn path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("progress")
}

/// The leader's side: writes the record in place.
pub struct Publisher {
    file: File,
    path: PathBuf,
    seq: u64,
}

impl Publisher {
    pub fn open(meta_dir: &Path) -> Result<Publisher> {
        let path = path(meta_dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let seq = match record::read(&file, MAGIC, 0, MAX_SIZE) {
            Ok(Read::Record(seq, _)) => seq,
            _ => 0,
        };
        Ok(Publisher { file, path, seq })
    }

    /// Writes `p` over the previous record. Not synced: it describes live processes, and a
    /// crash ends them.
    pub fn write(&mut self, p: &Published) -> Result<()> {
        let io = |e| Error::io(format!("writing {}", self.path.display()), e);
        let json = serde_json::to_vec(p).map_err(|e| io(std::io::Error::other(e)))?;
        self.seq += 1;
        let rec = record::encode(MAGIC, self.seq, &json);
        if rec.len() as u64 > MAX_SIZE {
            return Err(io(std::io::Error::other(
                "the progress record is too large",
            )));
        }
        self.file.write_all_at(&rec, 0).map_err(io)
    }
}

/// A follower's side: the newest record, None when there is none (no leader ever ran).
/// Retries a record read while it was being written.
pub fn read(meta_dir: &Path) -> Result<Option<Published>> {
    let path = path(meta_dir);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    for _ in 0..1000 {
        match record::read(&f, MAGIC, 0, MAX_SIZE).map_err(io)? {
            Read::Empty => return Ok(None),
            Read::Record(_, json) => {
                return serde_json::from_slice(&json)
                    .map(Some)
                    .map_err(|e| io(std::io::Error::other(e)))
            }
            Read::Damaged(_) => std::thread::yield_now(),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(salts: (u32, u32), offset: u64) -> WalPos {
        WalPos {
            salt1: salts.0,
            salt2: salts.1,
            ckpt_seq: 0,
            offset,
            cksum1: 0,
            cksum2: 0,
        }
    }

    fn gen(seq: u32, salts: (u32, u32)) -> Generation {
        Generation {
            seq,
            salt1: salts.0,
            salt2: salts.1,
        }
    }

    #[test]
    fn a_mark_is_covered_by_a_later_shipped_position_only() {
        let (a, b, c) = ((5, 1), (6, 2), (9, 3));
        let mut p = Published::default();
        let mark = |salts: (u32, u32), offset| Mark {
            salt1: salts.0,
            salt2: salts.1,
            offset,
        };
        assert!(
            p.covers(&mark(a, 32)),
            "an empty generation has nothing to ship"
        );
        assert!(!p.covers(&mark(a, 1000)), "nothing shipped yet");
        p.remember(&[gen(7, a), gen(8, b)]);
        p.shipped = Some((8, pos(b, 5000)));
        assert!(p.covers(&mark(a, 999_999)), "an older generation");
        assert!(p.covers(&mark(b, 5000)));
        assert!(!p.covers(&mark(b, 5001)));
        assert!(
            !p.covers(&mark(c, 100)),
            "a generation the leader has not seen"
        );
        p.remember(&[gen(9, c)]);
        assert!(!p.covers(&mark(c, 100)), "a newer generation");
        // Numbers that wrapped around still compare as a window.
        p.generations = vec![gen(u32::MAX, a), gen(0, b)];
        p.shipped = Some((0, pos(b, 100)));
        assert!(p.covers(&mark(a, 1 << 20)));
        // The history stays bounded.
        let many: Vec<Generation> = (0..200).map(|i| gen(i, (i, i))).collect();
        p.remember(&many);
        assert_eq!(p.generations.len(), HISTORY);
        assert_eq!(p.generations.last().unwrap().seq, 199);
    }

    #[test]
    fn followers_read_what_the_leader_wrote() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut w = Publisher::open(dir.path()).unwrap();
        let mut p = Published {
            pid: 42,
            shipped_txid: 7,
            ..Default::default()
        };
        w.write(&p).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(p.clone()));
        // A shorter record over a longer one reads back as itself.
        p.replica_url = "x".repeat(3000);
        w.write(&p).unwrap();
        p.replica_url = "y".into();
        w.write(&p).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().replica_url, "y");
    }
}
