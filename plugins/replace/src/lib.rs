//! The `replace` plugin: rules of `match → actions`, applied in order.
//! Matching: `filter` (mitmproxy syntax), `host` glob, `path` glob,
//! `path_regex`, `method`; all given must hold. Actions: `map_local`
//! (answer with a granted file), `status` (+ `body`: answer with a fixed
//! response), `delay_ms`, request/response header set/remove, `anticache`,
//! `anticomp`, and `replace` (regex over the decoded response body).

use std::{cell::OnceCell, collections::BTreeMap};

use proxlet_plugin::{
    filter::{Fields, Filter, Flow},
    set_header, text_response, url_parts, Body, Delay, Edit, FlowInfo, Headers, Hooks, Plugin,
    RequestAction, RequestHead, Response, ResponseAction, ResponseBodyAction, ResponseHead,
};
use regex_lite::Regex;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RuleConfig {
    // Matching.
    filter: Option<String>,
    host: Option<String>,
    path: Option<String>,
    path_regex: Option<String>,
    method: Option<String>,
    // Actions.
    map_local: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    delay_ms: Option<u32>,
    set_request_headers: BTreeMap<String, String>,
    remove_request_headers: Vec<String>,
    set_response_headers: BTreeMap<String, String>,
    remove_response_headers: Vec<String>,
    anticache: bool,
    anticomp: bool,
    replace: Vec<Substitution>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Substitution {
    /// Regex over the decoded body (UTF-8 text).
    pattern: String,
    /// Replacement; `$1`/`${name}` refer to groups.
    with: String,
}

/// A rule as its config makes it, its answer and edits built once.
struct Rule {
    filter: Option<Filter>,
    host: Option<Regex>,
    path: Option<Regex>,
    method: Option<String>,
    /// The response of `map_local` or `status`.
    answer: Option<Response>,
    /// Header removals and sets, `anticache`, `anticomp`, in that order.
    request_edits: Vec<Edit>,
    delay_ms: u32,
    /// Header removals and sets.
    response_edits: Vec<Edit>,
    substitutions: Vec<(Regex, String)>,
}

struct Replace {
    rules: Vec<Rule>,
}

impl Plugin for Replace {
    const HOOKS: Hooks = Hooks::ON_REQUEST
        .union(Hooks::ON_RESPONSE)
        .union(Hooks::ON_RESPONSE_BODY);

    fn new(config: &str) -> Result<Self, String> {
        let config: Config = proxlet_plugin::config(config)?;
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| Rule::new(rule).map_err(|e| format!("rules[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    fn on_request(&mut self, _: &FlowInfo, request: &RequestHead) -> RequestAction {
        let exchange = Exchange::new(request, None);
        let mut edits = Vec::new();
        let mut delay = 0u32;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.acts_on_request() && r.matches(&exchange))
        {
            if let Some(answer) = &rule.answer {
                return RequestAction::Respond(answer.clone());
            }
            edits.extend_from_slice(&rule.request_edits);
            delay = delay.saturating_add(rule.delay_ms);
        }
        if delay > 0 {
            RequestAction::Delay(Delay { ms: delay, edits })
        } else {
            RequestAction::Continue(edits)
        }
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let exchange = Exchange::new(request, Some(response));
        let mut edits = Vec::new();
        let mut need_body = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.acts_on_response() && r.matches(&exchange))
        {
            edits.extend_from_slice(&rule.response_edits);
            need_body |= !rule.substitutions.is_empty();
        }
        if need_body {
            ResponseAction::NeedBody(edits)
        } else {
            ResponseAction::Continue(edits)
        }
    }

    fn on_response_body(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
        body: Vec<u8>,
    ) -> ResponseBodyAction {
        let Ok(mut text) = String::from_utf8(body) else {
            return ResponseBodyAction::Continue;
        };
        let exchange = Exchange::new(request, Some(response));
        let mut changed = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| !r.substitutions.is_empty() && r.matches(&exchange))
        {
            for (re, with) in &rule.substitutions {
                if let std::borrow::Cow::Owned(new) = re.replace_all(&text, with.as_str()) {
                    text = new;
                    changed = true;
                }
            }
        }
        if changed {
            ResponseBodyAction::Replace(text.into_bytes())
        } else {
            ResponseBodyAction::Continue
        }
    }
}

/// The header edits `set_*_headers` and `remove_*_headers` make: removals
/// first.
fn header_edits(remove: &[String], set: &BTreeMap<String, String>) -> Vec<Edit> {
    let removals = remove.iter().map(|name| Edit::remove_header(name));
    let sets = set
        .iter()
        .map(|(name, value)| Edit::set_header(name, value));
    removals.chain(sets).collect()
}

/// The fields of a `map_local` or `status` answer: the rule's response
/// headers and `X-Proxlet: outcome`.
fn answer_headers(config: &RuleConfig, outcome: &str) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in &config.set_response_headers {
        set_header(&mut headers, name, value);
    }
    set_header(&mut headers, "x-proxlet", outcome);
    headers
}

impl Rule {
    fn new(config: RuleConfig) -> Result<Self, String> {
        let filter = config
            .filter
            .as_deref()
            .map(Filter::parse)
            .transpose()
            .map_err(|e| {
                format!(
                    "filter {:?}: {e}",
                    config.filter.as_deref().unwrap_or_default()
                )
            })?;
        let host = config.host.as_deref().map(|h| glob(h, true)).transpose()?;
        let path = match (&config.path, &config.path_regex) {
            (Some(_), Some(_)) => return Err("give path or path_regex, not both".into()),
            (Some(p), None) => Some(glob(p, false)?),
            (None, Some(re)) => Some(Regex::new(re).map_err(|e| format!("path_regex: {e}"))?),
            (None, None) => None,
        };
        let substitutions = config
            .replace
            .iter()
            .map(|s| {
                Regex::new(&s.pattern)
                    .map(|re| (re, s.with.clone()))
                    .map_err(|e| format!("replace pattern {:?}: {e}", s.pattern))
            })
            .collect::<Result<_, _>>()?;
        if config.status.is_some_and(|s| !(100..=999).contains(&s)) {
            return Err(format!("status {:?} is not an HTTP status", config.status));
        }
        let answer = match (&config.map_local, config.status) {
            (Some(path), _) if !path.starts_with('/') => {
                return Err(
                    "map_local must be a path under a granted dir (e.g. /local/app.js)".into(),
                )
            }
            (Some(path), status) => Some(Response {
                status: status.unwrap_or(200),
                headers: answer_headers(&config, "replace;map-local"),
                body: Body::File(path.clone()),
            }),
            (None, Some(status)) => Some(text_response(
                status,
                answer_headers(&config, "replace;status"),
                config.body.as_deref().unwrap_or_default(),
            )),
            (None, None) => None,
        };
        let mut request_edits =
            header_edits(&config.remove_request_headers, &config.set_request_headers);
        if config.anticache {
            request_edits.push(Edit::remove_header("if-none-match"));
            request_edits.push(Edit::remove_header("if-modified-since"));
        }
        if config.anticomp {
            request_edits.push(Edit::set_header("accept-encoding", "identity"));
        }
        Ok(Self {
            filter,
            host,
            path,
            method: config.method.as_ref().map(|m| m.to_ascii_uppercase()),
            answer,
            request_edits,
            delay_ms: config.delay_ms.unwrap_or(0),
            response_edits: header_edits(
                &config.remove_response_headers,
                &config.set_response_headers,
            ),
            substitutions,
        })
    }

    /// Whether matching on the request can change anything.
    fn acts_on_request(&self) -> bool {
        self.answer.is_some() || !self.request_edits.is_empty() || self.delay_ms > 0
    }

    /// Whether matching on the response can change anything.
    fn acts_on_response(&self) -> bool {
        !self.response_edits.is_empty() || !self.substitutions.is_empty()
    }

    fn matches(&self, exchange: &Exchange<'_>) -> bool {
        let url = exchange.url();
        let Some((_, host, _, path_and_query)) = url_parts(url) else {
            return false;
        };
        let path = path_and_query.split('?').next().unwrap_or_default();
        self.method.as_ref().is_none_or(|m| m == exchange.method())
            && self.host.as_ref().is_none_or(|re| re.is_match(host))
            && self.path.as_ref().is_none_or(|re| re.is_match(path))
            && self.filter.as_ref().is_none_or(|f| {
                f.matches(&Flow {
                    method: exchange.method(),
                    url,
                    host,
                    request_headers: &exchange.request_fields,
                    response: exchange
                        .response
                        .as_ref()
                        .map(|r| (r.status(), &r.fields as &dyn Fields)),
                    ..Flow::default()
                })
            })
    }
}

/// A request, and its response once there is one, as the rules of one hook
/// call see it: each part is read from the host the first time a rule
/// tests it, then kept for the next rule.
struct Exchange<'a> {
    request: &'a RequestHead,
    url: OnceCell<String>,
    method: OnceCell<String>,
    request_fields: LazyFields<'a, RequestHead>,
    response: Option<ResponseSeen<'a>>,
}

/// The response part of an [`Exchange`].
struct ResponseSeen<'a> {
    head: &'a ResponseHead,
    status: OnceCell<u16>,
    fields: LazyFields<'a, ResponseHead>,
}

impl<'a> Exchange<'a> {
    fn new(request: &'a RequestHead, response: Option<&'a ResponseHead>) -> Self {
        Self {
            request,
            url: OnceCell::new(),
            method: OnceCell::new(),
            request_fields: LazyFields::new(request, RequestHead::headers),
            response: response.map(|head| ResponseSeen {
                head,
                status: OnceCell::new(),
                fields: LazyFields::new(head, ResponseHead::headers),
            }),
        }
    }

    fn url(&self) -> &str {
        self.url.get_or_init(|| self.request.url())
    }

    fn method(&self) -> &str {
        self.method.get_or_init(|| self.request.method())
    }
}

impl ResponseSeen<'_> {
    fn status(&self) -> u16 {
        *self.status.get_or_init(|| self.head.status())
    }
}

/// A head's header fields, copied from the host only when a filter tests
/// them (`~h`, `~t`, `~a`): most rules never do.
struct LazyFields<'a, H> {
    head: &'a H,
    read: fn(&H) -> Headers,
    fields: OnceCell<Headers>,
}

impl<'a, H> LazyFields<'a, H> {
    fn new(head: &'a H, read: fn(&H) -> Headers) -> Self {
        Self {
            head,
            read,
            fields: OnceCell::new(),
        }
    }
}

impl<H> Fields for LazyFields<'_, H> {
    fn any_field(&self, test: &mut dyn FnMut(&str, &[u8]) -> bool) -> bool {
        self.fields
            .get_or_init(|| (self.read)(self.head))
            .any_field(test)
    }
}

/// A glob (`*` any run, `?` one character) as an anchored regex; for hosts,
/// `*.example.com` also matches `example.com` and matching ignores case.
fn glob(pattern: &str, host: bool) -> Result<Regex, String> {
    let mut re = String::from(if host { "(?i)^" } else { "^" });
    let body = match pattern.strip_prefix("*.") {
        Some(rest) if host => {
            re.push_str("(.*\\.)?");
            rest
        }
        _ => pattern,
    };
    for c in body.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex_lite::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| format!("glob {pattern:?}: {e}"))
}

proxlet_plugin::export!(Replace);
