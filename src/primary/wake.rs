//! Waking the leader from another process: a datagram on an abstract unix socket named
//! after the primary's folder. Sent when a process needs the leader now: to copy (a WAL
//! restart waiting for the copy, a close) or to ship as well (a `sync=remote` commit, which
//! cuts the `sync_interval` pause short); or as a hint that a checkpoint started, which
//! wakes only an idle copier. Between wake-ups the leader polls the wal-index, so a lost
//! datagram only costs latency.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;

use crc::{Crc, CRC_64_GO_ISO};

fn address(meta_dir: &Path) -> std::io::Result<SocketAddr> {
    let canon = std::fs::canonicalize(meta_dir).unwrap_or_else(|_| meta_dir.to_path_buf());
    let hash = Crc::<u64>::new(&CRC_64_GO_ISO).checksum(canon.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(format!("litestream.{hash:016x}"))
}

/// Where the leader of a primary's folder listens, worked out once (the name comes from the
/// folder's canonical path: a few system calls that a restart waiting on the leader should
/// not pay each time it asks).
pub struct Address(Option<SocketAddr>);

/// The process's sending end, made at the first wake-up and kept: a busy writer hints at
/// every checkpoint, and a socket per datagram is three system calls on its commit path.
/// One for the process, not one per database: a process may have thousands open.
static SENDER: OnceLock<Option<UnixDatagram>> = OnceLock::new();

impl Address {
    pub fn of(meta_dir: &Path) -> Address {
        Address(address(meta_dir).ok())
    }

    /// The leader's end (non-blocking, for the runtime). None when the name is taken
    /// (another leader of the same folder in a process that has not exited yet): the leader
    /// then only polls.
    pub fn listen(&self) -> Option<UnixDatagram> {
        let sock = UnixDatagram::bind_addr(self.0.as_ref()?).ok()?;
        sock.set_nonblocking(true).ok()?;
        Some(sock)
    }

    /// Wakes the leader, if one listens. Never blocks, never fails.
    pub fn send(&self, wake: Wake) {
        let Some(addr) = &self.0 else { return };
        let from = SENDER.get_or_init(|| {
            let sock = UnixDatagram::unbound().ok()?;
            sock.set_nonblocking(true).ok()?;
            Some(sock)
        });
        if let Some(sock) = from {
            let _ = sock.send_to_addr(&[wake as u8], addr);
        }
    }
}

/// What a wake-up asks of the leader (the datagram's one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Copy what is committed now.
    Copy = 1,
    /// Copy, and ship without waiting for `sync_interval`.
    Ship = 2,
    /// A checkpoint started, and a WAL restart may follow: copy if the copier is idle (a
    /// busy one copies at its pace anyway).
    Checkpoint = 3,
}

impl Wake {
    /// The wake-up a received datagram asks for (an unknown byte is a copy).
    pub fn of(datagram: &[u8]) -> Wake {
        match datagram.first() {
            Some(2) => Wake::Ship,
            Some(3) => Wake::Checkpoint,
            _ => Wake::Copy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_reaches_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let to = Address::of(dir.path());
            let l = tokio::net::UnixDatagram::from_std(to.listen().expect("bind")).unwrap();
            assert!(
                Address::of(dir.path()).listen().is_none(),
                "one listener per folder"
            );
            let mut buf = [0u8; 8];
            for wake in [Wake::Ship, Wake::Copy, Wake::Checkpoint, Wake::Copy] {
                to.send(wake);
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(Wake::of(&buf[..n]), wake);
            }
        });
    }
}
