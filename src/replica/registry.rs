//! One [`Replica`] per replica URL in the process: every connection that opens the same
//! URL shares its page index, page cache and poller.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Replica;
use crate::config::Config;
use crate::error::Result;
use crate::registry::Registry;

static REPLICAS: Registry<String, Replica> = Registry::new();

/// Serialises opens so that two connections opening one URL at once share one replica.
static OPENING: Mutex<()> = Mutex::new(());

/// The replica for `config.replica_url`, opened now if no connection has it open.
pub fn open(config: &Config) -> Result<Arc<Replica>> {
    let _opening = OPENING.lock();
    if let Some(r) = REPLICAS.get(config.replica_url.as_str()) {
        return Ok(r);
    }
    let replica = Replica::open(config)?;
    Ok(REPLICAS.insert_or_get(config.replica_url.clone(), &replica))
}
