//! The database checksum of the newest encoded state, kept page by page so that each new
//! LTX file's post-apply checksum costs only the pages it changes (XOR out the old page
//! checksum, XOR in the new one). Eight bytes a page.

use crate::ltx::{lock_pgno, page_checksum, CHECKSUM_FLAG};

#[derive(Debug, Clone, Default)]
pub struct PageSums {
    /// Index pgno-1; 0 for a page never seen (the lock page, or beyond the file).
    sums: Vec<u64>,
    acc: u64,
    lock: u32,
}

impl PageSums {
    pub fn new(page_size: u32) -> PageSums {
        PageSums {
            sums: Vec::new(),
            acc: 0,
            lock: lock_pgno(page_size),
        }
    }

    pub fn set(&mut self, pgno: u32, page: &[u8]) {
        if pgno == 0 || pgno == self.lock {
            return;
        }
        let i = pgno as usize - 1;
        if self.sums.len() <= i {
            self.sums.resize(i + 1, 0);
        }
        let new = page_checksum(pgno, page);
        self.acc ^= self.sums[i] ^ new;
        self.sums[i] = new;
    }

    /// The database shrank to `commit` pages: the pages past it leave the checksum.
    pub fn truncate(&mut self, commit: u32) {
        for s in self.sums.iter().skip(commit as usize) {
            self.acc ^= s;
        }
        self.sums.truncate(commit as usize);
    }

    /// The database checksum as LTX stores it (bit 63 set).
    pub fn checksum(&self) -> u64 {
        self.acc | CHECKSUM_FLAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::DatabaseChecksum;

    #[test]
    fn matches_a_full_recount() {
        let ps = 512;
        let page = |b: u8| vec![b; ps as usize];
        let mut sums = PageSums::new(ps);
        for pgno in 1..=5 {
            sums.set(pgno, &page(pgno as u8));
        }
        sums.set(2, &page(9));
        sums.truncate(4);
        let mut full = DatabaseChecksum::new(ps);
        for (pgno, b) in [(1, 1), (2, 9), (3, 3), (4, 4)] {
            full.add(pgno, &page(b));
        }
        assert_eq!(sums.checksum(), full.finish());
    }
}
