//! Answers a plugin let the host give again without calling it: a cache hit
//! served from a small file, repeated for the next request for the same URL
//! while nothing the plugin decided on has changed.
//!
//! A plugin opts in per answer to `on-request`, with fields the host strips
//! before the response leaves:
//!
//! - `x-proxlet-memo: vary=accept,authorization; ttl=600` — the request
//!   fields the decision read (the next request must carry the same values,
//!   or the same absence) and, optionally, for how many more seconds it holds;
//! - `x-proxlet-memo-pin: GUEST_PATH`, repeatable — files or directories the
//!   decision read (e.g. metadata, the directory listing variants).
//!
//! The host keeps the answer (status, head, and the body file's bytes when it
//! is at most [`MAX_BODY`]) with the signature (device, inode, size, times)
//! of the body file and of every pin, absent ones included. Each reuse checks
//! them all again beneath the grant (one `statx` each), so a file edited,
//! replaced, added or deleted by hand is honoured on the very next request;
//! nothing is ever read again by path. An answer lives at most [`MAX_TTL`]
//! and only as long as the plugin version that gave it.

use std::{
    hash::BuildHasher,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header::HeaderName, HeaderMap, Method, Response, StatusCode};
use lru::LruCache;

use crate::proxy::{
    body::Body,
    files,
    grant::{GrantedPath, Signature},
};

/// The field holding the directive.
pub const MEMO: &str = "x-proxlet-memo";
/// The fields naming pinned paths.
pub const PIN: &str = "x-proxlet-memo-pin";

/// Largest body kept: a kept hit is sent from memory with one copy, as a
/// memory cache's; larger files are read from the page cache each time.
pub const MAX_BODY: u64 = 4 * 1024 * 1024;
/// Longest an answer is reused before the plugin is asked again.
pub const MAX_TTL: Duration = Duration::from_secs(60);
/// Shards (each its own lock), bytes and answers kept per plugin.
const SHARDS: usize = 16;
const SHARD_BYTES: usize = 4 * 1024 * 1024;
const SHARD_ANSWERS: usize = 4096;

/// What a plugin asked for in its answer's fields.
#[derive(Debug, Default, PartialEq)]
pub struct Directive {
    vary: Vec<HeaderName>,
    ttl: Option<Duration>,
    pins: Vec<String>,
}

impl Directive {
    /// Takes the memo fields out of `headers`: the directive if they make
    /// one, or why not.
    pub fn take(headers: &mut HeaderMap) -> Option<Result<Self, String>> {
        let directive = headers.remove(MEMO)?;
        let pins: Vec<String> = headers
            .get_all(PIN)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.remove(PIN);
        Some(Self::parse(directive.as_bytes(), pins))
    }

    fn parse(directive: &[u8], pins: Vec<String>) -> Result<Self, String> {
        let text = std::str::from_utf8(directive).map_err(|_| "not UTF-8".to_owned())?;
        let mut parsed = Self {
            pins,
            ..Self::default()
        };
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("vary", names)) => {
                    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        let name = HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| format!("bad field name {name:?} in vary"))?;
                        parsed.vary.push(name);
                    }
                }
                Some(("ttl", seconds)) => {
                    let seconds: u64 = seconds
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad ttl {seconds:?}"))?;
                    parsed.ttl = Some(Duration::from_secs(seconds));
                }
                _ => return Err(format!("unknown part {part:?}")),
            }
        }
        Ok(parsed)
    }
}

/// A kept answer.
struct Answer {
    status: StatusCode,
    /// The plugin's head with the file fields added; framing is per request.
    headers: HeaderMap,
    body: Bytes,
    /// The request fields the plugin read and their values then.
    vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// The body file, then the pins, with their signatures then.
    files: Vec<(GrantedPath, Option<Signature>)>,
    until: Instant,
}

impl Answer {
    fn holds(&self, request: &HeaderMap) -> bool {
        Instant::now() < self.until
            && self
                .vary
                .iter()
                .all(|(name, value)| joined(request, name).as_deref() == value.as_deref())
            && self
                .files
                .iter()
                .all(|(path, signature)| path.signature() == Ok(*signature))
    }

    fn weight(&self) -> usize {
        self.body.len() + 512
    }
}

/// Every value of `name` in `headers`, joined as one field line would be.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for value in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(value.as_bytes());
    }
    Some(out)
}

#[derive(Default)]
struct Shard {
    answers: Option<LruCache<String, Arc<Answer>>>,
    bytes: usize,
}

/// The answers of one plugin version.
pub struct Memo {
    /// Set once the plugin first asked: until then a lookup costs one load.
    used: AtomicBool,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            used: AtomicBool::new(false),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Memo {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept answer to this request, if one holds.
    pub fn answer(&self, request: &http::request::Parts) -> Option<Response<Body>> {
        if !self.used.load(Ordering::Relaxed)
            || !matches!(request.method, Method::GET | Method::HEAD)
        {
            return None;
        }
        let key = request.uri.to_string();
        let answer = {
            let mut shard = self.shard(&key);
            shard.answers.as_mut()?.get(&key).cloned()?
        };
        if !answer.holds(&request.headers) {
            let mut shard = self.shard(&key);
            if let Some(gone) = shard.answers.as_mut().and_then(|a| a.pop(&key)) {
                shard.bytes -= gone.weight();
            }
            return None;
        }
        if let Some((file, _)) = answer.files.first() {
            crate::cache_limit::served(file);
        }
        Some(files::serve_bytes(
            &answer.body,
            &request.method,
            &request.headers,
            answer.status,
            answer.headers.clone(),
        ))
    }

    /// Serves the plugin's file answer to `request` and keeps it as
    /// `directive` asks, when the file is small enough; `None` when it is
    /// not kept (the caller serves the file as usual).
    pub fn keep(
        &self,
        request: &http::request::Parts,
        directive: Directive,
        dirs: &[(String, std::path::PathBuf)],
        file: &GrantedPath,
        status: StatusCode,
        mut headers: HeaderMap,
    ) -> Option<Response<Body>> {
        if request.method != Method::GET || request.headers.contains_key(http::header::RANGE) {
            return None;
        }
        // Pins are taken before the body is read: a change in between
        // shows as a mismatch at the next request, never as a stale answer.
        let mut files = Vec::with_capacity(directive.pins.len() + 1);
        for pin in &directive.pins {
            let path = GrantedPath::locate(dirs, pin)?;
            let signature = path.signature().ok()?;
            files.push((path, signature));
        }
        let (body, meta) = files::read_whole(file, MAX_BODY).ok()??;
        files.insert(0, (file.clone(), Some(Signature::of(&meta))));
        files::file_headers(&mut headers, &file.display());
        let ttl = directive.ttl.map_or(MAX_TTL, |t| t.min(MAX_TTL));
        let answer = Arc::new(Answer {
            status,
            headers,
            body,
            vary: directive
                .vary
                .into_iter()
                .map(|name| {
                    let value = joined(&request.headers, &name);
                    (name, value)
                })
                .collect(),
            files,
            until: Instant::now() + ttl,
        });
        let response = files::serve_bytes(
            &answer.body,
            &request.method,
            &request.headers,
            answer.status,
            answer.headers.clone(),
        );
        if !ttl.is_zero() {
            self.insert(request.uri.to_string(), answer);
        }
        Some(response)
    }

    fn insert(&self, key: String, answer: Arc<Answer>) {
        let mut shard = self.shard(&key);
        let shard = &mut *shard;
        let answers = shard.answers.get_or_insert_with(LruCache::unbounded);
        shard.bytes += answer.weight();
        if let Some(old) = answers.put(key, answer) {
            shard.bytes -= old.weight();
        }
        while shard.bytes > SHARD_BYTES || answers.len() > SHARD_ANSWERS {
            match answers.pop_lru() {
                Some((_, old)) => shard.bytes -= old.weight(),
                None => break,
            }
        }
        self.used.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_and_bad_ones_are_refused() {
        let parsed = Directive::parse(b"vary=accept, authorization; ttl=30", vec!["/c/m".into()]);
        assert_eq!(
            parsed,
            Ok(Directive {
                vary: vec![
                    HeaderName::from_static("accept"),
                    HeaderName::from_static("authorization")
                ],
                ttl: Some(Duration::from_secs(30)),
                pins: vec!["/c/m".into()],
            })
        );
        assert!(Directive::parse(b"vary=bad name", vec![]).is_err());
        assert!(Directive::parse(b"ttl=-1", vec![]).is_err());
        assert!(Directive::parse(b"forever", vec![]).is_err());
        assert_eq!(Directive::parse(b"", vec![]), Ok(Directive::default()));
    }

    #[test]
    fn field_values_are_compared_joined_and_absence_is_a_value() {
        let mut headers = HeaderMap::new();
        let accept = HeaderName::from_static("accept");
        assert_eq!(joined(&headers, &accept), None);
        headers.append("accept", "text/html".parse().unwrap());
        headers.append("accept", "*/*".parse().unwrap());
        assert_eq!(
            joined(&headers, &accept).as_deref(),
            Some(&b"text/html, */*"[..])
        );
    }
}
