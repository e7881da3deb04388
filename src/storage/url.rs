//! Replica URLs, as Litestream writes them:
//! `file:///abs/path`, `s3://bucket/prefix?endpoint=…&region=…&force-path-style=true`,
//! `gs://bucket/prefix`, `abs://[account@]container/prefix` (also `az://`).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::layout::Layout;
use crate::error::{Error, Result};

/// A parsed replica URL, turned into an object store and the root of the replica in it.
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub layout: Layout,
    /// For file:// replicas, the root folder on the local file system.
    pub local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Backend({}, root={}, {:?})",
            self.store, self.root, self.layout
        )
    }
}

/// How long one storage operation may keep retrying before it reports its cause.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub retry_for: Duration,
}

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::BadUrl {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

pub fn open(raw: &str, timeouts: Timeouts) -> Result<Backend> {
    let url = url::Url::parse(raw).map_err(|e| bad(raw, e.to_string()))?;
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let key_path = url.path().trim_matches('/').to_string();
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: timeouts.retry_for,
    };
    let client = ClientOptions::new()
        .with_connect_timeout(
            Duration::from_secs(5).min(timeouts.retry_for.max(Duration::from_millis(500))),
        )
        .with_timeout(Duration::from_secs(60));

    match url.scheme() {
        "file" => {
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(bad(
                    raw,
                    "a file URL needs an absolute path: file:///path/to/replica",
                ));
            }
            let path = url
                .to_file_path()
                .map_err(|_| bad(raw, "not a local path"))?;
            // Not canonicalised: the folder may not exist yet (open waits for files).
            let text = path
                .to_str()
                .ok_or_else(|| bad(raw, "the path is not UTF-8"))?;
            let root =
                Path::parse(text.trim_start_matches('/')).map_err(|e| bad(raw, e.to_string()))?;
            // `file://` or `file:///` would list the whole file system.
            if root.as_ref().is_empty() {
                return Err(bad(
                    raw,
                    "a file URL needs a folder: file:///path/to/replica",
                ));
            }
            Ok(Backend {
                store: Arc::new(object_store::local::LocalFileSystem::new()),
                root,
                layout: Layout::LtxDecimal,
                local_root: Some(path),
            })
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(raw, "missing bucket: s3://bucket/prefix"))?;
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client.clone());
            let endpoint = param("endpoint");
            if let Some(ep) = &endpoint {
                let ep = if ep.contains("://") {
                    ep.clone()
                } else {
                    format!("https://{ep}")
                };
                b = b
                    .with_endpoint(&ep)
                    .with_allow_http(ep.starts_with("http://"));
            }
            let region = param("region")
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_string());
            b = b.with_region(region);
            let path_style = param("force-path-style")
                .map(|v| truthy(&v))
                .unwrap_or(endpoint.is_some());
            b = b.with_virtual_hosted_style_request(!path_style);
            // Without credentials in the environment, a custom endpoint is read unsigned
            // rather than sending the SDK off to the instance-metadata service.
            if endpoint.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                b = b.with_skip_signature(true);
            }
            let store = b.build().map_err(|e| bad(raw, e.to_string()))?;
            Ok(Backend {
                store: Arc::new(store),
                root: Path::from(key_path),
                layout: Layout::HexLevels,
                local_root: None,
            })
        }
        "gs" | "gcs" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(raw, "missing bucket: gs://bucket/prefix"))?;
            let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map_err(|e| bad(raw, e.to_string()))?;
            Ok(Backend {
                store: Arc::new(store),
                root: Path::from(key_path),
                layout: Layout::LtxDecimal,
                local_root: None,
            })
        }
        "abs" | "az" => {
            // Litestream's form is abs://ACCOUNT@CONTAINER/PATH; the account may also come
            // from AZURE_STORAGE_ACCOUNT_NAME.
            let container = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(raw, "missing container: abs://account@container/prefix"))?;
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry)
                .with_client_options(client);
            if !url.username().is_empty() {
                b = b.with_account(url.username());
            }
            if let Some(ep) = param("endpoint") {
                b = b.with_endpoint(ep).with_allow_http(true);
            }
            let store = b.build().map_err(|e| bad(raw, e.to_string()))?;
            Ok(Backend {
                store: Arc::new(store),
                root: Path::from(key_path),
                layout: Layout::LtxDecimal,
                local_root: None,
            })
        }
        other => Err(bad(
            raw,
            format!("unsupported scheme {other:?} (expected file, s3, gs, abs or az)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        retry_for: Duration::from_secs(1),
    };

    #[test]
    fn file_urls() {
        let b = open("file:///tmp/replica", T).unwrap();
        assert_eq!(b.root.as_ref(), "tmp/replica");
        assert_eq!(b.layout, Layout::LtxDecimal);
        assert!(open("file://host/tmp", T).is_err());
        for root in ["file://", "file:///"] {
            match open(root, T) {
                Err(e) => assert!(e.to_string().contains("needs a folder"), "{e}"),
                Ok(_) => panic!("{root} was accepted"),
            }
        }
    }

    #[test]
    fn s3_urls() {
        let b = open(
            "s3://bucket/app/db?endpoint=http://127.0.0.1:9000&force-path-style=true",
            T,
        )
        .unwrap();
        assert_eq!(b.root.as_ref(), "app/db");
        assert_eq!(b.layout, Layout::HexLevels);
        assert!(open("s3:///nobucket", T).is_err());
    }

    #[test]
    fn bad_urls_name_the_url() {
        let e = open("ftp://x/y", T).unwrap_err();
        assert!(e.to_string().contains("ftp://x/y"), "{e}");
        assert!(open("not a url", T).is_err());
    }
}
