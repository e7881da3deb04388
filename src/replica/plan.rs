//! The restore plan: which files, in which order, rebuild the newest reachable state.
//!
//! A state is reached by a chain of files starting at TXID 1 (a snapshot, or any file whose
//! MinTXID is 1) in which each file starts at or before the TXID after the state reached
//! so far and ends after it. Files of any level may be mixed. A file may overlap the state
//! it is applied to: a compacted file holds the newest version, within its range, of every
//! page changed in it, so applying it to any state inside its range gives its end state
//! (Litestream's own restore does the same). Our primary writes such files when a
//! snapshot ends inside a level-1 window, and once the level-0 files of that window are
//! deleted, only the overlapping file continues the chain.
//!
//! Among chains we want the one that reaches the highest TXID, and among those the one with
//! the fewest files: from each state, the file that reaches furthest (the greedy choice is
//! optimal for covering a range with the fewest intervals), a higher level on ties.

use crate::ltx::Txid;
use crate::storage::FileInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<FileInfo>,
}

impl Plan {
    pub fn max_txid(&self) -> Option<Txid> {
        self.files.last().map(|f| f.max)
    }
}

/// Why no plan reaches the newest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanProblem {
    /// Nothing in the replica.
    Empty,
    /// No file starts at TXID 1, so no state can be rebuilt.
    NoBase { earliest: Txid },
    /// The best chain stops before files that exist: a hole in the TXIDs.
    Gap { reached: Txid, next_min: Txid },
}

impl PlanProblem {
    /// The error an open or a re-plan of the replica at `url` reports for this problem
    /// (one mapping, for readers and for a primary's start-up alike).
    pub fn into_error(self, url: String) -> crate::error::Error {
        use crate::error::Error;
        match self {
            PlanProblem::Empty => Error::Empty {
                url,
                note: String::new(),
            },
            PlanProblem::NoBase { earliest } => Error::NoState {
                url,
                reason: format!("no snapshot: the earliest file starts at TXID {earliest}, not 1"),
            },
            PlanProblem::Gap { reached, next_min } => Error::Gap {
                url,
                reached: reached.to_string(),
                next_min: next_min.to_string(),
                missing: format!(
                    "{}-{}",
                    Txid::new(reached.get() + 1),
                    Txid::new(next_min.get() - 1)
                ),
            },
        }
    }
}

/// Computes the longest, then shortest, chain from TXID 1 over `files`, considering only
/// files that end at or before `limit` (None: no limit).
pub fn plan(files: &[FileInfo], limit: Option<Txid>) -> Result<Plan, PlanProblem> {
    let files: Vec<&FileInfo> = files
        .iter()
        .filter(|f| limit.is_none_or(|l| f.max <= l))
        .collect();
    if files.is_empty() {
        return Err(PlanProblem::Empty);
    }
    let mut by_min = files.clone();
    by_min.sort_by_key(|f| f.min);
    let newest = files.iter().map(|f| f.max).max().unwrap_or(Txid::ZERO);
    let mut chain: Vec<FileInfo> = Vec::new();
    let mut reached = 0u64;
    let mut next = 0; // by_min[..next] start at or before reached + 1: candidates seen
    let mut best: Option<&FileInfo> = None;
    loop {
        while next < by_min.len() && by_min[next].min.get() <= reached + 1 {
            let f = by_min[next];
            if best.is_none_or(|b| (f.max, f.level) > (b.max, b.level)) {
                best = Some(f);
            }
            next += 1;
        }
        match best.take() {
            Some(f) if f.max.get() > reached => {
                reached = f.max.get();
                chain.push(f.clone());
            }
            _ => break,
        }
    }
    if chain.is_empty() {
        let earliest = files.iter().map(|f| f.min).min().unwrap_or(Txid::ZERO);
        return Err(PlanProblem::NoBase { earliest });
    }
    if reached < newest.get() {
        let next_min = files
            .iter()
            .map(|f| f.min)
            .filter(|m| m.get() > reached)
            .min()
            .unwrap_or(newest);
        return Err(PlanProblem::Gap {
            reached: Txid::new(reached),
            next_min,
        });
    }
    Ok(Plan { files: chain })
}

/// Like [`plan`], but a gap is not fatal: returns the chain that reaches furthest.
/// Used by the poller, which must keep serving while a listing is momentarily inconsistent.
pub fn plan_reachable(files: &[FileInfo], limit: Option<Txid>) -> Result<Plan, PlanProblem> {
    match plan(files, limit) {
        Err(PlanProblem::Gap { reached, .. }) => plan(files, Some(reached)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64) -> FileInfo {
        FileInfo::for_test(level, min, max)
    }

    fn ranges(p: &Plan) -> Vec<(u8, u64, u64)> {
        p.files
            .iter()
            .map(|f| (f.level, f.min.get(), f.max.get()))
            .collect()
    }

    #[test]
    fn l0_only() {
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 3, 5)];
        assert_eq!(
            ranges(&plan(&files, None).unwrap()),
            vec![(0, 1, 1), (0, 2, 2), (0, 3, 5)]
        );
    }

    #[test]
    fn newest_snapshot_then_compacted_then_l0() {
        let files = vec![
            f(9, 1, 4),
            f(9, 1, 8),
            f(1, 1, 4),
            f(1, 5, 8),
            f(1, 9, 12),
            f(0, 9, 9),
            f(0, 10, 10),
            f(0, 11, 12),
            f(0, 13, 13),
            f(0, 14, 14),
        ];
        assert_eq!(
            ranges(&plan(&files, None).unwrap()),
            vec![(9, 1, 8), (1, 9, 12), (0, 13, 13), (0, 14, 14)]
        );
    }

    #[test]
    fn limit_for_time_travel() {
        let files = vec![f(9, 1, 8), f(0, 1, 3), f(0, 4, 6), f(0, 7, 8), f(0, 9, 9)];
        assert_eq!(
            ranges(&plan(&files, Some(Txid::new(6))).unwrap()),
            vec![(0, 1, 3), (0, 4, 6)]
        );
    }

    #[test]
    fn gap_is_reported() {
        let files = vec![f(0, 1, 2), f(0, 3, 3), f(0, 6, 7)];
        assert_eq!(
            plan(&files, None),
            Err(PlanProblem::Gap {
                reached: Txid::new(3),
                next_min: Txid::new(6)
            })
        );
        assert_eq!(
            ranges(&plan_reachable(&files, None).unwrap()),
            vec![(0, 1, 2), (0, 3, 3)]
        );
    }

    #[test]
    fn no_base_and_empty() {
        assert_eq!(plan(&[], None), Err(PlanProblem::Empty));
        assert_eq!(
            plan(&[f(0, 5, 6)], None),
            Err(PlanProblem::NoBase {
                earliest: Txid::new(5)
            })
        );
    }

    #[test]
    fn a_long_file_continues_through_an_overlapping_one() {
        // 2-10 is no dead end: 4-12 applies on top of state 10 (it holds every page changed
        // in 4..12 at its newest version), as Litestream's restore applies it.
        let files = vec![f(0, 1, 1), f(2, 2, 10), f(0, 2, 3), f(0, 4, 12)];
        assert_eq!(
            ranges(&plan(&files, None).unwrap()),
            vec![(0, 1, 1), (2, 2, 10), (0, 4, 12)]
        );
    }

    /// What our primary leaves when a snapshot ends inside a level-1 window and retention
    /// then deletes that window's level-0 files: only a file that starts before the
    /// snapshot's end continues the chain.
    #[test]
    fn a_snapshot_ending_inside_a_compacted_window() {
        let files = vec![f(9, 1, 74), f(1, 73, 86), f(0, 87, 87), f(0, 88, 90)];
        assert_eq!(
            ranges(&plan(&files, None).unwrap()),
            vec![(9, 1, 74), (1, 73, 86), (0, 87, 87), (0, 88, 90)]
        );
        // Time travel stops where asked, and a real hole is still a gap.
        assert_eq!(
            plan(&files, Some(Txid::new(86))).unwrap().max_txid(),
            Some(Txid::new(86))
        );
        let holed = vec![f(9, 1, 74), f(1, 76, 86)];
        assert_eq!(
            plan(&holed, None),
            Err(PlanProblem::Gap {
                reached: Txid::new(74),
                next_min: Txid::new(76)
            })
        );
    }
}
