//! What a primary keeps on local disk beside the database (`<db>-litestream/state`): which
//! TXID the replica holds, where in the WAL that state ends, and the upload in flight.
//!
//! The state changes at every upload, so it is written in place rather than to a new file
//! renamed over the old one (a file created and one deleted per upload was a tenth of the
//! shipper's CPU). The file has two slots; each write goes to the slot that does not hold
//! the newest *synced* record, so a torn write can only ever destroy a record that a newer
//! synced one supersedes. A record is `magic, length, sequence, CRC-32 of (sequence,
//! JSON)` then the state as JSON; reading takes the valid record with the highest sequence.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{self, Read};
use super::wal::WalPos;
use crate::error::{Error, Result};

/// A state of the database that a TXID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub txid: u64,
    /// Database checksum of this state (bit 63 set), or 0 when unknown.
    pub checksum: u64,
    /// Where this state ends in the WAL; None when the database file alone holds it (the
    /// WAL was checkpointed and removed after everything in it shipped).
    pub wal: Option<WalPos>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub replica_url: String,
    /// Written into every LTX header (NodeID) and every claim: who this primary is.
    pub node_id: u64,
    /// The newest state the replica is known to hold.
    pub shipped: Position,
    /// A file being uploaded (min TXID, and the state after it): after a crash, the replica
    /// is asked whether it landed.
    pub in_flight: Option<(u64, Position)>,
    /// The whole local database is to ship as the file after `shipped` (it disagreed with
    /// the replica, or the WAL could not say what changed): a crash before it lands must
    /// not turn into shipping only the WAL on top of the replica.
    #[serde(default)]
    pub resync: bool,
    /// The database file as the last leader left it when it deleted the WAL, everything
    /// shipped. While the file still has this stamp, nothing was checkpointed into it since:
    /// a program without the extension may have written while no leader watched.
    #[serde(default)]
    pub left: Option<DbStamp>,
}

/// A database file's size and modification time. Every checkpoint writes the file, so one
/// that still has them holds no transaction it did not hold then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStamp {
    pub len: u64,
    pub mtime_ns: u64,
}

impl DbStamp {
    /// The stamp of the file at `path` now (None when it cannot be read).
    pub fn of(path: &Path) -> Option<DbStamp> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(DbStamp {
            len: meta.len(),
            mtime_ns: u64::try_from(mtime.as_nanos()).ok()?,
        })
    }
}

const MAGIC: &[u8; 4] = b"LSST";
/// Where the second slot starts; a record (a few hundred bytes) must fit in a slot.
const SLOT_SIZE: u64 = 64 * 1024;

pub fn path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("state")
}

/// The state file, open for the primary's lifetime.
pub struct StateFile {
    file: File,
    path: PathBuf,
    seq: u64,
    /// The slot holding the newest synced record: never overwritten until a newer one is
    /// synced in the other.
    synced_slot: u64,
}

impl StateFile {
    /// Opens (or creates) the state file of `meta_dir` and reads the newest record in it.
    pub fn open(meta_dir: &Path) -> Result<(StateFile, Option<State>)> {
        let path = path(meta_dir);
        let io = |e| Error::io(format!("opening {}", path.display()), e);
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // What a process that crashed wrote without syncing is read below as the newest
        // record: make it durable before the next write may overwrite the other slot.
        file.sync_all().map_err(io)?;
        if !existed {
            File::open(meta_dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        let mut newest: Option<(u64, u64, State)> = None;
        let mut damaged = None;
        for slot in 0..2 {
            match read_record(&file, slot) {
                Ok(Some((seq, state))) if newest.as_ref().is_none_or(|n| seq > n.0) => {
                    newest = Some((seq, slot, state))
                }
                Ok(_) => {}
                Err(why) => damaged = Some(why),
            }
        }
        if let (None, Some(why)) = (&newest, damaged) {
            return Err(Error::io(
                format!("reading {}", path.display()),
                std::io::Error::other(why),
            ));
        }
        let (seq, synced_slot, state) = match newest {
            Some((seq, slot, state)) => (seq, slot, Some(state)),
            None => (0, 1, None),
        };
        let sf = StateFile {
            file,
            path,
            seq,
            synced_slot,
        };
        Ok((sf, state))
    }

    /// Writes `state` as the newest record; `durable` also syncs it (skipped only for what
    /// a crash may lose safely: the record of an upload in flight, which a process crash
    /// keeps anyway).
    pub fn save(&mut self, state: &State, durable: bool) -> Result<()> {
        let io = |e| Error::io(format!("writing {}", self.path.display()), e);
        let json = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        if (record::HEADER + json.len()) as u64 > SLOT_SIZE {
            return Err(io(std::io::Error::other(format!(
                "the state is {} bytes, more than a slot holds",
                json.len()
            ))));
        }
        let seq = self.seq + 1;
        let slot = 1 - self.synced_slot;
        self.file
            .write_all_at(&record::encode(MAGIC, seq, &json), slot * SLOT_SIZE)
            .map_err(io)?;
        if durable {
            self.file.sync_data().map_err(io)?;
            self.synced_slot = slot;
        }
        self.seq = seq;
        Ok(())
    }
}

/// The record in `slot`: None when the slot was never written; Err when it holds a record
/// that does not check out (a torn write) or does not parse.
fn read_record(f: &File, slot: u64) -> std::result::Result<Option<(u64, State)>, String> {
    match record::read(f, MAGIC, slot * SLOT_SIZE, SLOT_SIZE).map_err(|e| e.to_string())? {
        Read::Empty => Ok(None),
        Read::Damaged(why) => Err(format!("slot {slot}: {why}")),
        Read::Record(seq, json) => {
            let state = serde_json::from_slice(&json).map_err(|e| format!("slot {slot}: {e}"))?;
            Ok(Some((seq, state)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(txid: u64) -> State {
        State {
            replica_url: "file:///r".into(),
            node_id: 7,
            shipped: Position {
                txid,
                checksum: 1 << 63,
                wal: None,
            },
            in_flight: Some((
                txid + 1,
                Position {
                    txid: txid + 5,
                    checksum: 0,
                    wal: Some(WalPos {
                        salt1: 1,
                        salt2: 2,
                        ckpt_seq: 0,
                        offset: 32,
                        cksum1: 5,
                        cksum2: 6,
                    }),
                },
            )),
            resync: true,
            left: Some(DbStamp {
                len: 4096 * (txid + 1),
                mtime_ns: 1_700_000_000_000_000_000,
            }),
        }
    }

    fn reopen(dir: &Path) -> Option<State> {
        StateFile::open(dir).unwrap().1
    }

    #[test]
    fn the_newest_record_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, s) = StateFile::open(dir.path()).unwrap();
        assert_eq!(s, None);
        for txid in 1..=5 {
            f.save(&state(txid), txid % 2 == 0).unwrap();
            assert_eq!(reopen(dir.path()), Some(state(txid)));
        }
        // Reopened, it goes on with higher sequence numbers.
        let (mut f, _) = StateFile::open(dir.path()).unwrap();
        f.save(&state(9), true).unwrap();
        assert_eq!(reopen(dir.path()), Some(state(9)));
    }

    #[test]
    fn a_torn_write_leaves_the_synced_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = StateFile::open(dir.path()).unwrap();
        f.save(&state(1), true).unwrap();
        f.save(&state(2), false).unwrap();
        // The next write goes to the slot of the unsynced record, never over the synced
        // one: tear it and the synced record is what is left.
        f.save(&state(3), true).unwrap();
        let raw = std::fs::read(path(dir.path())).unwrap();
        let newest_slot = if raw[..4] == *MAGIC && raw[8..16] == 3u64.to_be_bytes() {
            0
        } else {
            1
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path(dir.path()))
            .unwrap();
        file.write_all_at(b"torn", newest_slot * SLOT_SIZE + 30)
            .unwrap();
        assert_eq!(reopen(dir.path()), Some(state(1)));
        // A state too large for a slot is refused, and the record before it stays.
        let (mut f, _) = StateFile::open(dir.path()).unwrap();
        let huge = State {
            replica_url: "x".repeat(SLOT_SIZE as usize),
            ..state(4)
        };
        assert!(f.save(&huge, true).is_err());
        assert_eq!(reopen(dir.path()), Some(state(1)));
        // Both slots damaged: an error, not a fresh start.
        file.write_all_at(b"torn", (1 - newest_slot) * SLOT_SIZE + 30)
            .unwrap();
        assert!(StateFile::open(dir.path()).is_err());
    }
}
