//! `litestream_restore` verifies the restored pages against the database checksum of the last
//! file when the files carry checksums (Litestream 0.5 writes none; this crate's encoder
//! writes them when asked). Plain Rust: no SQLite host needed.

use litestream::config::Config;
use litestream::ltx::{DatabaseChecksum, Encoder, Header, Txid};
use litestream::replica::{registry, restore};

const PAGE: u32 = 4096;

fn page(fill: u8) -> Vec<u8> {
    vec![fill; PAGE as usize]
}

/// Writes `ltx/0/<min>-<max>.ltx` with checksums; returns the post-apply checksum.
fn write_file(
    dir: &std::path::Path,
    txid: u64,
    pages: &[(u32, Vec<u8>)],
    db: &mut DatabaseChecksum,
    before: &[(u32, Vec<u8>)],
    pre: u64,
    tamper: bool,
) -> u64 {
    let mut header = Header::new(
        PAGE,
        3,
        Txid::new(txid),
        Txid::new(txid),
        1_700_000_000_000 + txid as i64,
    );
    header.flags = 0; // database checksums present
    header.pre_apply_checksum = pre;
    for (pgno, data) in before {
        db.remove(*pgno, data);
    }
    for (pgno, data) in pages {
        db.add(*pgno, data);
    }
    let post = if tamper {
        db.finish() ^ 0x10
    } else {
        db.finish()
    };
    let mut enc = Encoder::new(Vec::new(), header).unwrap();
    for (pgno, data) in pages {
        enc.add_page(*pgno, data).unwrap();
    }
    let (bytes, _) = enc.finish(post).unwrap();
    let folder = dir.join("ltx/0");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(format!("{:016x}-{:016x}.ltx", txid, txid)),
        bytes,
    )
    .unwrap();
    post
}

fn replica(tamper: bool) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = DatabaseChecksum::new(PAGE);
    let v1 = vec![(1, page(1)), (2, page(2)), (3, page(3))];
    let post1 = write_file(dir.path(), 1, &v1, &mut db, &[], 0, false);
    write_file(
        dir.path(),
        2,
        &[(2, page(9))],
        &mut db,
        &[(2, page(2))],
        post1,
        tamper,
    );
    let expected = [page(1), page(9), page(3)].concat();
    (dir, expected)
}

fn open(dir: &std::path::Path) -> std::sync::Arc<litestream::replica::Replica> {
    let url = format!("file://{}", dir.display());
    let params = [
        ("replica_url", url.as_str()),
        ("poll_interval", "60s"),
        ("cache_size", "1MB"),
        ("open_timeout", "2s"),
        ("hedge_after", "0"),
    ];
    registry::open(&Config::from_params(&params, &|_| None).unwrap()).unwrap()
}

#[test]
fn restore_verifies_database_checksums() {
    let (dir, expected) = replica(false);
    let r = open(dir.path());
    let out = dir.path().join("restored.db");
    let pages = restore::write_database(&r, &r.current(), &out, &|| false).unwrap();
    assert_eq!(pages, 3);
    assert_eq!(std::fs::read(&out).unwrap(), expected);
}

#[test]
fn restore_refuses_pages_that_do_not_match_the_checksum() {
    let (dir, _) = replica(true);
    let r = open(dir.path());
    let out = dir.path().join("restored.db");
    let err = restore::write_database(&r, &r.current(), &out, &|| false).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!out.exists(), "nothing is renamed into place");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "the temporary file is removed");
}

#[test]
fn an_interrupted_restore_leaves_nothing() {
    let (dir, _) = replica(false);
    let r = open(dir.path());
    let out = dir.path().join("restored.db");
    let err = restore::write_database(&r, &r.current(), &out, &|| true).unwrap_err();
    assert_eq!(err.sqlite_code(), libsqlite3_sys::SQLITE_INTERRUPT, "{err}");
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "the temporary file is removed");
}
