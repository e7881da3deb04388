//! Waking the leader from another process: a datagram on an abstract unix socket named
//! after the primary's folder. Sent when a process needs the leader now (a `sync=remote`
//! commit, a WAL restart waiting for the copy, a close); between wake-ups the leader polls
//! the wal-index, so a lost datagram only costs latency.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

use crc::{Crc, CRC_64_GO_ISO};

fn address(meta_dir: &Path) -> std::io::Result<SocketAddr> {
    let canon = std::fs::canonicalize(meta_dir).unwrap_or_else(|_| meta_dir.to_path_buf());
    let hash = Crc::<u64>::new(&CRC_64_GO_ISO).checksum(canon.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(format!("litestream.{hash:016x}"))
}

/// The leader's end (non-blocking, for the runtime). None when the name is taken (another
/// leader of the same folder in a process that has not exited yet): the leader then only
/// polls.
pub fn listen(meta_dir: &Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::bind_addr(&address(meta_dir).ok()?).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

/// Wakes the leader of `meta_dir`, if one listens. Never blocks, never fails.
pub fn send(meta_dir: &Path) {
    let Ok(addr) = address(meta_dir) else { return };
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to_addr(&[1], &addr);
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
            let l = tokio::net::UnixDatagram::from_std(listen(dir.path()).expect("bind")).unwrap();
            assert!(listen(dir.path()).is_none(), "one listener per folder");
            send(dir.path());
            let mut buf = [0u8; 8];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), l.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &[1]);
        });
    }
}
