//! The shared cache store (`--cache-store s3://BUCKET/PREFIX`): a second
//! level under the local cache dir, on S3-compatible object storage, so
//! proxlet instances with cache dirs of their own share what any of them
//! fetched. The bucket reads like the dir: `PREFIX/<cache path>` holds a
//! body's plain bytes, and its sidecar (the metadata) is an object of its
//! own at its own cache path.
//!
//! A file the cache stored goes up once it is complete (`upload`); a miss
//! with nothing on disk looks in the store before the origin (`fetch`). Hits
//! never touch the store, a slow or dead one costs a miss `LOOKUP_LIMIT` at
//! most and is then left alone for a while (`health`), and without
//! `--cache-store` none of this runs.

mod fetch;
mod health;
mod http;
mod local;
mod names;
mod upload;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use object_store::{
    aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut},
    BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig,
};

pub use fetch::LOOKUP_LIMIT;
pub use names::StoreUrl;

use crate::{
    error::{Error, Result},
    flow::FillLease,
    proxy::grant::GrantedPath,
};

/// How long a failing store is left alone before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The store of this process, when `--cache-store` is set.
static SHARED: OnceLock<Arc<SharedStore>> = OnceLock::new();

pub struct SharedStore {
    objects: Arc<dyn ObjectStore>,
    url: StoreUrl,
    /// The local cache dir (`--cache-dir`), as configured and resolved.
    cache_dir: PathBuf,
    canonical_dir: Option<PathBuf>,
    health: health::Health,
    uploads: tokio::sync::mpsc::Sender<upload::Job>,
}

/// Connects the store at `url` under `cache_dir` and starts its uploads.
/// Endpoint, region and credentials come from the `AWS_*` environment;
/// TLS trusts the system store and `extra_cas` (`--upstream-ca`). Runs
/// inside the runtime.
pub fn start(url: &StoreUrl, cache_dir: &Path, extra_cas: &[PathBuf]) -> Result<()> {
    let invalid = |reason: String| Error::InvalidOption {
        option: "--cache-store",
        value: url.to_string(),
        reason,
    };
    let builder = AmazonS3Builder::from_env();
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let allow_http = builder
        .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(endpoint) = endpoint.as_deref().filter(|e| e.starts_with("http://")) {
        if !allow_http {
            return Err(invalid(format!(
                "the endpoint {endpoint} (AWS_ENDPOINT_URL) is plain HTTP: set AWS_ALLOW_HTTP=true to use it"
            )));
        }
    }
    let tls = crate::tls::client_config(extra_cas, false)?;
    let objects = builder
        .with_bucket_name(url.bucket())
        .with_http_connector(http::Connector::new(tls))
        // Create-only puts are what keeps two fillers apart.
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        // Bounded: a lookup gets LOOKUP_LIMIT in all, retries included.
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(4),
        })
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::InvalidOption {
        option: "--cache-dir",
        value: cache_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let store = SharedStore::new(Arc::new(objects), url.clone(), cache_dir);
    tracing::info!(
        "shared cache store {url} at {} ({}), under the local cache dir {}",
        endpoint.as_deref().unwrap_or("AWS S3"),
        store_region(),
        cache_dir.display()
    );
    let _ = SHARED.set(store);
    Ok(())
}

fn store_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into())
}

/// A miss of a plugin holding the cache dir (`dirs`): brings what the
/// shared store has for `key` into the dir. Whether it did; then the plugin
/// is asked again.
pub async fn fill(dirs: &[(String, PathBuf)], key: &str, lease: &FillLease) -> bool {
    match SHARED.get() {
        Some(store) if dirs.iter().any(|(_, dir)| store.is_cache_dir(dir)) => {
            store.fetch(key, Some(lease)).await
        }
        _ => false,
    }
}

/// What to run once a plugin's store into `dest` (with `sidecar`) is in
/// place: its upload, for a file in the cache dir that was not fetched
/// with credentials. `None` without `--cache-store`.
pub fn upload_when_stored(
    dest: &GrantedPath,
    sidecar: Option<&GrantedPath>,
    private: bool,
) -> Option<Box<dyn FnOnce() + Send>> {
    let store = SHARED.get()?;
    if private || !store.is_cache_dir(dest.grant_dir()) {
        return None;
    }
    let job = upload::Job {
        body: dest.rel().to_str()?.to_owned(),
        sidecar: match sidecar {
            Some(sidecar) if sidecar.grant_dir() == dest.grant_dir() => {
                Some(sidecar.rel().to_str()?.to_owned())
            }
            Some(_) => return None,
            None => None,
        },
    };
    let store = store.clone();
    Some(Box::new(move || store.queue(job)))
}

impl SharedStore {
    /// A store over `objects`, its uploads running on the current runtime.
    fn new(objects: Arc<dyn ObjectStore>, url: StoreUrl, cache_dir: &Path) -> Arc<Self> {
        let (uploads, jobs) = tokio::sync::mpsc::channel(upload::QUEUE);
        let store = Arc::new(Self {
            objects,
            health: health::Health::new(url.to_string(), RETRY_AFTER),
            url,
            cache_dir: cache_dir.to_owned(),
            canonical_dir: std::fs::canonicalize(cache_dir).ok(),
            uploads,
        });
        tokio::spawn(upload::run(store.clone(), jobs));
        store
    }

    /// Whether `dir` (a plugin's grant) is the cache dir.
    fn is_cache_dir(&self, dir: &Path) -> bool {
        dir == self.cache_dir
            || self.canonical_dir.as_ref().is_some_and(|canonical| {
                std::fs::canonicalize(dir).ok().as_ref() == Some(canonical)
            })
    }
}

#[cfg(test)]
mod tests;
