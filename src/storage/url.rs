//! Replica URLs, as Litestream writes them:
//! `file:///abs/path`, `s3://bucket/prefix?endpoint=…&region=…&force-path-style=true`,
//! `gs://bucket/prefix`, `abs://[account@]container/prefix` (also `az://`).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::layout::Layout;
use super::provider::{self, Provider};
use crate::error::{Error, Result};

/// A parsed replica URL, turned into an object store and the root of the replica in it.
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub layout: Layout,
    /// For file:// replicas, the root folder on the local file system.
    pub local_root: Option<std::path::PathBuf>,
    /// Attributes of every object written (an S3 storage class).
    pub put_attributes: object_store::Attributes,
    /// Parts of a multipart upload in flight, and their size.
    pub multipart_concurrency: usize,
    pub part_size: usize,
    /// The store lists its objects (not a plain HTTP server: its manifest names the files).
    pub lists: bool,
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

/// Server-side encryption of an S3 replica, with Litestream's words: `sse-customer-key`
/// (or `sse-customer-key-path`, a file holding it), `sse-customer-algorithm` (AES256) and
/// `sse-customer-key-md5` for SSE-C; `sse-kms-key-id` for SSE-KMS. They are taken out of the
/// replica URL when the configuration is read (`take_sse`), so that the key never travels
/// with the URL into stats, logs or error messages.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Sse {
    /// The SSE-C key, base64 (as S3 wants it).
    customer_key: Option<String>,
    kms_key_id: Option<String>,
}

impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sse")
            .field(
                "customer_key",
                &self.customer_key.as_ref().map(|_| "(secret)"),
            )
            .field("kms_key_id", &self.kms_key_id)
            .finish()
    }
}

const SSE_PARAMS: &[&str] = &[
    "sse-customer-key",
    "sse-customer-key-path",
    "sse-customer-algorithm",
    "sse-customer-key-md5",
    "sse-kms-key-id",
];

/// Splits the server-side encryption parameters off a replica URL: the URL without them, and
/// what they ask for. Errors name the parameter, never its value.
pub fn take_sse(raw: &str) -> Result<(String, Sse)> {
    let Ok(mut url) = url::Url::parse(raw) else {
        return Ok((raw.to_string(), Sse::default()));
    };
    type Pairs = Vec<(String, String)>;
    let (taken, kept): (Pairs, Pairs) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| SSE_PARAMS.contains(&k.as_str()));
    if taken.is_empty() {
        return Ok((raw.to_string(), Sse::default()));
    }
    let param = |name: &str| {
        taken
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let fail = |name: &str, reason: &str| Error::config(name, reason.to_string());
    if url.scheme() != "s3" {
        return Err(fail(
            &taken[0].0,
            "server-side encryption is for s3:// replicas",
        ));
    }
    let mut sse = Sse {
        customer_key: param("sse-customer-key"),
        kms_key_id: param("sse-kms-key-id").filter(|v| !v.is_empty()),
    };
    if let Some(path) = param("sse-customer-key-path") {
        let text = std::fs::read_to_string(path.trim()).map_err(|e| {
            fail(
                "sse-customer-key-path",
                &format!("cannot read {path:?}: {e}"),
            )
        })?;
        sse.customer_key = Some(text.trim().to_string());
    }
    match param("sse-customer-algorithm") {
        Some(a) if !a.eq_ignore_ascii_case("AES256") => {
            return Err(fail("sse-customer-algorithm", "only AES256 is defined"))
        }
        Some(_) if sse.customer_key.is_none() => {
            return Err(fail("sse-customer-algorithm", "needs sse-customer-key"))
        }
        _ => {}
    }
    if sse.customer_key.is_some() && sse.kms_key_id.is_some() {
        return Err(fail(
            "sse-kms-key-id",
            "SSE-C and SSE-KMS exclude each other",
        ));
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(&kept);
    }
    Ok((url.to_string(), sse))
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

/// Where a replica URL points, read and checked before any client is built: a pure
/// function of the URL and the environment (`parse`), so that every form is tested row by
/// row; `build` then makes the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `file:///path`: a folder on the local file system.
    File {
        path: std::path::PathBuf,
    },
    S3(S3Target),
    Gcs {
        bucket: String,
        prefix: String,
        /// `STORAGE_EMULATOR_HOST`, as Litestream and Google's SDKs read it: a GCS emulator
        /// at this base URL, without OAuth.
        emulator: Option<String>,
    },
    /// Litestream's form is `abs://ACCOUNT@CONTAINER/PATH`; the account may also come from
    /// AZURE_STORAGE_ACCOUNT_NAME.
    Azure {
        account: Option<String>,
        container: String,
        prefix: String,
        endpoint: Option<String>,
    },
    /// `http://` or `https://`: a replica served read-only by a static web server or CDN,
    /// read through its manifest (no listing) and ranged GETs.
    Http {
        base: String,
    },
}

/// An `s3://` replica, with Litestream's words for its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    pub prefix: String,
    /// An S3-compatible server (`endpoint=`, a bucket host such as
    /// `bucket.s3.REGION.backblazeb2.com`, or LITESTREAM_S3_ENDPOINT), with its scheme.
    pub endpoint: Option<String>,
    pub provider: Provider,
    pub region: String,
    /// Bucket in the path, not in the host name (`force-path-style`, `forcePathStyle`).
    pub path_style: bool,
    /// Requests are not signed: a custom endpoint without credentials in the environment
    /// is read as a public bucket rather than sending the SDK off to the instance-metadata
    /// service.
    pub unsigned: bool,
    /// `skip-verify`: TLS certificates are not checked (self-signed development servers).
    pub skip_verify: bool,
    /// `sign-payload`: false sends UNSIGNED-PAYLOAD instead of the body's SHA-256.
    pub sign_payload: Option<bool>,
    /// `storage-class`: the class of every object written (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
    /// `concurrency`: parts of a multipart upload in flight (else the provider's default).
    pub concurrency: usize,
    /// `part-size`: bytes per part of a multipart upload.
    pub part_size: usize,
}

/// The query parameters an `s3://` URL takes (Litestream's, in both spellings;
/// `require-content-md5` is accepted and checked but has no effect: object_store sends a
/// Content-MD5 where S3 demands one, and a SHA-256 of every signed payload).
const S3_PARAMS: &[&str] = &[
    "endpoint",
    "region",
    "force-path-style",
    "forcePathStyle",
    "skip-verify",
    "skipVerify",
    "sign-payload",
    "signPayload",
    "require-content-md5",
    "requireContentMD5",
    "storage-class",
    "storageClass",
    "concurrency",
    "part-size",
    "partSize",
];

/// Whether `name` is a query parameter of some replica URL: found among a database URI's own
/// parameters, it was meant for `replica_url` and lost to an unescaped `&`.
pub fn is_url_param(name: &str) -> bool {
    S3_PARAMS.contains(&name) || SSE_PARAMS.contains(&name)
}

/// Bytes per part of a multipart upload unless `part-size` says otherwise.
const DEFAULT_PART_SIZE: usize = 8 << 20;

/// Reads a replica URL. `env` looks up environment variables (a parameter for tests).
pub fn parse(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Target> {
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
    let prefix = url.path().trim_matches('/').to_string();
    let host = |missing: &str| {
        url.host_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad(raw, missing))
    };
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
            let text = path
                .to_str()
                .ok_or_else(|| bad(raw, "the path is not UTF-8"))?;
            // `file://` or `file:///` would list the whole file system.
            if text.trim_matches('/').is_empty() {
                return Err(bad(
                    raw,
                    "a file URL needs a folder: file:///path/to/replica",
                ));
            }
            Ok(Target::File { path })
        }
        "s3" => {
            known_params(raw, &query, S3_PARAMS)?;
            let hs = provider::host_style(url.host_str().unwrap_or(""), url.port());
            if hs.bucket.is_empty() {
                return Err(bad(raw, "missing bucket: s3://bucket/prefix"));
            }
            let flag = |names: &[&str]| -> Result<Option<bool>> {
                match names.iter().find_map(|n| param(n).map(|v| (n, v))) {
                    None => Ok(None),
                    Some((n, v)) => boolean(&v)
                        .map(Some)
                        .ok_or_else(|| bad(raw, format!("{n}={v:?} is not true or false"))),
                }
            };
            let number = |names: &[&str]| -> Result<Option<usize>> {
                match names.iter().find_map(|n| param(n).map(|v| (n, v))) {
                    None => Ok(None),
                    Some((n, v)) => match v.trim().parse::<usize>() {
                        Ok(k) if k > 0 => Ok(Some(k)),
                        _ => Err(bad(raw, format!("{n}={v:?} is not a positive number"))),
                    },
                }
            };
            let given_endpoint = param("endpoint")
                .or_else(|| {
                    hs.endpoint
                        .is_none()
                        .then(|| env("LITESTREAM_S3_ENDPOINT"))?
                })
                .filter(|e| !e.trim().is_empty())
                .map(|e| provider::with_scheme(e.trim()));
            let endpoint = given_endpoint.clone().or(hs.endpoint);
            let provider = Provider::of(endpoint.as_deref());
            let defaults = provider.defaults();
            let key = env("AWS_ACCESS_KEY_ID").or_else(|| env("LITESTREAM_ACCESS_KEY_ID"));
            let _ = flag(&["require-content-md5", "requireContentMD5"])?;
            Ok(Target::S3(S3Target {
                bucket: hs.bucket,
                prefix,
                region: param("region")
                    .or(hs.region)
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_string()),
                // A custom endpoint implies path style, as in Litestream.
                path_style: flag(&["force-path-style", "forcePathStyle"])?
                    .unwrap_or(given_endpoint.is_some() || defaults.path_style),
                unsigned: endpoint.is_some() && key.is_none(),
                endpoint,
                provider,
                skip_verify: flag(&["skip-verify", "skipVerify"])?.unwrap_or(false),
                sign_payload: flag(&["sign-payload", "signPayload"])?,
                storage_class: param("storage-class")
                    .or_else(|| param("storageClass"))
                    .filter(|c| !c.is_empty()),
                concurrency: number(&["concurrency"])?.unwrap_or(defaults.multipart_concurrency),
                part_size: number(&["part-size", "partSize"])?
                    .unwrap_or(DEFAULT_PART_SIZE)
                    .clamp(5 << 20, 5 << 30),
            }))
        }
        "gs" | "gcs" => known_params(raw, &query, &[]).and(Ok(Target::Gcs {
            bucket: host("missing bucket: gs://bucket/prefix")?,
            prefix,
            emulator: env("STORAGE_EMULATOR_HOST")
                .filter(|h| !h.trim().is_empty())
                .map(|h| match h.trim() {
                    h if h.contains("://") => h.to_string(),
                    h => format!("http://{h}"),
                }),
        })),
        "abs" | "az" => known_params(raw, &query, &["endpoint"]).and(Ok(Target::Azure {
            account: Some(url.username().to_string()).filter(|a| !a.is_empty()),
            container: host("missing container: abs://account@container/prefix")?,
            prefix,
            endpoint: param("endpoint"),
        })),
        "http" | "https" => known_params(raw, &query, &[]).and(Ok(Target::Http {
            base: format!(
                "{}://{}{}",
                url.scheme(),
                host("missing host")?,
                match url.port() {
                    Some(p) => format!(":{p}"),
                    None => String::new(),
                }
            ) + &format!("/{prefix}"),
        })),
        other => Err(bad(
            raw,
            format!("unsupported scheme {other:?} (expected file, s3, gs, abs, az, http or https)"),
        )),
    }
}

/// Refuses query parameters that `raw`'s scheme does not take, naming the first.
fn known_params(raw: &str, query: &[(String, String)], known: &[&str]) -> Result<()> {
    match query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some((k, _)) => Err(bad(
            raw,
            format!(
                "unknown parameter {k:?} in the replica URL ({}); a parameter of the database belongs outside replica_url (inside it, '&' must be written %26)",
                match known {
                    [] => "this scheme takes none".to_string(),
                    _ => format!("it takes {}", known.join(", ")),
                }
            ),
        )),
    }
}

fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" | "on" => Some(true),
        "false" | "0" | "f" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Keys from an AWS shared credentials file.
#[derive(PartialEq)]
struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, (secret))", self.key_id)
    }
}

/// The profile `AWS_PROFILE` (else `default`) of the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), if it has keys.
fn shared_credentials() -> Option<Credentials> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
        })?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    profile_credentials(&text, &profile)
}

/// The keys of `profile` in the text of a credentials file (INI: `[profile]`, then
/// `aws_access_key_id = …`, `aws_secret_access_key = …`, `aws_session_token = …`).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = None;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if section.as_deref() != Some(profile) {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => key_id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some(Credentials {
        key_id: key_id?,
        secret: secret?,
        token,
    })
}

/// Opens the replica at `raw` (see `parse`) with the process's environment.
pub fn open(raw: &str, timeouts: Timeouts, sse: &Sse) -> Result<Backend> {
    build(parse(raw, &|k| std::env::var(k).ok())?, raw, timeouts, sse)
}

/// Builds the client of a parsed replica URL: retries bounded by `timeouts`, S3's
/// server-side encryption from `sse`.
fn build(target: Target, raw: &str, timeouts: Timeouts, sse: &Sse) -> Result<Backend> {
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
    let remote = |store: Arc<dyn ObjectStore>, prefix: String, layout| Backend {
        store,
        root: Path::from(prefix),
        layout,
        local_root: None,
        put_attributes: Default::default(),
        multipart_concurrency: 4,
        part_size: DEFAULT_PART_SIZE,
        lists: true,
    };
    let built = |e: object_store::Error| bad(raw, e.to_string());
    match target {
        Target::File { path } => {
            // Not canonicalised: the folder may not exist yet (open waits for files).
            let text = path.to_string_lossy();
            let root =
                Path::parse(text.trim_start_matches('/')).map_err(|e| bad(raw, e.to_string()))?;
            Ok(Backend {
                store: Arc::new(object_store::local::LocalFileSystem::new()),
                root,
                layout: Layout::LtxDecimal,
                local_root: Some(path),
                put_attributes: Default::default(),
                multipart_concurrency: 4,
                part_size: DEFAULT_PART_SIZE,
                lists: true,
            })
        }
        Target::S3(t) => {
            let mut client = client.with_allow_invalid_certificates(t.skip_verify);
            if t.provider.defaults().consistent_header {
                let mut headers = object_store::HeaderMap::new();
                headers.insert(
                    "x-tigris-consistent",
                    object_store::HeaderValue::from_static("true"),
                );
                client = client.with_default_headers(headers);
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&t.bucket)
                .with_retry(retry)
                .with_client_options(client)
                .with_region(&t.region)
                .with_virtual_hosted_style_request(!t.path_style);
            let mut unsigned = t.unsigned;
            // Litestream's credentials, where AWS's own are not set; else the shared
            // credentials file's profile (AWS_PROFILE, or "default"), as the AWS CLI reads it.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                if let Ok(id) = std::env::var("LITESTREAM_ACCESS_KEY_ID") {
                    b = b.with_access_key_id(id);
                    if let Ok(secret) = std::env::var("LITESTREAM_SECRET_ACCESS_KEY") {
                        b = b.with_secret_access_key(secret);
                    }
                } else if let Some(creds) = shared_credentials() {
                    b = b
                        .with_access_key_id(creds.key_id)
                        .with_secret_access_key(creds.secret);
                    if let Some(token) = creds.token {
                        b = b.with_token(token);
                    }
                    unsigned = false;
                }
            }
            b = b.with_skip_signature(unsigned);
            if let Some(ep) = &t.endpoint {
                b = b
                    .with_endpoint(ep)
                    .with_allow_http(ep.starts_with("http://"));
            }
            if let Some(sign) = t.sign_payload {
                b = b.with_unsigned_payload(!sign);
            }
            if let Some(key) = &sse.customer_key {
                b = b.with_ssec_encryption(key);
            }
            if let Some(id) = &sse.kms_key_id {
                b = b.with_sse_kms_encryption(id);
            }
            let store = b.build().map_err(built)?;
            let mut backend = remote(Arc::new(store), t.prefix, Layout::HexLevels);
            if let Some(class) = t.storage_class {
                backend
                    .put_attributes
                    .insert(object_store::Attribute::StorageClass, class.into());
            }
            backend.multipart_concurrency = t.concurrency;
            backend.part_size = t.part_size;
            Ok(backend)
        }
        Target::Gcs {
            bucket,
            prefix,
            emulator,
        } => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry);
            if let Some(base) = &emulator {
                // Emulators take any token; asking Google's metadata service for one would
                // fail off Google's cloud.
                b = b.with_base_url(base).with_bearer_token("emulator");
            }
            let client = client.with_allow_http(emulator.is_some());
            let store = b.with_client_options(client).build().map_err(built)?;
            Ok(remote(Arc::new(store), prefix, Layout::LtxDecimal))
        }
        Target::Azure {
            account,
            container,
            prefix,
            endpoint,
        } => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry)
                .with_client_options(client);
            if let Some(account) = account {
                b = b.with_account(account);
            }
            // Litestream's name for the key, beside Azure's own (AZURE_STORAGE_ACCOUNT_KEY).
            if let Ok(key) = std::env::var("LITESTREAM_AZURE_ACCOUNT_KEY") {
                b = b.with_access_key(key);
            }
            if let Some(ep) = endpoint {
                b = b.with_endpoint(ep).with_allow_http(true);
            }
            let store = b.build().map_err(built)?;
            Ok(remote(Arc::new(store), prefix, Layout::LtxDecimal))
        }
        Target::Http { base } => {
            let store = object_store::http::HttpBuilder::new()
                .with_url(base)
                .with_retry(retry)
                .with_client_options(client.with_allow_http(true))
                .build()
                .map_err(built)?;
            let mut backend = remote(Arc::new(store), String::new(), Layout::LtxDecimal);
            backend.lists = false;
            Ok(backend)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        retry_for: Duration::from_secs(1),
    };

    /// Every URL form, parsed row by row with a given environment.
    #[test]
    fn the_url_forms_row_by_row() {
        let none = |_: &str| None;
        let keys = |k: &str| {
            matches!(k, "AWS_ACCESS_KEY_ID" | "AWS_REGION").then(|| "eu-west-3".to_string())
        };
        fn s3(
            b: &str,
            prefix: &str,
            ep: Option<&str>,
            region: &str,
            style: bool,
            unsigned: bool,
        ) -> Target {
            Target::S3(S3Target {
                bucket: b.into(),
                prefix: prefix.into(),
                endpoint: ep.map(Into::into),
                provider: Provider::of(ep),
                region: region.into(),
                path_style: style,
                unsigned,
                skip_verify: false,
                sign_payload: None,
                storage_class: None,
                concurrency: Provider::of(ep).defaults().multipart_concurrency,
                part_size: DEFAULT_PART_SIZE,
            })
        }
        type Env<'a> = &'a dyn Fn(&str) -> Option<String>;
        let rows: Vec<(&str, Env, Target)> = vec![
            (
                "file:///tmp/r",
                &none,
                Target::File {
                    path: "/tmp/r".into(),
                },
            ),
            (
                "s3://b/app/db",
                &none,
                s3("b", "app/db", None, "us-east-1", false, false),
            ),
            (
                "s3://b/app?region=ap-south-1",
                &keys,
                s3("b", "app", None, "ap-south-1", false, false),
            ),
            (
                "s3://b/app",
                &keys,
                s3("b", "app", None, "eu-west-3", false, false),
            ),
            // A custom endpoint implies path style, and no keys an unsigned client.
            (
                "s3://b/app?endpoint=127.0.0.1:9000",
                &none,
                s3(
                    "b",
                    "app",
                    Some("http://127.0.0.1:9000"),
                    "us-east-1",
                    true,
                    true,
                ),
            ),
            (
                "s3://b/app?endpoint=http://h:9&force-path-style=false",
                &keys,
                s3("b", "app", Some("http://h:9"), "eu-west-3", false, false),
            ),
            (
                "gs://bucket/p/q/",
                &none,
                Target::Gcs {
                    bucket: "bucket".into(),
                    prefix: "p/q".into(),
                    emulator: None,
                },
            ),
            (
                "abs://acct@box/p?endpoint=http://127.0.0.1:10000/acct",
                &none,
                Target::Azure {
                    account: Some("acct".into()),
                    container: "box".into(),
                    prefix: "p".into(),
                    endpoint: Some("http://127.0.0.1:10000/acct".into()),
                },
            ),
            (
                "az://box/p",
                &none,
                Target::Azure {
                    account: None,
                    container: "box".into(),
                    prefix: "p".into(),
                    endpoint: None,
                },
            ),
        ];
        for (raw, env, want) in rows {
            assert_eq!(parse(raw, env).unwrap(), want, "{raw}");
        }
        for (raw, says) in [
            ("file://host/tmp", "absolute path"),
            ("file:///", "needs a folder"),
            ("s3:///p", "missing bucket"),
            ("gs:///p", "missing bucket"),
            ("abs:///p", "missing container"),
            ("ftp://x/y", "unsupported scheme"),
        ] {
            let e = parse(raw, &none).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(raw), "{raw}: {e}");
        }
    }

    /// Litestream's words for S3, as its users write them.
    #[test]
    fn litestream_s3_words() {
        let s3 = |raw: &str, env: &dyn Fn(&str) -> Option<String>| match parse(raw, env) {
            Ok(Target::S3(t)) => t,
            other => panic!("{raw}: {other:?}"),
        };
        let none = |_: &str| None;
        // Buckets named with their provider's host.
        let t = s3("s3://b.s3.us-west-002.backblazeb2.com/app", &none);
        assert_eq!((t.bucket.as_str(), t.region.as_str()), ("b", "us-west-002"));
        assert_eq!(
            t.endpoint.as_deref(),
            Some("https://s3.us-west-002.backblazeb2.com")
        );
        assert_eq!((t.provider, t.path_style), (Provider::Backblaze, true));
        let t = s3("s3://b.localhost:9000/app", &none);
        assert_eq!(t.endpoint.as_deref(), Some("http://localhost:9000"));
        assert!(t.path_style && t.unsigned);
        let t = s3("s3://b.s3.eu-west-3.amazonaws.com/app", &none);
        assert_eq!((t.region.as_str(), t.endpoint.clone()), ("eu-west-3", None));
        // LITESTREAM_S3_ENDPOINT implies path style; the URL's endpoint wins over it.
        let env = |k: &str| (k == "LITESTREAM_S3_ENDPOINT").then(|| "minio.lan:9000".into());
        let t = s3("s3://b/app", &env);
        assert_eq!(t.endpoint.as_deref(), Some("https://minio.lan:9000"));
        assert!(t.path_style);
        let t = s3("s3://b/app?endpoint=http://h:1&forcePathStyle=false", &env);
        assert_eq!(
            (t.endpoint.as_deref(), t.path_style),
            (Some("http://h:1"), false)
        );
        // Litestream's credentials count as credentials: the client signs.
        let env = |k: &str| (k == "LITESTREAM_ACCESS_KEY_ID").then(|| "id".into());
        assert!(!s3("s3://b/app?endpoint=http://h:1", &env).unsigned);
        // The other words, in both spellings.
        let t = s3(
            "s3://b/app?skip-verify=true&signPayload=false&storage-class=STANDARD_IA&concurrency=3&part-size=16777216&require-content-md5=true",
            &none,
        );
        assert!(t.skip_verify);
        assert_eq!(
            (t.sign_payload, t.storage_class.as_deref()),
            (Some(false), Some("STANDARD_IA"))
        );
        assert_eq!((t.concurrency, t.part_size), (3, 16 << 20));
        // Provider defaults: R2's multipart concurrency, Tigris's header (in `build`).
        let t = s3(
            "s3://b/app?endpoint=https://acc.r2.cloudflarestorage.com",
            &none,
        );
        assert_eq!((t.provider, t.concurrency), (Provider::CloudflareR2, 2));
        // Unknown parameters and bad values are errors naming them.
        for (raw, says) in [
            ("s3://b/app?regoin=x", "unknown parameter \"regoin\""),
            ("s3://b/app?poll_interval=1s", "%26"),
            ("s3://b/app?skip-verify=maybe", "skip-verify"),
            ("s3://b/app?concurrency=0", "concurrency"),
            ("gs://b/app?endpoint=x", "takes none"),
            ("abs://a@c/app?region=x", "it takes endpoint"),
            ("s3://localhost:9000/app", "missing bucket"),
        ] {
            let e = parse(raw, &none).unwrap_err().to_string();
            assert!(e.contains(says), "{raw}: {e}");
        }
    }

    #[test]
    fn shared_credentials_profiles() {
        let text = "# keys\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n[work]\n aws_access_key_id = AKIA2 \naws_secret_access_key = s2\naws_session_token = t2\n[empty]\nregion = x\n";
        let c = profile_credentials(text, "default").unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.secret.as_str(), c.token),
            ("AKIA1", "s1", None)
        );
        let c = profile_credentials(text, "work").unwrap();
        assert_eq!(
            (c.key_id.as_str(), c.token.as_deref()),
            ("AKIA2", Some("t2"))
        );
        assert_eq!(profile_credentials(text, "empty"), None);
        assert_eq!(profile_credentials(text, "missing"), None);
        assert!(!format!("{c:?}").contains("s2"));
    }

    #[test]
    fn file_urls() {
        let b = open("file:///tmp/replica", T, &Sse::default()).unwrap();
        assert_eq!(b.root.as_ref(), "tmp/replica");
        assert_eq!(b.layout, Layout::LtxDecimal);
        assert!(open("file://host/tmp", T, &Sse::default()).is_err());
        for root in ["file://", "file:///"] {
            match open(root, T, &Sse::default()) {
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
            &Sse::default(),
        )
        .unwrap();
        assert_eq!(b.root.as_ref(), "app/db");
        assert_eq!(b.layout, Layout::HexLevels);
        assert!(open("s3:///nobucket", T, &Sse::default()).is_err());
    }

    #[test]
    fn server_side_encryption_leaves_the_url_and_is_checked() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64
        let (url, sse) = take_sse(&format!(
            "s3://b/p?endpoint=http://h:9&sse-customer-key={key}&sse-customer-algorithm=AES256"
        ))
        .unwrap();
        assert_eq!(url, "s3://b/p?endpoint=http%3A%2F%2Fh%3A9");
        assert_eq!(sse.customer_key.as_deref(), Some(key));
        assert!(!format!("{sse:?}").contains(key));
        open(&url, T, &sse).unwrap();
        let (url, sse) = take_sse("s3://b/p?sse-kms-key-id=alias/x").unwrap();
        assert_eq!(
            (url.as_str(), sse.kms_key_id.as_deref()),
            ("s3://b/p", Some("alias/x"))
        );
        for (bad, words) in [
            (
                "s3://b/p?sse-customer-key=k&sse-customer-algorithm=DES",
                "AES256",
            ),
            (
                "s3://b/p?sse-customer-algorithm=AES256",
                "needs sse-customer-key",
            ),
            ("file:///r?sse-kms-key-id=x", "s3://"),
            ("s3://b/p?sse-customer-key=k&sse-kms-key-id=x", "exclude"),
        ] {
            let e = take_sse(bad).unwrap_err().to_string();
            assert!(e.contains(words), "{bad}: {e}");
        }
        let e = take_sse("s3://b/p?sse-customer-key=not-base64!")
            .and_then(|(u, s)| open(&u, T, &s))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("not-base64!"), "{e}");
    }

    #[test]
    fn bad_urls_name_the_url() {
        let e = open("ftp://x/y", T, &Sse::default()).unwrap_err();
        assert!(e.to_string().contains("ftp://x/y"), "{e}");
        assert!(open("not a url", T, &Sse::default()).is_err());
    }
}
