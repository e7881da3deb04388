//! The leader keeps the replica's manifest (`storage::manifest`) current: after each upload
//! and compaction it names the restore plan of the newest state, so that readers learn of
//! new files with one conditional GET instead of listing. The files are known from one
//! listing at the start of the term and after each compaction (which deletes), plus every
//! upload since; a term begins a new generation.

use std::collections::HashSet;

use bytes::Bytes;

use crate::error::Result;
use crate::replica::plan::{plan, PlanProblem};
use crate::storage::manifest::{self, Manifest};
use crate::storage::{FileInfo, Store};

pub(super) struct Feed {
    /// Off (`manifest=false`): nothing is written, and a manifest found is removed.
    enabled: bool,
    generation: String,
    state: tokio::sync::Mutex<Known>,
}

struct Known {
    /// The replica's files; None: list before the next manifest.
    files: Option<HashSet<FileInfo>>,
    /// Something changed since the last manifest was written.
    changed: bool,
    /// The last manifest written in this term.
    written: Option<Vec<u8>>,
}

impl Feed {
    pub fn new(enabled: bool) -> Feed {
        Feed {
            enabled,
            generation: manifest::new_generation(),
            state: tokio::sync::Mutex::new(Known {
                files: None,
                // A term starts with a manifest of its own generation.
                changed: true,
                written: None,
            }),
        }
    }

    /// `f` was uploaded (None: a file whose stored size is unknown, so list again).
    pub async fn uploaded(&self, f: Option<FileInfo>) {
        let mut k = self.state.lock().await;
        match (f, &mut k.files) {
            (Some(f), Some(files)) => {
                files.insert(f);
            }
            _ => k.files = None,
        }
        k.changed = true;
    }

    /// Files were compacted or deleted: list again before the next manifest.
    pub async fn relist(&self) {
        let mut k = self.state.lock().await;
        k.files = None;
        k.changed = true;
    }

    /// Writes the manifest if something changed since the last one.
    pub async fn publish(&self, store: &Store) -> Result<()> {
        let mut k = self.state.lock().await;
        if !k.changed {
            return Ok(());
        }
        if !self.enabled {
            // A manifest left by an earlier term would hold readers at its TXID until they
            // next check by listing: remove it, once.
            if k.written.is_none() {
                store.delete(manifest::NAME).await?;
                k.written = Some(Vec::new());
            }
            return Ok(());
        }
        let files = match &k.files {
            Some(files) => files.iter().cloned().collect::<Vec<_>>(),
            None => {
                let listed = store.list_all().await?;
                k.files = Some(listed.iter().cloned().collect());
                listed
            }
        };
        let named = match plan(&files, None) {
            Ok(p) => p.files,
            Err(PlanProblem::Empty) => Vec::new(),
            Err(problem) => return Err(problem.into_error(store.url().to_string())),
        };
        let body = Manifest::new(&self.generation, store.layout(), named).encode();
        if k.written.as_ref() != Some(&body) {
            store.put(manifest::NAME, Bytes::from(body.clone())).await?;
            k.written = Some(body);
        }
        k.changed = false;
        Ok(())
    }
}
