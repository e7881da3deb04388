//! The one background tokio runtime of the process, shared by every replica.
//!
//! SQLite calls the VFS from the application's threads, which may themselves be inside
//! some other async runtime. `block_on` therefore never enters our runtime from the caller's
//! thread: it spawns the future onto our workers and waits on a plain channel.

use std::future::Future;
use std::sync::OnceLock;

use crate::error::{Error, Result};

static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();

pub fn handle() -> Result<tokio::runtime::Handle> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("litestream")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(Error::Internal(format!(
            "cannot start the tokio runtime: {e}"
        ))),
    }
}

/// Runs `fut` on the background runtime and waits for it from any thread.
pub fn block_on<F, T>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| Error::Internal("a storage task ended without an answer".into()))?
}
