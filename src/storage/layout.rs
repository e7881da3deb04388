//! Where the files of each level live, per backend (COMPAT.md "Replica layout"):
//! S3 and S3-compatible stores use `<prefix>/<level as 4 hex digits>/`, every other backend
//! `<root>/ltx/<level in decimal>/`. File names are `<minTXID>-<maxTXID>.ltx`, 16 hex each.

use crate::ltx::Txid;

/// The snapshot level.
pub const SNAPSHOT_LEVEL: u8 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `prefix/0000/…` (S3).
    HexLevels,
    /// `root/ltx/0/…` (file, GCS, Azure, SFTP, WebDAV).
    LtxDecimal,
}

impl Layout {
    /// The folder of `level`, relative to the replica root, without trailing slash.
    pub fn level_dir(self, level: u8) -> String {
        match self {
            Layout::HexLevels => format!("{level:04x}"),
            Layout::LtxDecimal => format!("ltx/{level}"),
        }
    }
}

pub fn file_name(min: Txid, max: Txid) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses `<min>-<max>.ltx`; anything else in a level folder (`.tmp` files) is not ours.
pub fn parse_file_name(name: &str) -> Option<(Txid, Txid)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    if min.len() != 16 || max.len() != 16 {
        return None;
    }
    let min = Txid::parse(min)?;
    let max = Txid::parse(max)?;
    (min.get() >= 1 && min <= max).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_dirs() {
        assert_eq!(Layout::HexLevels.level_dir(0), "0000");
        assert_eq!(Layout::HexLevels.level_dir(9), "0009");
        assert_eq!(Layout::LtxDecimal.level_dir(9), "ltx/9");
    }

    #[test]
    fn names() {
        let (a, b) = parse_file_name("0000000000000001-00000000000000ff.ltx").unwrap();
        assert_eq!((a.get(), b.get()), (1, 255));
        assert_eq!(file_name(a, b), "0000000000000001-00000000000000ff.ltx");
        assert!(parse_file_name("0000000000000001-00000000000000ff.ltx.tmp").is_none());
        assert!(parse_file_name("0000000000000002-0000000000000001.ltx").is_none());
        assert!(parse_file_name("x-y.ltx").is_none());
    }
}
