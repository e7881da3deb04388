//! Following a replica's change feed (`storage::manifest`): each poll asks for the manifest
//! with a conditional GET, and lists only when it must. While nothing changed that is one
//! request answered "not modified" — against three LIST requests, the most expensive kind,
//! for a poll by listing.
//!
//! The manifest is trusted only while it is not behind what this reader has seen: a manifest
//! naming an older TXID (a primary that died between an upload and its manifest, another
//! writer such as the real Litestream) makes every poll list until a newer manifest comes.
//! Every `list_interval` a poll lists level 0 instead (one LIST), to catch a manifest that
//! stopped changing while files kept coming; a replica without a manifest is followed by
//! listing, asking for one again every `MISSING_RECHECK` polls.

use std::time::{Duration, Instant};

use crate::ltx::Txid;
use crate::storage::manifest::Manifest;
use crate::storage::{Fetched, FileInfo};

/// Polls by listing between two looks for a manifest that was missing or unusable.
const MISSING_RECHECK: u32 = 30;

/// How a poll learns of new files.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Poll {
    /// A conditional GET of the manifest.
    Manifest,
    /// Lists the polled levels (no usable manifest).
    List,
    /// Lists level 0 after the newest file seen in it: every writer's new files land there
    /// first, so one LIST shows whether the manifest missed any.
    Check,
}

/// What a poll does with the manifest's answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The manifest changed and is current: these files (the plan of its newest state).
    Named(Vec<FileInfo>),
    /// The manifest did not change and is current: nothing new, nothing to list.
    NothingNew,
    /// List the levels.
    List,
}

/// What `litestream_stats` shows of the feed (`poll.feed`).
#[derive(Debug, Clone)]
pub struct FeedStatus {
    /// `"manifest"` while the feed is followed, `"listing"` otherwise.
    pub mode: &'static str,
    pub manifest_gets: u64,
    pub not_modified: u64,
    pub listings: u64,
    /// Why the last manifest was not used.
    pub refused: Option<String>,
}

impl Default for FeedStatus {
    /// Before the first poll: opened by listing.
    fn default() -> Self {
        FeedStatus {
            mode: "listing",
            manifest_gets: 0,
            not_modified: 0,
            listings: 0,
            refused: None,
        }
    }
}

/// What the reader knows of the feed between polls (kept with the planner).
#[derive(Debug, Default)]
pub(super) struct Follow {
    /// The entity tag of the manifest last read.
    etag: Option<String>,
    /// The newest TXID it named; None when it was missing or unusable.
    named: Option<Txid>,
    /// Polls by listing since the manifest was found missing or unusable.
    without: Option<u32>,
    /// When the replica was last listed in full or by level.
    listed_at: Option<Instant>,
    pub status: FeedStatus,
}

impl Follow {
    /// How this poll learns of new files: by listing while the feed is off or was missing
    /// lately, by a check of level 0 every `list_interval` (0: never) when `may_check`, else
    /// from the manifest. A replica nobody reads defers its checks until a reader comes,
    /// whose first poll then checks: idle, it costs manifest GETs only.
    pub fn next_poll(
        &mut self,
        enabled: bool,
        list_interval: Duration,
        now: Instant,
        may_check: bool,
    ) -> Poll {
        if !enabled {
            return Poll::List;
        }
        if let Some(n) = &mut self.without {
            *n += 1;
            if *n % MISSING_RECHECK != 0 {
                return Poll::List;
            }
        }
        let due = may_check
            && !list_interval.is_zero()
            && self
                .listed_at
                .is_some_and(|at| now.duration_since(at) >= list_interval);
        if due {
            Poll::Check
        } else {
            Poll::Manifest
        }
    }

    /// The replica was listed (a poll by listing, or a re-plan).
    pub fn listed(&mut self, now: Instant) {
        self.listed_at = Some(now);
        self.status.listings += 1;
    }

    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Decides what the poll does with the answer to its conditional GET, given the newest
    /// TXID this reader has seen.
    pub fn answer(&mut self, fetched: Fetched, seen: Txid) -> Source {
        self.status.manifest_gets += 1;
        let source = self.decide(fetched, seen);
        self.status.mode = match (self.named, self.without) {
            (Some(_), None) => "manifest",
            _ => "listing",
        };
        source
    }

    fn decide(&mut self, fetched: Fetched, seen: Txid) -> Source {
        match fetched {
            Fetched::NotModified => {
                self.status.not_modified += 1;
                match self.named {
                    Some(txid) if txid >= seen => Source::NothingNew,
                    _ => Source::List,
                }
            }
            Fetched::Missing => {
                self.etag = None;
                self.refuse("it is missing".to_string());
                Source::List
            }
            Fetched::Changed { bytes, etag } => {
                self.etag = etag;
                match Manifest::decode(&bytes) {
                    Err(e) => {
                        self.refuse(format!("it is unusable: {e}"));
                        Source::List
                    }
                    Ok(m) if m.txid < seen => {
                        self.named = Some(m.txid);
                        self.without = None;
                        self.status.refused = Some(format!(
                            "it names TXID {} but {seen} was seen: it is behind",
                            m.txid
                        ));
                        Source::List
                    }
                    Ok(m) => {
                        self.named = Some(m.txid);
                        self.without = None;
                        self.status.refused = None;
                        Source::Named(m.files)
                    }
                }
            }
        }
    }

    fn refuse(&mut self, why: String) {
        self.named = None;
        self.without.get_or_insert(0);
        self.status.refused = Some(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::layout::Layout;
    use bytes::Bytes;

    fn manifest(txid: u64) -> Fetched {
        let m = Manifest::new(
            "g",
            Layout::LtxDecimal,
            vec![FileInfo::for_test(9, 1, txid)],
        );
        Fetched::Changed {
            bytes: Bytes::from(m.encode()),
            etag: Some(format!("e{txid}")),
        }
    }

    #[test]
    fn answers_row_by_row() {
        let t = Txid::new;
        let mut f = Follow::default();
        // Never read: "not modified" cannot be trusted.
        assert_eq!(f.answer(Fetched::NotModified, t(1)), Source::List);
        assert!(matches!(f.answer(manifest(5), t(3)), Source::Named(ref v) if v.len() == 1));
        assert_eq!(f.etag(), Some("e5"));
        assert_eq!(f.status.mode, "manifest");
        assert_eq!(f.answer(Fetched::NotModified, t(5)), Source::NothingNew);
        // This reader saw more than the manifest names (a listing found newer files).
        assert_eq!(f.answer(Fetched::NotModified, t(6)), Source::List);
        // A manifest behind the reader.
        assert_eq!(f.answer(manifest(4), t(6)), Source::List);
        assert!(f.status.refused.as_deref().unwrap().contains("behind"));
        // Garbage, then missing: listing mode.
        let junk = Fetched::Changed {
            bytes: Bytes::from_static(b"{"),
            etag: None,
        };
        assert_eq!(f.answer(junk, t(6)), Source::List);
        assert_eq!(f.status.mode, "listing");
        assert_eq!(f.answer(Fetched::Missing, t(6)), Source::List);
        assert_eq!(f.etag(), None);
        // A newer manifest: followed again.
        assert!(matches!(f.answer(manifest(9), t(6)), Source::Named(_)));
        assert_eq!(f.status.mode, "manifest");
        assert_eq!((f.status.manifest_gets, f.status.not_modified), (8, 3));
    }

    #[test]
    fn lists_when_off_missing_or_due() {
        let now = Instant::now();
        let every = Duration::from_secs(60);
        let mut f = Follow::default();
        assert_eq!(f.next_poll(false, every, now, true), Poll::List, "feed off");
        assert_eq!(
            f.next_poll(true, every, now, true),
            Poll::Manifest,
            "never listed: opened by a listing"
        );
        f.listed(now);
        assert_eq!(
            f.next_poll(true, every, now + Duration::from_secs(10), true),
            Poll::Manifest
        );
        assert_eq!(
            f.next_poll(true, every, now + every, false),
            Poll::Manifest,
            "idle: the check waits for a reader"
        );
        assert_eq!(
            f.next_poll(true, every, now + every, true),
            Poll::Check,
            "a check is due"
        );
        assert_eq!(
            f.next_poll(true, Duration::ZERO, now + every * 9, true),
            Poll::Manifest,
            "0: never"
        );
        // Missing: list, and look again every MISSING_RECHECK polls.
        f.answer(Fetched::Missing, Txid::new(1));
        let looks = (0..MISSING_RECHECK * 2)
            .filter(|_| f.next_poll(true, Duration::ZERO, now, true) == Poll::Manifest)
            .count();
        assert_eq!(looks, 2);
    }
}
