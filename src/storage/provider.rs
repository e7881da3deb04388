//! S3-compatible providers, recognised as Litestream recognises them: from the bucket's host
//! name in the URL (`s3://bucket.s3.us-west-002.backblazeb2.com/app`) or from the endpoint's
//! host, and what each needs that plain S3 does not.
//!
//! object_store always signs payloads (Litestream's `sign-payload` default differs per
//! provider for the AWS SDK's sake), so the defaults left here are path-style requests, the
//! Tigris consistency header and a lower multipart concurrency on R2.

/// An S3 service, by its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AWS itself (no endpoint).
    Aws,
    Tigris,
    CloudflareR2,
    Backblaze,
    DigitalOcean,
    Filebase,
    Scaleway,
    Hetzner,
    Supabase,
    /// A server at `host:port` that is not one of the above: MinIO, moto, Garage, ...
    SelfHosted,
    /// Any other endpoint.
    Other,
}

/// What a provider needs by default. Explicit URL parameters win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Bucket in the path rather than in the host name.
    pub path_style: bool,
    /// `X-Tigris-Consistent: true` on every request: reads see the newest write.
    pub consistent_header: bool,
    /// Parts of a multipart upload in flight at once.
    pub multipart_concurrency: usize,
}

impl Provider {
    /// The provider behind `endpoint` (a URL or a bare host); None: AWS.
    pub fn of(endpoint: Option<&str>) -> Provider {
        let Some(endpoint) = endpoint else {
            return Provider::Aws;
        };
        let host = endpoint_host(endpoint);
        let ends = |suffix: &str| host.ends_with(suffix);
        match host.as_str() {
            "fly.storage.tigris.dev" | "t3.storage.dev" => Provider::Tigris,
            "s3.filebase.com" => Provider::Filebase,
            _ if ends(".r2.cloudflarestorage.com") => Provider::CloudflareR2,
            _ if ends(".backblazeb2.com") => Provider::Backblaze,
            _ if ends(".digitaloceanspaces.com") => Provider::DigitalOcean,
            _ if ends(".scw.cloud") => Provider::Scaleway,
            _ if ends(".your-objectstorage.com") => Provider::Hetzner,
            _ if ends(".supabase.co") => Provider::Supabase,
            _ if ends(".amazonaws.com") => Provider::Aws,
            _ if host.contains(':') => Provider::SelfHosted,
            _ => Provider::Other,
        }
    }

    pub fn defaults(self) -> Defaults {
        use Provider::*;
        Defaults {
            path_style: matches!(self, Filebase | Backblaze | SelfHosted | Supabase),
            consistent_header: self == Tigris,
            // R2 fails multipart uploads with many parts in flight (Litestream uses 2).
            multipart_concurrency: if self == CloudflareR2 { 2 } else { 4 },
        }
    }
}

/// The lower-cased `host[:port]` of an endpoint given as a URL or a bare host.
fn endpoint_host(endpoint: &str) -> String {
    let e = endpoint.trim().to_ascii_lowercase();
    let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_string()
}

/// An endpoint with its scheme: as given, or http for a local or private address (a
/// development server), https for anything else, as Litestream chooses.
pub fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let host = endpoint_host(endpoint);
    let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    let private = |ip: std::net::Ipv4Addr| ip.is_loopback() || ip.is_private();
    let local = name == "localhost"
        || name.ends_with(".localhost")
        || name.parse().is_ok_and(private)
        || name == "[::1]";
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{endpoint}")
}

/// A bucket named with its provider's host, as Litestream reads `s3://` URLs: the bucket,
/// and the region and endpoint the host implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStyle {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// Reads the host of an `s3://` URL (`port` its port, if any): `bucket.s3.REGION.amazonaws.com`,
/// `bucket.REGION.digitaloceanspaces.com`, `bucket.s3.REGION.backblazeb2.com`,
/// `bucket.s3.filebase.com`, `bucket.s3.REGION.scw.cloud`, `bucket.HOST:PORT` (a local
/// server, over http; no bucket in `HOST:PORT` alone); any other host is the bucket's name.
pub fn host_style(host: &str, port: Option<u16>) -> HostStyle {
    let plain = |bucket: &str| HostStyle {
        bucket: bucket.to_string(),
        region: None,
        endpoint: None,
    };
    if let Some(port) = port {
        return match host.split_once('.') {
            Some((bucket, server)) => HostStyle {
                bucket: bucket.to_string(),
                region: None,
                endpoint: Some(format!("http://{server}:{port}")),
            },
            // A server but no bucket: the caller reports the missing bucket.
            None => HostStyle {
                bucket: String::new(),
                region: None,
                endpoint: Some(format!("http://{host}:{port}")),
            },
        };
    }
    let labels: Vec<&str> = host.split('.').collect();
    let n = labels.len();
    let tail = |k: usize| labels[n.saturating_sub(k)..].join(".");
    let bucket_before = |k: usize| (n > k).then(|| labels[..n - k].join("."));
    let with = |bucket: Option<String>, region: Option<&str>, endpoint: Option<String>| {
        bucket.map(|bucket| HostStyle {
            bucket,
            region: region.map(str::to_string),
            endpoint,
        })
    };
    let found = if tail(2) == "amazonaws.com" {
        // bucket.s3.amazonaws.com or bucket.s3.REGION.amazonaws.com
        match labels.iter().rposition(|l| *l == "s3") {
            Some(i) if i > 0 && n - i == 3 => with(Some(labels[..i].join(".")), None, None),
            Some(i) if i > 0 && n - i == 4 => {
                with(Some(labels[..i].join(".")), Some(labels[i + 1]), None)
            }
            _ => None,
        }
    } else if tail(2) == "digitaloceanspaces.com" && n >= 4 {
        let region = labels[n - 3];
        let endpoint = format!("https://{region}.digitaloceanspaces.com");
        with(bucket_before(3), Some(region), Some(endpoint))
    } else if tail(2) == "backblazeb2.com" && n >= 5 && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        let endpoint = format!("https://s3.{region}.backblazeb2.com");
        with(bucket_before(4), Some(region), Some(endpoint))
    } else if tail(3) == "s3.filebase.com" {
        with(
            bucket_before(3),
            None,
            Some("https://s3.filebase.com".into()),
        )
    } else if tail(2) == "scw.cloud" && n >= 5 && labels[n - 4] == "s3" {
        let region = labels[n - 3];
        let endpoint = format!("https://s3.{region}.scw.cloud");
        with(bucket_before(4), Some(region), Some(endpoint))
    } else {
        None
    };
    found.unwrap_or_else(|| plain(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_by_endpoint() {
        for (endpoint, provider) in [
            (None, Provider::Aws),
            (Some("https://fly.storage.tigris.dev"), Provider::Tigris),
            (Some("t3.storage.dev"), Provider::Tigris),
            (
                Some("https://acc.r2.cloudflarestorage.com"),
                Provider::CloudflareR2,
            ),
            (
                Some("https://s3.us-west-002.backblazeb2.com"),
                Provider::Backblaze,
            ),
            (
                Some("https://nyc3.digitaloceanspaces.com"),
                Provider::DigitalOcean,
            ),
            (Some("https://s3.filebase.com"), Provider::Filebase),
            (Some("s3.fr-par.scw.cloud"), Provider::Scaleway),
            (
                Some("https://fsn1.your-objectstorage.com"),
                Provider::Hetzner,
            ),
            (
                Some("https://x.supabase.co/storage/v1/s3"),
                Provider::Supabase,
            ),
            (Some("http://127.0.0.1:9000"), Provider::SelfHosted),
            (Some("https://s3.eu-west-3.amazonaws.com"), Provider::Aws),
            (Some("https://storage.example.com"), Provider::Other),
        ] {
            assert_eq!(Provider::of(endpoint), provider, "{endpoint:?}");
        }
        let d = Provider::CloudflareR2.defaults();
        assert_eq!((d.multipart_concurrency, d.path_style), (2, false));
        assert!(Provider::Tigris.defaults().consistent_header);
        assert!(Provider::SelfHosted.defaults().path_style);
        assert!(!Provider::Aws.defaults().path_style);
    }

    #[test]
    fn endpoint_schemes() {
        assert_eq!(with_scheme("localhost:9000"), "http://localhost:9000");
        assert_eq!(with_scheme("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(with_scheme("192.168.1.5:9000"), "http://192.168.1.5:9000");
        assert_eq!(with_scheme("s3.example.com"), "https://s3.example.com");
        assert_eq!(with_scheme("http://h:1"), "http://h:1");
    }

    #[test]
    fn bucket_hosts_as_litestream_reads_them() {
        let hs = |b: &str, r: Option<&str>, e: Option<&str>| HostStyle {
            bucket: b.into(),
            region: r.map(Into::into),
            endpoint: e.map(Into::into),
        };
        for (host, port, want) in [
            ("bucket", None, hs("bucket", None, None)),
            ("my.bucket", None, hs("my.bucket", None, None)),
            ("b.s3.amazonaws.com", None, hs("b", None, None)),
            (
                "b.s3.eu-west-3.amazonaws.com",
                None,
                hs("b", Some("eu-west-3"), None),
            ),
            (
                "b.nyc3.digitaloceanspaces.com",
                None,
                hs(
                    "b",
                    Some("nyc3"),
                    Some("https://nyc3.digitaloceanspaces.com"),
                ),
            ),
            (
                "b.s3.us-west-002.backblazeb2.com",
                None,
                hs(
                    "b",
                    Some("us-west-002"),
                    Some("https://s3.us-west-002.backblazeb2.com"),
                ),
            ),
            (
                "b.s3.filebase.com",
                None,
                hs("b", None, Some("https://s3.filebase.com")),
            ),
            (
                "b.s3.fr-par.scw.cloud",
                None,
                hs("b", Some("fr-par"), Some("https://s3.fr-par.scw.cloud")),
            ),
            (
                "b.localhost",
                Some(9000),
                hs("b", None, Some("http://localhost:9000")),
            ),
            (
                "localhost",
                Some(9000),
                hs("", None, Some("http://localhost:9000")),
            ),
        ] {
            assert_eq!(host_style(host, port), want, "{host}");
        }
    }
}
