//! One [`Replica`] per replica URL in the process: every connection that opens the same
//! URL shares its page index, page cache and poller.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Replica;
use crate::config::Config;
use crate::error::Result;

static REPLICAS: Mutex<Option<HashMap<String, Weak<Replica>>>> = Mutex::new(None);

/// Serialises opens so that two connections opening one URL at once share one replica.
static OPENING: Mutex<()> = Mutex::new(());

/// The replica for `config.replica_url`, opened now if no connection has it open.
pub fn open(config: &Config) -> Result<Arc<Replica>> {
    let _opening = OPENING.lock();
    if let Some(r) = lookup(&config.replica_url) {
        return Ok(r);
    }
    let replica = Replica::open(config)?;
    REPLICAS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(config.replica_url.clone(), Arc::downgrade(&replica));
    Ok(replica)
}

fn lookup(url: &str) -> Option<Arc<Replica>> {
    let mut map = REPLICAS.lock();
    let map = map.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    map.get(url).and_then(Weak::upgrade)
}
