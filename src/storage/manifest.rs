//! The change feed: a small object beside the levels (`manifest.json` at the replica root)
//! that our primary rewrites after each upload and compaction, naming the newest TXID and
//! the files a reader needs to reach it (the restore plan of the newest state: a snapshot,
//! compacted files, the newest L0 files). Readers poll it with a conditional GET, which
//! costs one cheap request and, while nothing changed, nothing else; a replica written by
//! the real Litestream has none and is followed by listing.
//!
//! The manifest is a hint, never the truth: a reader trusts it only while it is not behind
//! what the reader has seen, and still lists now and then to catch files it does not name
//! (another writer, a primary that died between an upload and its manifest). A plain HTTP
//! server cannot list at all: there the manifest is the listing.
//!
//! ```json
//! {"version": 1, "generation": "9f1c…", "txid": "00000000000000ff", "layout": "ltx",
//!  "files": [{"level": 9, "min": "0000000000000001", "max": "00000000000000f0", "size": 4096}, …]}
//! ```
//! `generation` changes with each primary's term, so that a reader can tell a new writer
//! from an old one; `layout` says where the files live (`ltx`: `ltx/<level>/`, `hex`:
//! `<level as 4 hex digits>/`).

use serde_json::{json, Value};

use super::layout::Layout;
use super::FileInfo;
use crate::ltx::Txid;

/// The object's name, relative to the replica root.
pub const NAME: &str = "manifest.json";

const VERSION: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub generation: String,
    /// The newest TXID of the files named.
    pub txid: Txid,
    pub layout: Layout,
    pub files: Vec<FileInfo>,
}

impl Manifest {
    /// The manifest naming `files` (the restore plan of the newest state).
    pub fn new(generation: &str, layout: Layout, mut files: Vec<FileInfo>) -> Manifest {
        files.sort_by_key(|f| (f.level, f.min, f.max));
        Manifest {
            generation: generation.to_string(),
            txid: files.iter().map(|f| f.max).max().unwrap_or(Txid::new(0)),
            layout,
            files,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "level": f.level,
                    "min": f.min.to_string(),
                    "max": f.max.to_string(),
                    "size": f.size,
                })
            })
            .collect();
        let v = json!({
            "version": VERSION,
            "generation": self.generation,
            "txid": self.txid.to_string(),
            "layout": match self.layout {
                Layout::LtxDecimal => "ltx",
                Layout::HexLevels => "hex",
            },
            "files": files,
        });
        let mut out = serde_json::to_vec(&v).expect("a JSON value serializes");
        out.push(b'\n');
        out
    }

    /// Parses a manifest; anything unexpected is refused with what was wrong (the reader
    /// then lists instead).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let version = v.get("version").and_then(Value::as_u64);
        if version != Some(VERSION) {
            return Err(format!("version {version:?}, expected {VERSION}"));
        }
        let text = |v: &Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("no {key}"))
        };
        let txid = |v: &Value, key: &str| -> Result<Txid, String> {
            let t = text(v, key)?;
            Txid::parse(&t).ok_or_else(|| format!("{key} {t:?} is not a TXID"))
        };
        let layout = match text(&v, "layout")?.as_str() {
            "ltx" => Layout::LtxDecimal,
            "hex" => Layout::HexLevels,
            other => return Err(format!("layout {other:?}")),
        };
        let mut files = Vec::new();
        for f in v.get("files").and_then(Value::as_array).ok_or("no files")? {
            let level = f
                .get("level")
                .and_then(Value::as_u64)
                .filter(|&l| l <= 9)
                .ok_or("a file without a level from 0 to 9")?;
            let (min, max) = (txid(f, "min")?, txid(f, "max")?);
            if min.get() == 0 || min > max {
                return Err(format!("a file from {min} to {max}"));
            }
            let size = f
                .get("size")
                .and_then(Value::as_u64)
                .ok_or("a file without a size")?;
            files.push(FileInfo {
                level: level as u8,
                min,
                max,
                size,
            });
        }
        let m = Manifest::new(&text(&v, "generation")?, layout, files);
        let said = txid(&v, "txid")?;
        if said != m.txid {
            return Err(format!(
                "txid {said} but its newest file ends at {}",
                m.txid
            ));
        }
        Ok(m)
    }
}

/// A fresh generation name: the process, the time, and a counter.
pub fn new_generation() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.rotate_left(20)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_newest_txid() {
        let files = vec![
            FileInfo::for_test(0, 11, 12),
            FileInfo::for_test(9, 1, 8),
            FileInfo::for_test(1, 9, 10),
        ];
        let m = Manifest::new("abc", Layout::HexLevels, files);
        assert_eq!(m.txid, Txid::new(12));
        assert_eq!(m.files[0].level, 0, "sorted by level");
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        let empty = Manifest::new("g", Layout::LtxDecimal, vec![]);
        assert_eq!(
            Manifest::decode(&empty.encode()).unwrap().txid,
            Txid::new(0)
        );
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let good = Manifest::new("g", Layout::LtxDecimal, vec![FileInfo::for_test(0, 1, 2)]);
        let text = String::from_utf8(good.encode()).unwrap();
        let cases = [
            ("garbage", "not JSON"),
            (&text.replace("\"version\":1", "\"version\":2"), "version"),
            (&text.replace("\"ltx\"", "\"zip\""), "layout"),
            (
                &text.replace(
                    "\"txid\":\"0000000000000002\"",
                    "\"txid\":\"0000000000000003\"",
                ),
                "txid",
            ),
            (&text.replace("\"level\":0", "\"level\":12"), "level"),
            (&text.replace(",\"size\":100", ""), "size"),
            (
                &text.replace(
                    "\"min\":\"0000000000000001\"",
                    "\"min\":\"0000000000000005\"",
                ),
                "from",
            ),
        ];
        for (bytes, why) in cases {
            let e = Manifest::decode(bytes.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bytes}: {e}");
        }
        assert_ne!(new_generation(), new_generation());
    }
}
