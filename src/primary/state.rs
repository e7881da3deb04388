//! What a primary keeps on local disk beside the database (`<db>-litestream/state.json`):
//! which TXID the replica holds, where in the WAL that state ends, and the upload in flight.
//! Written to a temporary name, synced and renamed, so a crash leaves the old or the new.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

pub fn path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("state.json")
}

pub fn load(meta_dir: &Path) -> Result<Option<State>> {
    let p = path(meta_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::io(format!("reading {}", p.display()), std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
    }
}

/// Writes the state; `durable` also syncs it (skipped only for what a crash may lose
/// safely: the record of an upload in flight, which a process crash keeps anyway).
pub fn save(meta_dir: &Path, state: &State, durable: bool) -> Result<()> {
    let p = path(meta_dir);
    let tmp = meta_dir.join("state.json.tmp");
    let io = |e| Error::io(format!("writing {}", p.display()), e);
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    let f = std::fs::File::create(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut &f, &bytes).map_err(io)?;
    if durable {
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &p).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let s = State {
            replica_url: "file:///r".into(),
            node_id: 7,
            shipped: Position {
                txid: 3,
                checksum: 1 << 63,
                wal: None,
            },
            in_flight: Some((
                4,
                Position {
                    txid: 9,
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
        };
        save(dir.path(), &s, true).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
