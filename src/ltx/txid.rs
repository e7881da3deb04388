//! Transaction IDs: the u64 sequence numbers that name LTX files and order them in a chain.

use std::fmt;
use std::str::FromStr;

use super::LtxError;

/// A Litestream transaction ID. Always shown as 16 lowercase hex digits, the form used in
/// file names (`<min>-<max>.ltx`), logs and Litestream's own output.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Txid(u64);

impl Txid {
    /// "No transaction yet": the position before TXID 1 (valid TXIDs in files start at 1).
    pub const ZERO: Txid = Txid(0);

    pub const fn new(v: u64) -> Txid {
        Txid(v)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parses exactly 16 hex digits, like Go's `ltx.ParseTXID` (which accepts either case).
    /// Rejects signs, prefixes and other lengths: `u64::from_str_radix` alone would take "+1".
    pub fn parse(s: &str) -> Option<Txid> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Txid)
    }
}

impl fmt::Display for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Txid({:016x})", self.0)
    }
}

impl FromStr for Txid {
    type Err = LtxError;

    fn from_str(s: &str) -> Result<Txid, LtxError> {
        Txid::parse(s).ok_or_else(|| LtxError::BadTxid(s.chars().take(40).collect()))
    }
}

impl From<u64> for Txid {
    fn from(v: u64) -> Txid {
        Txid(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_16_lowercase_hex_digits() {
        assert_eq!(Txid::new(0xab).to_string(), "00000000000000ab");
        assert_eq!(Txid::new(u64::MAX).to_string(), "ffffffffffffffff");
        assert_eq!(format!("{:?}", Txid::new(1)), "Txid(0000000000000001)");
    }

    #[test]
    fn parse_round_trips_and_rejects_other_forms() {
        for v in [0, 1, 0x1234_5678_9abc_def0, u64::MAX] {
            let t = Txid::new(v);
            assert_eq!(Txid::parse(&t.to_string()), Some(t));
            assert_eq!(t.to_string().parse::<Txid>().ok(), Some(t));
        }
        assert_eq!(Txid::parse("00000000000000AB"), Some(Txid::new(0xab)));
        for bad in [
            "",
            "1",
            "+000000000000001",
            "0x00000000000001",
            "000000000000000g",
            "00000000000000001",
        ] {
            assert_eq!(Txid::parse(bad), None, "{bad:?}");
            assert!(bad.parse::<Txid>().is_err());
        }
        // A multi-byte character must not reach from_str_radix as a "16-byte" string.
        assert_eq!(Txid::parse("00000000000000é"), None);
    }

    #[test]
    fn orders_numerically() {
        assert!(Txid::new(2) < Txid::new(10));
        assert_eq!(Txid::ZERO.get(), 0);
    }
}
