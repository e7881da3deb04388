//! Writing a state out as an ordinary database file (`litestream_restore`): every page of
//! the snapshot in order, exactly as the LTX files hold them (page 1 too, unlike what the
//! VFS presents), the lock page as zeros, to a temporary name, synced, then renamed. When the
//! file that produced the state carries database checksums (Litestream 0.5 writes none; other
//! writers may), the pages written must add up to its post-apply checksum, or nothing is
//! renamed into place.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{Replica, Snapshot};
use crate::error::{Error, Result};
use crate::ltx::{DatabaseChecksum, LtxError};

/// Returns the number of pages written.
pub fn write_database(replica: &Arc<Replica>, snap: &Arc<Snapshot>, path: &Path) -> Result<u32> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".litestream-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", tmp.display()), e);
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        let zeros = vec![0u8; snap.page_size as usize];
        let mut checksum = DatabaseChecksum::new(snap.page_size);
        for pgno in 1..=snap.commit() {
            let page = replica.read_page(snap, pgno)?;
            let page: &[u8] = page.as_deref().unwrap_or(&zeros);
            checksum.add(pgno, page);
            out.write_all(page).map_err(|e| io("writing", e))?;
        }
        if let Some(expected) = snap.checksum {
            let got = checksum.finish();
            if got != expected {
                return Err(Error::corrupt(
                    format!("state {} of {}", snap.txid, replica.store.url()),
                    LtxError::ChecksumMismatch {
                        what: "database (restored pages against the post-apply checksum)",
                        expected,
                        got,
                    },
                ));
            }
        }
        let f = out
            .into_inner()
            .map_err(|e| io("writing", e.into_error()))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| snap.commit())
}
