//! The `cache` plugin: responses as plain files under the cache dir, laid out
//! by URL (see `proxlet_plugin::cachepath`), served by the host on a hit,
//! fetched once and stored atomically on a miss. Metadata (type, validators,
//! the Vary'd request headers, when it was stored) lives in a hidden sidecar
//! tree and is optional: a hand-dropped file is served as it is.
//!
//! Private responses stay private (RFC 9111 §3, §3.5): responses to
//! requests with `Authorization`, or with `Cookie` and without
//! `Cache-Control: public`, and responses that set a cookie are not stored
//! unless the config says so, and credentials never reach the metadata.

use std::{
    cell::OnceCell,
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use proxlet_plugin::{
    accept, cachepath, has_header, header, header_tokens, log, text_response, tree, Body, Edit,
    Fill, FlowInfo, Headers, Hooks, Level, Plugin, RequestAction, RequestHead, Response,
    ResponseAction, ResponseHead, Sidecar, Store, UpstreamError,
};
use rules::Rule;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod rules;

/// Configuration (the `[plugin.config]` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The cache directory as the plugin sees it.
    dir: String,
    /// Never contact the upstream: a miss is a 504.
    offline: bool,
    /// Store responses marked `Cache-Control: no-store` or `private` too.
    cache_anything: bool,
    /// Share responses to requests that carried `Authorization`.
    share_authorized: bool,
    /// Store responses to requests that carried `Cookie` without
    /// `Cache-Control: public`, and responses with `Set-Cookie` (the
    /// `Set-Cookie` field itself is never recorded nor replayed).
    share_cookies: bool,
    /// Entries matching one of these are revalidated after their TTL;
    /// everything else is fresh forever.
    revalidate: Vec<RuleConfig>,
    /// The size limit and the period of its scan: the host evicts (a plugin
    /// has no thread to do it with) and checks them; accepted here only.
    #[serde(rename = "max_size")]
    _max_size: Option<serde::de::IgnoredAny>,
    #[serde(rename = "rescan")]
    _rescan: Option<serde::de::IgnoredAny>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dir: "/cache".into(),
            offline: false,
            cache_anything: false,
            share_authorized: false,
            share_cookies: false,
            revalidate: rules::DEFAULT_RULES
                .iter()
                .map(|r| RuleConfig {
                    url: Some(r.url.to_owned()),
                    content_type: r.content_type.map(str::to_owned),
                    ttl: rules::DEFAULT_TTL.into(),
                })
                .collect(),
            _max_size: None,
            _rescan: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// Regex on the URL.
    url: Option<String>,
    /// Substring of the stored Content-Type.
    #[serde(rename = "type")]
    content_type: Option<String>,
    /// Time an entry stays fresh, e.g. "10m", "1h", "0".
    ttl: String,
}

/// What the sidecar tree holds for one URL.
#[derive(Default, Serialize, Deserialize)]
struct Meta {
    url: String,
    /// The stored representations (several when the URL varies by Accept).
    #[serde(default)]
    variants: Vec<Variant>,
    /// A permanent redirect the URL answered, replayed without a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect: Option<Redirect>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Variant {
    /// The file, relative to the cache dir.
    file: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// Unix seconds when stored or last revalidated.
    stored: u64,
    /// Whether the response varied by Accept.
    #[serde(default)]
    by_accept: bool,
    /// Other Vary'd request headers and their values; a credential's value
    /// as a digest (see [`vary_value`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    vary: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Redirect {
    status: u16,
    location: String,
}

/// Request headers that would make the upstream answer something other than
/// the whole current representation.
const CONDITIONAL: [&str; 5] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
];

struct Cache {
    config: Config,
    rules: Vec<Rule>,
}

/// A stored entry chosen for a request.
struct Hit {
    rel: String,
    variant: Option<Variant>,
}

impl Plugin for Cache {
    const HOOKS: Hooks = Hooks::ON_REQUEST
        .union(Hooks::ON_RESPONSE)
        .union(Hooks::ON_ERROR);

    fn new(config: &str) -> Result<Self, String> {
        let config: Config = proxlet_plugin::config(config)?;
        let rules = config
            .revalidate
            .iter()
            .map(|r| Rule::new(r.url.as_deref(), r.content_type.as_deref(), &r.ttl))
            .collect::<Result<_, String>>()?;
        Ok(Self { config, rules })
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
        let method = request.method();
        if !matches!(method.as_str(), "GET" | "HEAD") || self.private(request) {
            return RequestAction::Continue(Vec::new());
        }
        let url = request.url();
        let rel = match cachepath::url_to_path(&url) {
            Ok(rel) => rel,
            Err(e) => {
                log(Level::Info, &format!("not caching {url}: {e}"));
                return RequestAction::Continue(Vec::new());
            }
        };
        let meta = self.read_meta(&rel);
        let current = meta.as_ref().filter(|m| !crossed(&rel, m));
        if let Some(redirect) = current.and_then(|m| m.redirect.as_ref()) {
            return RequestAction::Respond(text_response(
                redirect.status,
                vec![
                    ("location".into(), redirect.location.clone().into_bytes()),
                    ("x-proxlet".into(), b"cache;hit".to_vec()),
                ],
                "",
            ));
        }
        let hit = self.choose(&rel, meta.as_ref(), request);
        if let Some(hit) = &hit {
            let left = self.fresh_for(&url, hit);
            if self.config.offline || left != Some(0) {
                let mut response = self.serve(hit, "cache;hit");
                let left = if self.config.offline { None } else { left };
                memo(&mut response.headers, &self.config.dir, &rel, hit, left);
                return RequestAction::Respond(response);
            }
        }
        if self.config.offline {
            return RequestAction::Respond(text_response(
                504,
                vec![("x-proxlet".into(), b"cache;offline-miss".to_vec())],
                &format!(
                    "proxlet cache: offline, and {url} is not in the cache ({}/{rel})\n",
                    self.config.dir
                ),
            ));
        }
        if method != "GET" {
            return RequestAction::Continue(Vec::new());
        }
        // Fetch the whole, current, unencoded representation, once.
        let mut edits: Vec<Edit> = CONDITIONAL
            .iter()
            .chain(&["range"])
            .map(|name| Edit::remove_header(name))
            .collect();
        edits.push(Edit::set_header("accept-encoding", "identity"));
        if let Some(variant) = hit.and_then(|h| h.variant) {
            if let Some(etag) = &variant.etag {
                edits.push(Edit::set_header("if-none-match", etag));
            }
            if let Some(date) = &variant.last_modified {
                edits.push(Edit::set_header("if-modified-since", date));
            }
        }
        RequestAction::Fill(Fill { key: rel, edits })
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let method = request.method();
        let looked_up = match method.as_str() {
            "GET" | "HEAD" if !self.private(request) => {
                let url = request.url();
                cachepath::url_to_path(&url).ok().map(|rel| (url, rel))
            }
            _ => None,
        };
        // Never looked up: the method, credentials or URL keep it out.
        let Some((url, rel)) = looked_up else {
            return tagged("cache;bypass");
        };
        if method != "GET" {
            return tagged("cache;miss");
        }
        match response.status() {
            304 if CONDITIONAL.iter().any(|h| request.has_header(h)) => {
                self.revalidated(&rel, request)
            }
            status @ (301 | 308) => {
                self.record_redirect(&rel, &url, status, request, response);
                tagged("cache;miss")
            }
            200 => self.store(rel, &url, request, response),
            _ => tagged("cache;miss"),
        }
    }

    fn on_error(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        error: &UpstreamError,
    ) -> Option<Response> {
        let url = request.url();
        let rel = cachepath::url_to_path(&url).ok()?;
        let meta = self.read_meta(&rel);
        let hit = self.choose(&rel, meta.as_ref(), request)?;
        log(
            Level::Warn,
            &format!(
                "serving a stale copy of {url}: the upstream failed ({})",
                error.message
            ),
        );
        Some(self.serve(&hit, "cache;stale"))
    }
}

impl Cache {
    fn guest(&self, rel: &str) -> String {
        format!("{}/{rel}", self.config.dir)
    }

    /// A request carrying credentials is not shared unless configured.
    fn private(&self, request: &RequestHead) -> bool {
        !self.config.share_authorized && request.has_header("authorization")
    }

    fn read_meta(&self, rel: &str) -> Option<Meta> {
        let text = std::fs::read(self.guest(&cachepath::meta_path(rel))).ok()?;
        match serde_json::from_slice(&text) {
            Ok(meta) => Some(meta),
            Err(e) => {
                log(
                    Level::Warn,
                    &format!("ignoring broken metadata of {rel}: {e}"),
                );
                None
            }
        }
    }

    fn write_meta(&self, rel: &str, meta: &Meta) {
        let path = self.guest(&cachepath::meta_path(rel));
        let written = std::path::Path::new(&path)
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, meta_json(meta)));
        if let Err(e) = written {
            log(Level::Error, &format!("cannot write {path}: {e}"));
        }
    }

    /// A regular file, not a symlink to one: the cache serves and moves
    /// only what it could have stored.
    fn is_file(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.guest(rel)).is_ok_and(|m| m.is_file())
    }

    /// The stored file of `rel`: `rel` itself, or `rel/#file` once `rel`
    /// became a directory. A symlink (an error link, or one made by hand)
    /// is not served.
    fn locate(&self, rel: &str) -> Option<String> {
        match std::fs::symlink_metadata(self.guest(rel)) {
            Ok(m) if m.is_file() => Some(rel.to_owned()),
            Ok(m) if m.is_dir() => {
                let inner = cachepath::dir_file_path(rel);
                self.is_file(&inner).then_some(inner)
            }
            _ => None,
        }
    }

    /// Where a new body for `rel` goes. A file standing where `rel` needs a
    /// directory moves into that directory as `#file`; a directory at `rel`
    /// takes the body as `rel/#file`.
    fn destination(&self, rel: &str) -> String {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            end += i;
            let ancestor = &rel[..end];
            end += 1;
            if ancestor.contains('/') && self.is_file(ancestor) {
                let (from, to) = (
                    self.guest(ancestor),
                    self.guest(&cachepath::dir_file_path(ancestor)),
                );
                let moving = format!("{from}.proxlet-moving");
                let moved = std::fs::rename(&from, &moving)
                    .and_then(|()| std::fs::create_dir(&from))
                    .and_then(|()| std::fs::rename(&moving, &to));
                if let Err(e) = moved {
                    log(
                        Level::Error,
                        &format!("cannot move {from} into the directory it must become: {e}"),
                    );
                }
            }
        }
        match std::fs::symlink_metadata(self.guest(rel)) {
            Ok(m) if m.is_dir() => cachepath::dir_file_path(rel),
            _ => rel.to_owned(),
        }
    }

    /// Why `rel` cannot be stored through the tree as it is: a symlink on
    /// the way (below an error link `t/bob -> 404`, `t/bob/x` would land in
    /// `t/404/x`) or at `rel` itself (an error link stays until deleted).
    fn symlink_in_the_way(&self, rel: &str) -> Option<String> {
        tree::symlinked_ancestor(&self.config.dir, rel).or_else(|| {
            std::fs::symlink_metadata(self.guest(rel))
                .is_ok_and(|m| m.file_type().is_symlink())
                .then(|| rel.to_owned())
        })
    }

    /// The stored entry that answers this request: a variant whose type the
    /// client accepts and whose Vary'd headers match, best quality first;
    /// without metadata, a plain file at the path. Reads from the request
    /// only what the variants compare: `Accept` when they differ by type,
    /// every field (a Vary'd value joins all lines of its name) once when
    /// one varies by another field.
    fn choose(&self, rel: &str, meta: Option<&Meta>, request: &RequestHead) -> Option<Hit> {
        if meta.is_some_and(|m| crossed(rel, m)) {
            log(
                Level::Debug,
                &format!("not serving {rel}: it was fetched over plain HTTP"),
            );
            return None;
        }
        let variants = meta.map(|m| m.variants.as_slice()).unwrap_or_default();
        if variants.is_empty() {
            // A file without metadata may be reached through an error link
            // (`t/bob/x` is `t/404/x` when `t/bob -> 404`); what the cache
            // stored itself went through real directories (see `store`).
            if let Some(link) = tree::symlinked_ancestor(&self.config.dir, rel) {
                log(
                    Level::Debug,
                    &format!("not serving {rel}: {link} is a symlink, not a directory"),
                );
                return None;
            }
            return self.locate(rel).map(|rel| Hit { rel, variant: None });
        }
        let accept = variants
            .iter()
            .any(|v| v.by_accept)
            .then(|| request.header_str("accept"))
            .flatten();
        let fields = OnceCell::new();
        variants
            .iter()
            .filter(|v| {
                v.vary.iter().all(|(name, value)| {
                    vary_value(rel, name, fields.get_or_init(|| request.headers())) == *value
                })
            })
            .map(|v| {
                let q = match (&v.content_type, v.by_accept) {
                    (Some(kind), true) => accept::quality(accept.as_deref(), kind),
                    _ => 1.0,
                };
                (q, v)
            })
            .filter(|(q, _)| *q > 0.0)
            .filter_map(|(q, v)| Some((q, v, self.locate(&v.file)?)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, v, rel)| Hit {
                rel,
                variant: Some(v.clone()),
            })
    }

    /// Seconds the entry stays fresh: `None`, for ever (no revalidate rule
    /// matches; a hand-dropped file without metadata); `Some(0)`: stale.
    fn fresh_for(&self, url: &str, hit: &Hit) -> Option<u64> {
        let variant = hit.variant.as_ref()?;
        let kind = variant.content_type.as_deref().unwrap_or_default();
        let rule = self.rules.iter().find(|r| r.matches(url, kind))?;
        let age = now().saturating_sub(variant.stored);
        Some(rule.ttl.as_secs().saturating_sub(age))
    }

    /// The host serves the file (Content-Length, HEAD, Range).
    fn serve(&self, hit: &Hit, outcome: &str) -> Response {
        let mut headers: Headers = vec![("x-proxlet".into(), outcome.as_bytes().to_vec())];
        if let Some(variant) = &hit.variant {
            let fields = [
                ("content-type", &variant.content_type),
                ("etag", &variant.etag),
                ("last-modified", &variant.last_modified),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    headers.push((name.into(), value.clone().into_bytes()));
                }
            }
            if variant.by_accept || !variant.vary.is_empty() {
                let mut vary: Vec<&str> = variant.vary.keys().map(String::as_str).collect();
                if variant.by_accept {
                    vary.push("accept");
                }
                headers.push(("vary".into(), vary.join(", ").into_bytes()));
            }
        }
        Response {
            status: 200,
            headers,
            body: Body::File(self.guest(&hit.rel)),
        }
    }

    /// Our conditional request was answered 304: the stored copy is current.
    fn revalidated(&self, rel: &str, request: &RequestHead) -> ResponseAction {
        let mut meta = self.read_meta(rel).unwrap_or_default();
        let Some(hit) = self.choose(rel, Some(&meta), request) else {
            return ResponseAction::Continue(Vec::new());
        };
        let located = |v: &Variant| self.locate(&v.file).as_deref() == Some(hit.rel.as_str());
        if let Some(variant) = meta.variants.iter_mut().find(|v| located(v)) {
            variant.stored = now();
        }
        self.write_meta(rel, &meta);
        ResponseAction::Replace(self.serve(&hit, "cache;revalidated"))
    }

    /// A permanent same-origin redirect is kept as metadata, never as a file
    /// (`simple/foo` would collide with the directory `simple/foo/`).
    fn record_redirect(
        &self,
        rel: &str,
        url: &str,
        status: u16,
        request: &RequestHead,
        response: &ResponseHead,
    ) {
        let fields = response.headers();
        let Some(location) = header(&fields, "location") else {
            return;
        };
        let control = header_tokens(&fields, "cache-control");
        if let Some(reason) = self.private_response(request, &fields, &control) {
            log(
                Level::Debug,
                &format!("not recording the redirect of {url}: {reason}"),
            );
            return;
        }
        let mut meta = self
            .read_meta(rel)
            .filter(|m| !crossed(rel, m))
            .unwrap_or_default();
        meta.url = without_userinfo(url);
        meta.redirect = Some(Redirect {
            status,
            location: location.to_owned(),
        });
        self.write_meta(rel, &meta);
    }

    /// Why the response to `request` is private to its client (RFC 9111
    /// §3: a shared cache must not store it): it sets a cookie, or answers a
    /// request with a cookie without saying `Cache-Control: public`. A
    /// cookie-less response to a cookie-carrying request is common (tracking
    /// cookies) but may still be personalised, so only `public` vouches.
    fn private_response(
        &self,
        request: &RequestHead,
        response: &Headers,
        control: &[String],
    ) -> Option<&'static str> {
        if self.config.share_cookies {
            None
        } else if has_header(response, "set-cookie") {
            Some("it sets a cookie (Set-Cookie)")
        } else if !control.iter().any(|d| d == "public") && request.has_header("cookie") {
            Some("the request carried a Cookie and the response is not Cache-Control: public")
        } else {
            None
        }
    }

    /// A 200 to a GET: store it unless it says not to, under a name that
    /// records its type when it varies by Accept. Most of the response's
    /// fields count (some by every line), so they are copied once.
    fn store(
        &self,
        rel: String,
        url: &str,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let fields = response.headers();
        let control = header_tokens(&fields, "cache-control");
        let vary = header_tokens(&fields, "vary");
        let refused = if !self.config.cache_anything
            && control.iter().any(|d| d == "no-store" || d == "private")
        {
            Some("Cache-Control forbids it")
        } else if let Some(reason) = self.private_response(request, &fields, &control) {
            Some(reason)
        } else if vary.iter().any(|v| v == "*") {
            Some("it varies by everything (Vary: *)")
        } else if has_header(&fields, "content-range") {
            Some("it is partial")
        } else if has_header(&fields, "content-encoding")
            && header(&fields, "content-encoding") != Some("identity")
        {
            Some("the upstream ignored Accept-Encoding: identity")
        } else {
            None
        };
        if let Some(reason) = refused {
            log(Level::Debug, &format!("not storing {url}: {reason}"));
            return tagged("cache;miss");
        }

        let content_type = header(&fields, "content-type").map(str::to_owned);
        let by_accept = vary.iter().any(|v| v == "accept");
        let file = match &content_type {
            Some(kind) if by_accept && accept::media_type(kind) != "text/html" => {
                cachepath::variant_path(&rel, &accept::type_token(kind))
            }
            _ => rel.clone(),
        };
        if let Some(link) = self.symlink_in_the_way(&file) {
            log(
                Level::Debug,
                &format!(
                    "not storing {url}: {link} is a symlink (an error link?), not a directory"
                ),
            );
            return tagged("cache;miss");
        }
        let destination = self.destination(&file);
        let request_fields = OnceCell::new();
        let variant = Variant {
            file: file.clone(),
            content_type,
            etag: header(&fields, "etag").map(str::to_owned),
            last_modified: header(&fields, "last-modified").map(str::to_owned),
            stored: now(),
            by_accept,
            vary: vary
                .iter()
                .filter(|v| !matches!(v.as_str(), "accept" | "accept-encoding"))
                .map(|v| {
                    let value =
                        vary_value(&rel, v, request_fields.get_or_init(|| request.headers()));
                    (v.clone(), value)
                })
                .collect(),
        };
        let mut meta = self
            .read_meta(&rel)
            .filter(|m| !crossed(&rel, m))
            .unwrap_or_default();
        meta.url = without_userinfo(url);
        meta.redirect = None;
        meta.variants
            .retain(|v| by_accept && v.by_accept && v.file != file);
        meta.variants.push(variant);

        ResponseAction::Store(Store {
            path: self.guest(&destination),
            edits: vec![tag("cache;miss")],
            sidecar: Some(Sidecar {
                path: self.guest(&cachepath::meta_path(&rel)),
                contents: meta_json(&meta),
            }),
        })
    }
}

/// Lets the host answer the same URL again without calling the plugin
/// while what this hit was decided on stays as it is: the request's
/// `Accept`, `Authorization` and Vary'd fields, the metadata file, the
/// directory holding the body (variants added or removed by hand) and the
/// body file itself (which the host pins), for at most the freshness left.
fn memo(headers: &mut Headers, dir: &str, rel: &str, hit: &Hit, fresh_for: Option<u64>) {
    let mut vary = vec!["accept", "authorization"];
    if let Some(variant) = &hit.variant {
        vary.extend(variant.vary.keys().map(String::as_str));
    }
    let mut directive = format!("vary={}", vary.join(","));
    if let Some(seconds) = fresh_for {
        directive.push_str(&format!("; ttl={seconds}"));
    }
    headers.push(("x-proxlet-memo".into(), directive.into_bytes()));
    let body_dir = hit.rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    for pin in [cachepath::meta_path(rel).as_str(), body_dir] {
        headers.push((
            "x-proxlet-memo-pin".into(),
            format!("{dir}/{pin}").into_bytes(),
        ));
    }
}

/// Goes on with the upstream's response, its `X-Proxlet` naming what the
/// cache did (`cache;miss`, `cache;bypass`) for the client and the metrics.
fn tagged(outcome: &str) -> ResponseAction {
    ResponseAction::Continue(vec![tag(outcome)])
}

/// `X-Proxlet: outcome`.
fn tag(outcome: &str) -> Edit {
    Edit::set_header("x-proxlet", outcome)
}

/// Request fields that carry credentials.
const CREDENTIALS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// The value of the Vary'd request field `name` as the metadata keeps it:
/// every field line joined (HTTP/2 sends each cookie crumb as its own
/// field); a credential as `sha256:` of the entry's path, the name and the
/// value, so the metadata tells sessions apart without holding them (and
/// the same session cannot be matched across entries).
fn vary_value(rel: &str, name: &str, headers: &Headers) -> String {
    let name = name.to_ascii_lowercase();
    let separator: &[u8] = if name == "cookie" { b"; " } else { b", " };
    let value = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, v)| v.as_slice())
        .collect::<Vec<_>>()
        .join(separator);
    if value.is_empty() || !CREDENTIALS.contains(&name.as_str()) {
        return String::from_utf8_lossy(&value).into_owned();
    }
    let mut digest = Sha256::new();
    for part in [rel.as_bytes(), b"\0", name.as_bytes(), b"\0", &value] {
        digest.update(part);
    }
    digest
        .finalize()
        .iter()
        .fold(String::from("sha256:"), |mut out, b| {
            out.push_str(&format!("{b:02x}"));
            out
        })
}

/// Whether `meta` records a plain-HTTP URL for a path of an https one: an
/// entry stored before plain HTTP had its own host directories, which must
/// not answer https requests.
fn crossed(rel: &str, meta: &Meta) -> bool {
    let plain = meta
        .url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    plain && !rel.starts_with(cachepath::HTTP_MARKER)
}

/// `url` without `user:password@` before its host: credentials stay out of
/// the metadata.
fn without_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

fn meta_json(meta: &Meta) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(meta).unwrap_or_default();
    json.push(b'\n');
    json
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

proxlet_plugin::export!(Cache);
