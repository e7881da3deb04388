//! Unsigned varints exactly as Go's `encoding/binary` writes and reads them (`PutUvarint`,
//! `Uvarint`): little-endian groups of 7 bits, high bit = "more follows", at most 10 bytes.

/// Longest encoding of a u64.
pub const MAX_VARINT_LEN: usize = 10;

/// Decodes one varint from the start of `buf`; returns the value and the bytes it used.
/// `None` when `buf` ends mid-varint or the value overflows 64 bits (Go reports both as
/// errors too). Like Go, a non-minimal encoding (e.g. `80 00`) is accepted.
pub fn read_uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    let mut shift: u32 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return None;
        }
        if b < 0x80 {
            // The 10th byte may only contribute the single top bit.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return None;
            }
            return Some((x | (u64::from(b) << shift), i + 1));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    None
}

/// Appends the minimal encoding of `v`, as Go's `binary.AppendUvarint`.
pub fn write_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings_match_go() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, enc) in cases {
            let mut out = Vec::new();
            write_uvarint(&mut out, v);
            assert_eq!(out, enc, "encode {v}");
            assert_eq!(read_uvarint(enc), Some((v, enc.len())), "decode {v}");
        }
    }

    #[test]
    fn rejects_truncation_and_overflow() {
        assert_eq!(read_uvarint(&[]), None);
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0xff; 9]), None);
        let mut over = [0xff; 10];
        over[9] = 0x02;
        assert_eq!(read_uvarint(&over), None);
        assert_eq!(read_uvarint(&[0x80; 11]), None);
        // Non-minimal but in range, as Go accepts.
        assert_eq!(read_uvarint(&[0x80, 0x00]), Some((0, 2)));
    }
}
