//! The `replace` plugin: rules of `match → actions`, applied in order.
//! Matching: `filter` (mitmproxy syntax), `host` glob, `path` glob,
//! `path_regex`, `method`; all given must hold. Actions: `map_local`
//! (answer with a granted file), `status` (+ `body`: answer with a fixed
//! response), `delay_ms`, request/response header set/remove, `anticache`,
//! `anticomp`, and `replace` (regex over the decoded response body).

use std::collections::BTreeMap;

use proxlet_plugin::{
    filter::{Fields, Filter, Flow},
    remove_header, set_header, text_response, url_parts, Body, Delay, FlowInfo, Headers, Hooks,
    Plugin, RequestAction, RequestHead, Response, ResponseAction, ResponseBodyAction, ResponseHead,
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

struct Rule {
    filter: Option<Filter>,
    host: Option<Regex>,
    path: Option<Regex>,
    method: Option<String>,
    config: RuleConfig,
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
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("replace config: {e}"))?;
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                Rule::new(rule).map_err(|e| format!("replace config: rules[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    fn on_request(&mut self, _: &FlowInfo, head: &RequestHead) -> RequestAction {
        let mut edited = head.clone();
        let mut changed = false;
        let mut delay = 0u32;
        for rule in self.rules.iter().filter(|r| r.matches(head, None)) {
            let config = &rule.config;
            if let Some(path) = &config.map_local {
                let mut headers: Headers = Vec::new();
                set_response_fields(&mut headers, config);
                set_header(&mut headers, "x-proxlet", "replace;map-local");
                return RequestAction::Respond(Response {
                    head: ResponseHead {
                        status: config.status.unwrap_or(200),
                        headers,
                    },
                    body: Body::File(path.clone()),
                });
            }
            if let Some(status) = config.status {
                let mut headers: Headers = Vec::new();
                set_response_fields(&mut headers, config);
                set_header(&mut headers, "x-proxlet", "replace;status");
                return RequestAction::Respond(text_response(
                    status,
                    headers,
                    config.body.as_deref().unwrap_or_default(),
                ));
            }
            for name in &config.remove_request_headers {
                remove_header(&mut edited.headers, name);
            }
            for (name, value) in &config.set_request_headers {
                set_header(&mut edited.headers, name, value);
            }
            if config.anticache {
                remove_header(&mut edited.headers, "if-none-match");
                remove_header(&mut edited.headers, "if-modified-since");
            }
            if config.anticomp {
                set_header(&mut edited.headers, "accept-encoding", "identity");
            }
            changed |= !config.remove_request_headers.is_empty()
                || !config.set_request_headers.is_empty()
                || config.anticache
                || config.anticomp;
            delay = delay.saturating_add(config.delay_ms.unwrap_or(0));
        }
        let edited = changed.then_some(edited);
        if delay > 0 {
            RequestAction::Delay(Delay {
                ms: delay,
                head: edited,
            })
        } else {
            RequestAction::Continue(edited)
        }
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let mut edited = response.clone();
        let mut changed = false;
        let mut need_body = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.matches(request, Some(response)))
        {
            changed |= set_response_fields(&mut edited.headers, &rule.config);
            need_body |= !rule.substitutions.is_empty();
        }
        let edited = changed.then_some(edited);
        if need_body {
            ResponseAction::NeedBody(edited)
        } else {
            ResponseAction::Continue(edited)
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
        let mut changed = false;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.matches(request, Some(response)))
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

/// Applies a rule's response header edits; whether it had any.
fn set_response_fields(headers: &mut Headers, config: &RuleConfig) -> bool {
    for name in &config.remove_response_headers {
        remove_header(headers, name);
    }
    for (name, value) in &config.set_response_headers {
        set_header(headers, name, value);
    }
    !config.remove_response_headers.is_empty() || !config.set_response_headers.is_empty()
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
        if config
            .map_local
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err("map_local must be a path under a granted dir (e.g. /local/app.js)".into());
        }
        Ok(Self {
            filter,
            host,
            path,
            method: config.method.as_ref().map(|m| m.to_ascii_uppercase()),
            config,
            substitutions,
        })
    }

    fn matches(&self, request: &RequestHead, response: Option<&ResponseHead>) -> bool {
        let Some((_, host, _, path_and_query)) = url_parts(&request.url) else {
            return false;
        };
        let path = path_and_query.split('?').next().unwrap_or_default();
        self.method.as_ref().is_none_or(|m| *m == request.method)
            && self.host.as_ref().is_none_or(|re| re.is_match(host))
            && self.path.as_ref().is_none_or(|re| re.is_match(path))
            && self.filter.as_ref().is_none_or(|f| {
                f.matches(&Flow {
                    method: &request.method,
                    url: &request.url,
                    host,
                    request_headers: &request.headers,
                    response: response.map(|r| (r.status, &r.headers as &dyn Fields)),
                    ..Flow::default()
                })
            })
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
