//! A miss looks in the shared store before the origin: the fill key's
//! sidecar names the body it goes with, both are checked and written into
//! the cache dir (sidecar first, body last), and the plugin asked again
//! finds them there. Anything short of that — nothing stored, a store that
//! errs or does not answer within `LOOKUP_LIMIT`, a body that does not match
//! its sidecar — leaves the fill to the origin.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{GetOptions, GetResult, ObjectStore};
use sha2::{Digest, Sha256};

use super::{
    local::{self, NewFile},
    names::{self, KeyNames},
    SharedStore,
};
use crate::{flow::FillLease, proxy::grant::GrantedPath};

/// Longest a miss waits for the store to say what it has, retries included.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(5);
/// Longest a download from the store may go without a byte.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Largest sidecar taken from the store (the cache plugin's are a few
/// hundred bytes).
pub const SIDECAR_MAX: u64 = 1 << 20;

/// What the store holds for a key.
struct Found {
    /// The sidecar's cache path and contents, when it has one.
    sidecar: Option<(String, Bytes)>,
    /// The body's cache path, and the object.
    body_rel: String,
    body: GetResult,
    /// The body's hex SHA-256, when known.
    sha256: Option<String>,
}

/// Why what the store had was not kept.
#[derive(Debug, thiserror::Error)]
enum KeepError {
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("no byte from the store for {}s", STALL_LIMIT.as_secs())]
    Stalled,
    #[error("{0}")]
    Local(String),
    #[error("{0}")]
    Mismatch(String),
}

impl SharedStore {
    /// Brings what the store holds for `key` into the cache dir; whether it did.
    pub(super) async fn fetch(&self, key: &str, lease: Option<&FillLease>) -> bool {
        let Some(names) = KeyNames::new(key) else {
            return false;
        };
        // Only for a key absent here entirely: the local dir is the first
        // level, and what a person or a plugin left there (a stale copy to
        // revalidate, a variant, a file deleted to force a fetch, whose
        // sidecar stays) is the origin's business.
        let free = |rel: &str| self.at(rel).is_some_and(|path| !path.occupied());
        if !free(&names.key) || !free(&names.sidecar) {
            return false;
        }
        if !self.health.try_use() {
            return false;
        }
        let found = match tokio::time::timeout(LOOKUP_LIMIT, self.lookup(&names)).await {
            Err(_) => {
                let waited = format!("no answer within {}s", LOOKUP_LIMIT.as_secs());
                self.health.failed("a lookup", &waited);
                return false;
            }
            Ok(Err(e)) => {
                self.health.failed("a lookup", &e);
                return false;
            }
            Ok(Ok(found)) => {
                self.health.worked();
                match found {
                    Some(found) => found,
                    None => return false,
                }
            }
        };
        let body_rel = found.body_rel.clone();
        match self.keep(found, lease).await {
            Ok(bytes) => {
                tracing::debug!("{body_rel}: {bytes} bytes from the shared cache store");
                true
            }
            Err(KeepError::Store(e)) => {
                self.health.failed("a download", &e);
                false
            }
            Err(KeepError::Stalled) => {
                self.health.failed("a download", &KeepError::Stalled);
                false
            }
            Err(e) => {
                tracing::warn!("not taking {body_rel} from the shared cache store: {e}");
                false
            }
        }
    }

    /// The file at cache path `rel`, beneath the cache dir.
    pub(super) fn at(&self, rel: &str) -> Option<GrantedPath> {
        GrantedPath::beneath(&self.cache_dir, rel)
    }

    /// The object at cache path `rel`, `None` when there is none.
    pub(super) async fn get(
        &self,
        rel: &str,
        head: bool,
    ) -> object_store::Result<Option<GetResult>> {
        let Some(path) = self.url.object(rel) else {
            return Ok(None);
        };
        let options = GetOptions {
            head,
            ..GetOptions::default()
        };
        match self.objects.get_opts(&path, options).await {
            Ok(found) => Ok(Some(found)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What the store holds for `names`: its sidecar, and the body that
    /// sidecar names (usually the key's own file, fetched alongside).
    async fn lookup(&self, names: &KeyNames) -> object_store::Result<Option<Found>> {
        let (sidecar, own) =
            tokio::join!(self.get(&names.sidecar, false), self.get(&names.key, false));
        let (sidecar, own) = (sidecar?, own?);
        let Some(sidecar) = sidecar else {
            // A body without a sidecar is taken when none is announced
            // (a file put in the bucket by hand); one whose sidecar has
            // not arrived yet is not.
            return Ok(own
                .filter(|body| attribute(body, names::SIDECAR).is_none())
                .map(|body| Found {
                    sidecar: None,
                    body_rel: names.key.clone(),
                    sha256: attribute(&body, names::SHA256),
                    body,
                }));
        };
        let body_rel = attribute(&sidecar, names::BODY).unwrap_or_else(|| names.key.clone());
        if !names.may_hold(&body_rel) {
            tracing::warn!(
                "shared cache store {}: ignoring the sidecar of {}: it names {body_rel:?}, not a file of that key",
                self.url,
                names.key
            );
            return Ok(None);
        }
        let sha256 = attribute(&sidecar, names::SHA256);
        if sidecar.meta.size > SIDECAR_MAX {
            tracing::warn!(
                "shared cache store {}: ignoring the sidecar of {}: {} bytes",
                self.url,
                names.key,
                sidecar.meta.size
            );
            return Ok(None);
        }
        let contents = sidecar.bytes().await?;
        let body = match body_rel == names.key {
            true => own,
            false => self.get(&body_rel, false).await?,
        };
        let Some(body) = body else { return Ok(None) };
        // The sidecar describes the body it was uploaded with; another one
        // in its place (a race, a replaced object) is not taken.
        if sha256.is_some() && attribute(&body, names::SHA256) != sha256 {
            tracing::debug!("{body_rel}: the stored body is not the one its sidecar describes");
            return Ok(None);
        }
        Ok(Some(Found {
            sidecar: Some((names.sidecar.clone(), contents)),
            body_rel,
            body,
            sha256,
        }))
    }

    /// Writes what was found: the sidecar, then the body, streamed and
    /// checked against its size and SHA-256 before it is put in place.
    async fn keep(&self, found: Found, lease: Option<&FillLease>) -> Result<u64, KeepError> {
        let place = |rel: &str| {
            self.at(rel)
                .ok_or_else(|| KeepError::Local(format!("{rel:?} is not a cache path")))
        };
        let body_at = place(&found.body_rel)?;
        let sidecar_at = match &found.sidecar {
            Some((rel, contents)) => {
                let at = place(rel)?;
                write_new(&at, contents)?;
                Some(at)
            }
            None => None,
        };
        let kept = self
            .download(found.body, &body_at, found.sha256.as_deref(), lease)
            .await;
        if let (Err(_), Some(at)) = (&kept, &sidecar_at) {
            local::remove(at);
        }
        kept
    }

    async fn download(
        &self,
        body: GetResult,
        at: &GrantedPath,
        sha256: Option<&str>,
        lease: Option<&FillLease>,
    ) -> Result<u64, KeepError> {
        let local = |e: &dyn std::fmt::Display| {
            KeepError::Local(format!("{}: {e}", at.display().display()))
        };
        let mut file = NewFile::create(at).map_err(|e| local(&e))?;
        if let Some(lease) = lease {
            lease.storing();
        }
        let size = body.meta.size;
        let mut stream = body.into_stream();
        let mut hash = Sha256::new();
        let mut written = 0u64;
        loop {
            let chunk = match tokio::time::timeout(STALL_LIMIT, stream.next()).await {
                Err(_) => return Err(KeepError::Stalled),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk?,
            };
            hash.update(&chunk);
            file.write(&chunk).map_err(|e| local(&e))?;
            written += chunk.len() as u64;
            if let Some(lease) = lease {
                lease.stored(chunk.len() as u64);
            }
        }
        if written != size {
            let why = format!("{written} of {size} bytes arrived");
            return Err(KeepError::Mismatch(why));
        }
        let digest = hex(&hash.finalize());
        if sha256.is_some_and(|expected| !expected.eq_ignore_ascii_case(&digest)) {
            let why = "its bytes do not match the SHA-256 it was stored with".to_owned();
            return Err(KeepError::Mismatch(why));
        }
        match file.finish() {
            Ok(true) => Ok(written),
            Ok(false) => Err(local(&"a file appeared there meanwhile")),
            Err(e) => Err(local(&e)),
        }
    }
}

/// Writes `contents` at `at` unless something is there.
fn write_new(at: &GrantedPath, contents: &[u8]) -> Result<(), KeepError> {
    let local =
        |e: &dyn std::fmt::Display| KeepError::Local(format!("{}: {e}", at.display().display()));
    let mut file = NewFile::create(at).map_err(|e| local(&e))?;
    file.write(contents).map_err(|e| local(&e))?;
    match file.finish() {
        Ok(true) => Ok(()),
        Ok(false) => Err(local(&"a file appeared there meanwhile")),
        Err(e) => Err(local(&e)),
    }
}

/// User metadata `name` of an object.
pub(super) fn attribute(object: &GetResult, name: &'static str) -> Option<String> {
    object
        .attributes
        .get(&object_store::Attribute::Metadata(name.into()))
        .map(|value| value.to_string())
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
