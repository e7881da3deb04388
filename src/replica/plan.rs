//! The restore plan: which files, in which order, rebuild the newest reachable state.
//!
//! A state is reached by a chain of files starting at TXID 1 (a snapshot, or any file whose
//! MinTXID is 1) in which each file starts at the TXID after the previous one ends. Files of
//! any level may be mixed. Among chains we want the one that reaches the highest TXID, and
//! among those the one with the fewest files (newest snapshot, then compacted levels).

use std::collections::HashMap;

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
    // by_start[min] = files starting there.
    let mut by_start: HashMap<u64, Vec<&FileInfo>> = HashMap::new();
    for f in &files {
        by_start.entry(f.min.get()).or_default().push(f);
    }
    // best[start] = (reach, file count, first file) for the best chain starting at `start`,
    // computed from the highest start down so that each step's continuation is known.
    let mut starts: Vec<u64> = by_start.keys().copied().collect();
    starts.sort_unstable_by(|a, b| b.cmp(a));
    let mut best: HashMap<u64, (u64, usize, &FileInfo)> = HashMap::new();
    for s in starts {
        let mut choice: Option<(u64, usize, &FileInfo)> = None;
        for f in &by_start[&s] {
            let (reach, count) = match f.max.get().checked_add(1).and_then(|n| best.get(&n)) {
                Some((r, c, _)) => (*r, c + 1),
                None => (f.max.get(), 1),
            };
            let better = match choice {
                None => true,
                Some((br, bc, bf)) => {
                    reach > br
                        || (reach == br && (count < bc || (count == bc && f.level > bf.level)))
                }
            };
            if better {
                choice = Some((reach, count, f));
            }
        }
        if let Some(c) = choice {
            best.insert(s, c);
        }
    }
    let newest = files.iter().map(|f| f.max).max().unwrap_or(Txid::ZERO);
    let Some(&(reach, _, _)) = best.get(&1) else {
        let earliest = files.iter().map(|f| f.min).min().unwrap_or(Txid::ZERO);
        return Err(PlanProblem::NoBase { earliest });
    };
    let mut chain = Vec::new();
    let mut at = 1u64;
    while let Some(&(_, _, f)) = best.get(&at) {
        chain.push(f.clone());
        match f.max.get().checked_add(1) {
            Some(n) => at = n,
            None => break,
        }
    }
    if reach < newest.get() {
        let next_min = files
            .iter()
            .map(|f| f.min)
            .filter(|m| m.get() > reach)
            .min()
            .unwrap_or(newest);
        return Err(PlanProblem::Gap {
            reached: Txid::new(reach),
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
    fn dead_end_long_file_is_not_chosen() {
        // A long file whose continuation is missing loses to a shorter route that goes on.
        let files = vec![f(0, 1, 1), f(2, 2, 10), f(0, 2, 3), f(0, 4, 12)];
        assert_eq!(
            ranges(&plan(&files, None).unwrap()),
            vec![(0, 1, 1), (0, 2, 3), (0, 4, 12)]
        );
    }
}
