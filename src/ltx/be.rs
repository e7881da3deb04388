//! Bounds-checked big-endian reads: every LTX integer is big-endian, and every read of
//! untrusted bytes must fail softly rather than panic, so these return `None` past the end.

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(array_at(b, at)?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(array_at(b, at)?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(array_at(b, at)?))
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_refuses_out_of_range() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u16_at(&b, 0), Some(0x0102));
        assert_eq!(u32_at(&b, 4), Some(0x0506_0708));
        assert_eq!(u64_at(&b, 0), Some(0x0102_0304_0506_0708));
        assert_eq!(u32_at(&b, 5), None);
        assert_eq!(u64_at(&b, 1), None);
        assert_eq!(u16_at(&b, usize::MAX), None);
    }
}
