//! Which recording answers a request under server replay: the matching key
//! and the store of recordings, with mitmproxy's `serverplayback` semantics.
//! Pure data and functions (no IO), shared by recorded flows and live requests.
//!
//! mitmproxy keys a request on its scheme, method and path, its body (unless
//! `server_replay_ignore_content`), host and port (unless ignored), its
//! decoded query parameters (unless ignored) and the values of the
//! `server_replay_use_headers` fields. Recordings with one key answer in
//! recorded order, each once, unless `server_replay_reuse`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use bytes::Bytes;

use crate::{
    config::ServerReplaySettings,
    flows::{Flow, Response},
};

/// The parts of a request that server replay compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRules {
    /// Leave the query string out (`--server-replay-ignore params`).
    pub ignore_params: bool,
    /// Leave the body out (`--server-replay-ignore payload` or `content`).
    pub ignore_body: bool,
    /// Leave the host out (`--server-replay-ignore host`).
    pub ignore_host: bool,
    /// Leave the port out (`--server-replay-ignore port`).
    pub ignore_port: bool,
    /// Lower-case names of request fields whose values must match too.
    pub use_headers: Vec<String>,
}

impl MatchRules {
    pub fn new(settings: &ServerReplaySettings) -> Self {
        Self {
            ignore_params: settings.ignore_params,
            // mitmproxy's `ignore_payload_params` drops named form fields;
            // proxlet's `payload` takes the whole body out, like `content`.
            ignore_body: settings.ignore_payload || settings.ignore_content,
            ignore_host: settings.ignore_host,
            ignore_port: settings.ignore_port,
            use_headers: settings.use_headers.clone(),
        }
    }

    /// The key of a request for `url` (everything but the body), or `None`
    /// when `url` is not an absolute `http` or `https` URL. `field` gives a
    /// request field's value, several lines joined with `, ` as mitmproxy's
    /// `headers.get` does (RFC 9110 §5.3).
    pub fn key(
        &self,
        method: &str,
        url: &str,
        field: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Option<RequestKey> {
        let url = UrlParts::parse(url)?;
        let query = (!self.ignore_params).then(|| {
            // mitmproxy: `parse_qsl(query, keep_blank_values=True)`, so `a=%41`
            // and `a=A` match, and `a` matches `a=`.
            form_urlencoded::parse(url.query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        });
        Some(RequestKey {
            scheme: url.scheme,
            method: method.to_owned(),
            path: url.path.to_owned(),
            host: (!self.ignore_host).then_some(url.host),
            port: (!self.ignore_port).then_some(url.port),
            query,
            fields: self
                .use_headers
                .iter()
                .map(|name| (name.clone(), field(name)))
                .collect(),
        })
    }

    /// The key of a recorded request.
    pub fn flow_key(&self, flow: &Flow) -> Option<RequestKey> {
        self.key(&flow.request.method, &flow.request.url, |name| {
            joined(
                flow.request
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| &h.value[..]),
            )
        })
    }
}

/// A field's lines joined with `, `, or `None` when it is absent.
pub fn joined<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for value in values {
        match &mut out {
            Some(out) => {
                out.extend_from_slice(b", ");
                out.extend_from_slice(value);
            }
            None => out = Some(value.to_vec()),
        }
    }
    out
}

/// Everything server replay compares of a request but its body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    scheme: String,
    method: String,
    path: String,
    host: Option<String>,
    port: Option<u16>,
    query: Option<Vec<(String, String)>>,
    fields: Vec<(String, Option<Vec<u8>>)>,
}

/// An absolute URL cut into what matching uses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UrlParts<'a> {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower case, without the brackets of an IPv6 literal.
    pub host: String,
    /// Given, or the scheme's default.
    pub port: u16,
    /// `/` when the URL has none (what a client sends for it).
    pub path: &'a str,
    /// After `?`, before `#`; empty when none.
    pub query: &'a str,
}

impl<'a> UrlParts<'a> {
    pub fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        // RFC 9110 §4.2.4: userinfo is not part of what is addressed.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some(port) if !port.is_empty() => port.parse().ok()?,
            _ => default_port,
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: if path.is_empty() { "/" } else { path },
            query,
        })
    }
}

/// A recorded response that may answer requests.
#[derive(Debug)]
pub struct Recording {
    /// Where it came from, for logs: `FILE #ID`.
    pub source: String,
    /// The recorded request's body (raw, as sent), compared unless ignored.
    pub request_body: Bytes,
    /// The response, its body whole.
    pub response: Response,
    /// When the response head arrived (µs since the epoch), for refreshing
    /// its dates; `None` when the recording does not say.
    pub recorded_at: Option<i64>,
}

/// Why a request found no recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Nothing was recorded for it.
    NotRecorded,
    /// Its recordings have all answered earlier requests.
    UsedUp,
}

/// The recordings by key, consumed as they answer.
#[derive(Debug)]
pub struct Recordings {
    rules: MatchRules,
    reuse: bool,
    by_key: HashMap<RequestKey, VecDeque<Arc<Recording>>>,
    /// The longest request body among the recordings, when bodies count:
    /// a longer request cannot match and need not be read whole.
    longest_body: usize,
    count: usize,
}

impl Recordings {
    pub fn new(rules: MatchRules, reuse: bool) -> Self {
        Self {
            rules,
            reuse,
            by_key: HashMap::new(),
            longest_body: 0,
            count: 0,
        }
    }

    pub fn rules(&self) -> &MatchRules {
        &self.rules
    }

    /// Recordings loaded (used or not).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The longest request body that can match a recording.
    pub fn longest_body(&self) -> usize {
        self.longest_body
    }

    /// Adds `flow` (from `source`) after those added before; the reason
    /// when it cannot answer requests.
    pub fn add(&mut self, flow: Flow, source: String) -> Result<(), String> {
        let Some(response) = &flow.response else {
            return Err(match &flow.error {
                Some(error) => format!("it has no response ({error})"),
                None => "it has no response".into(),
            });
        };
        let body = &response.body;
        if body.truncated || body.data.len() as u64 != body.size {
            return Err(format!(
                "its response body was recorded cut short ({} of {} bytes; raise --flow-body-max when recording), and a partial body must not be served as whole",
                body.data.len(),
                body.size
            ));
        }
        let request_body = &flow.request.body;
        if !self.rules.ignore_body && request_body.truncated {
            return Err(format!(
                "its request body was recorded cut short ({} of {} bytes), so requests cannot be compared with it (raise --flow-body-max when recording, or pass --server-replay-ignore payload)",
                request_body.data.len(),
                request_body.size
            ));
        }
        let Some(key) = self.rules.flow_key(&flow) else {
            return Err(format!(
                "its URL {:?} is not an absolute http(s) URL",
                flow.request.url
            ));
        };
        if !self.rules.ignore_body {
            self.longest_body = self.longest_body.max(request_body.data.len());
        }
        let recorded_at = flow.timings.response_start;
        let Flow {
            request, response, ..
        } = flow;
        let recording = Recording {
            source,
            request_body: request.body.data,
            response: response.unwrap_or_default(),
            recorded_at,
        };
        self.by_key
            .entry(key)
            .or_default()
            .push_back(Arc::new(recording));
        self.count += 1;
        Ok(())
    }

    /// Whether a recording with `key` is left, whatever its body.
    pub fn has_candidates(&self, key: &RequestKey) -> bool {
        self.by_key.get(key).is_some_and(|q| !q.is_empty())
    }

    /// The recording that answers a request with `key` and `body`: the
    /// first recorded one that matches, removed unless recordings are reused.
    pub fn take(&mut self, key: &RequestKey, body: &[u8]) -> Result<Arc<Recording>, Miss> {
        let Some(queue) = self.by_key.get_mut(key) else {
            return Err(Miss::NotRecorded);
        };
        let ignore_body = self.rules.ignore_body;
        let found = queue
            .iter()
            .position(|r| ignore_body || r.request_body[..] == *body);
        match found {
            Some(i) if self.reuse => Ok(queue[i].clone()),
            Some(i) => queue.remove(i).ok_or(Miss::UsedUp),
            // Everything recorded under this key has answered already.
            None if queue.is_empty() => Err(Miss::UsedUp),
            None => Err(Miss::NotRecorded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body, Header, Request};

    fn flow(method: &str, url: &str, body: &[u8], answer: &str) -> Flow {
        Flow {
            request: Request {
                method: method.into(),
                url: url.into(),
                headers: vec![Header::new("Accept", "text/html")],
                body: Body::whole(body.to_vec()),
                ..Request::default()
            },
            response: Some(Response {
                status: 200,
                body: Body::whole(answer.as_bytes().to_vec()),
                ..Response::default()
            }),
            ..Flow::default()
        }
    }

    fn recorded(rules: MatchRules, reuse: bool, flows: Vec<Flow>) -> Recordings {
        let mut store = Recordings::new(rules, reuse);
        for (i, flow) in flows.into_iter().enumerate() {
            store.add(flow, format!("test #{i}")).unwrap();
        }
        store
    }

    fn ask(store: &mut Recordings, method: &str, url: &str, body: &[u8]) -> Result<String, Miss> {
        ask_with(store, method, url, body, &[])
    }

    fn ask_with(
        store: &mut Recordings,
        method: &str,
        url: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<String, Miss> {
        let key = store
            .rules()
            .key(method, url, |name| {
                joined(
                    headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_bytes()),
                )
            })
            .ok_or(Miss::NotRecorded)?;
        store
            .take(&key, body)
            .map(|r| String::from_utf8_lossy(&r.response.body.data).into_owned())
    }

    #[test]
    fn same_key_answers_in_recorded_order_then_is_used_up() {
        let mut store = recorded(
            MatchRules::default(),
            false,
            vec![
                flow("GET", "https://a.example/x", b"", "first"),
                flow("GET", "https://a.example/x", b"", "second"),
            ],
        );
        let url = "https://a.example/x";
        assert_eq!(ask(&mut store, "GET", url, b"").as_deref(), Ok("first"));
        assert_eq!(ask(&mut store, "GET", url, b"").as_deref(), Ok("second"));
        assert_eq!(ask(&mut store, "GET", url, b""), Err(Miss::UsedUp));
        assert_eq!(
            ask(&mut store, "GET", "https://a.example/y", b""),
            Err(Miss::NotRecorded)
        );
    }

    #[test]
    fn reuse_answers_every_time_with_the_first_recording() {
        let mut store = recorded(
            MatchRules::default(),
            true,
            vec![
                flow("GET", "https://a.example/x", b"", "first"),
                flow("GET", "https://a.example/x", b"", "second"),
            ],
        );
        for _ in 0..3 {
            assert_eq!(
                ask(&mut store, "GET", "https://a.example/x", b"").as_deref(),
                Ok("first")
            );
        }
    }

    #[test]
    fn scheme_method_path_host_and_port_must_match() {
        let recorded_x = || {
            recorded(
                MatchRules::default(),
                true,
                vec![flow("GET", "https://a.example/x", b"", "x")],
            )
        };
        for (method, url) in [
            ("POST", "https://a.example/x"),
            ("GET", "http://a.example/x"),
            ("GET", "https://a.example/y"),
            ("GET", "https://a.example/X"),
            ("GET", "https://b.example/x"),
            ("GET", "https://a.example:8443/x"),
        ] {
            assert_eq!(
                ask(&mut recorded_x(), method, url, b""),
                Err(Miss::NotRecorded),
                "{method} {url}"
            );
        }
        // The default port, host case, userinfo and fragment change nothing.
        for url in [
            "https://a.example:443/x",
            "https://A.Example/x",
            "https://u@a.example/x",
            "https://a.example/x#top",
        ] {
            assert_eq!(ask(&mut recorded_x(), "GET", url, b"").as_deref(), Ok("x"));
        }
    }

    #[test]
    fn ignoring_host_or_port_matches_other_hosts_or_ports() {
        let rules = MatchRules {
            ignore_host: true,
            ..MatchRules::default()
        };
        let mut store = recorded(
            rules,
            true,
            vec![flow("GET", "https://a.example/x", b"", "x")],
        );
        assert!(ask(&mut store, "GET", "https://b.example/x", b"").is_ok());
        assert!(ask(&mut store, "GET", "https://b.example:8443/x", b"").is_err());

        let rules = MatchRules {
            ignore_port: true,
            ..MatchRules::default()
        };
        let mut store = recorded(
            rules,
            true,
            vec![flow("GET", "https://a.example/x", b"", "x")],
        );
        assert!(ask(&mut store, "GET", "https://a.example:8443/x", b"").is_ok());
        assert!(ask(&mut store, "GET", "https://b.example/x", b"").is_err());
    }

    #[test]
    fn query_parameters_compare_decoded_and_in_order_unless_ignored() {
        let with_query = |rules: MatchRules| {
            recorded(
                rules,
                true,
                vec![flow("GET", "http://h/s?q=a%20b&page=", b"", "x")],
            )
        };
        let mut store = with_query(MatchRules::default());
        assert!(ask(&mut store, "GET", "http://h/s?q=a+b&page", b"").is_ok());
        assert!(ask(&mut store, "GET", "http://h/s?page=&q=a+b", b"").is_err());
        assert!(ask(&mut store, "GET", "http://h/s?q=a+b", b"").is_err());
        assert!(ask(&mut store, "GET", "http://h/s", b"").is_err());

        let mut store = with_query(MatchRules {
            ignore_params: true,
            ..MatchRules::default()
        });
        assert!(ask(&mut store, "GET", "http://h/s", b"").is_ok());
        assert!(ask(&mut store, "GET", "http://h/s?other=1", b"").is_ok());
    }

    #[test]
    fn bodies_pick_among_recordings_of_one_key_unless_ignored() {
        let flows = || {
            vec![
                flow("POST", "http://h/rpc", b"one", "1"),
                flow("POST", "http://h/rpc", b"two", "2"),
            ]
        };
        let mut consumed = recorded(MatchRules::default(), false, flows());
        assert_eq!(
            ask(&mut consumed, "POST", "http://h/rpc", b"two").as_deref(),
            Ok("2")
        );
        assert_eq!(
            ask(&mut consumed, "POST", "http://h/rpc", b"three"),
            Err(Miss::NotRecorded)
        );
        assert_eq!(
            ask(&mut consumed, "POST", "http://h/rpc", b"one").as_deref(),
            Ok("1")
        );
        assert_eq!(
            ask(&mut consumed, "POST", "http://h/rpc", b"one"),
            Err(Miss::UsedUp)
        );

        let rules = MatchRules {
            ignore_body: true,
            ..MatchRules::default()
        };
        let mut ignored = recorded(rules, false, flows());
        assert_eq!(
            ask(&mut ignored, "POST", "http://h/rpc", b"anything").as_deref(),
            Ok("1")
        );
        assert_eq!(
            ask(&mut ignored, "POST", "http://h/rpc", b"").as_deref(),
            Ok("2")
        );
    }

    #[test]
    fn used_headers_must_match_and_absent_matches_absent() {
        let rules = MatchRules {
            use_headers: vec!["accept".into(), "x-absent".into()],
            ..MatchRules::default()
        };
        let mut store = recorded(rules, true, vec![flow("GET", "http://h/x", b"", "html")]);
        let url = "http://h/x";
        assert!(ask_with(&mut store, "GET", url, b"", &[("accept", "text/html")]).is_ok());
        assert!(ask_with(
            &mut store,
            "GET",
            url,
            b"",
            &[("Accept", "application/json")]
        )
        .is_err());
        assert!(ask(&mut store, "GET", url, b"").is_err());
        assert!(ask_with(
            &mut store,
            "GET",
            url,
            b"",
            &[("accept", "text/html"), ("x-absent", "1")]
        )
        .is_err());
    }

    #[test]
    fn recordings_that_cannot_answer_say_why() {
        let mut store = Recordings::new(MatchRules::default(), false);
        let mut no_response = flow("GET", "http://h/x", b"", "");
        no_response.response = None;
        no_response.error = Some("connection refused".into());
        let why = store.add(no_response, "f #1".into()).unwrap_err();
        assert!(why.contains("no response (connection refused)"), "{why}");

        let mut cut = flow("GET", "http://h/x", b"", "0123");
        if let Some(r) = cut.response.as_mut() {
            r.body.size = 10;
            r.body.truncated = true;
        }
        let why = store.add(cut, "f #2".into()).unwrap_err();
        assert!(why.contains("4 of 10 bytes"), "{why}");

        let mut cut_request = flow("POST", "http://h/x", b"0123", "ok");
        cut_request.request.body.size = 10;
        cut_request.request.body.truncated = true;
        let why = store.add(cut_request.clone(), "f #3".into()).unwrap_err();
        assert!(why.contains("--server-replay-ignore payload"), "{why}");
        // Without bodies in the key, its request body does not matter.
        let mut ignoring = Recordings::new(
            MatchRules {
                ignore_body: true,
                ..MatchRules::default()
            },
            false,
        );
        assert!(ignoring.add(cut_request, "f #3".into()).is_ok());

        let why = store
            .add(flow("GET", "ftp://h/x", b"", "x"), "f #4".into())
            .unwrap_err();
        assert!(why.contains("not an absolute http(s) URL"), "{why}");
        assert!(store.is_empty());
    }

    #[test]
    fn urls_split_into_what_matching_uses() {
        let parts = UrlParts::parse("HTTPS://[::1]:8443/a%2Fb?x=1#f").unwrap();
        assert_eq!(
            parts,
            UrlParts {
                scheme: "https".into(),
                host: "::1".into(),
                port: 8443,
                path: "/a%2Fb",
                query: "x=1",
            }
        );
        let bare = UrlParts::parse("http://h?q").unwrap();
        assert_eq!((bare.path, bare.query, bare.port), ("/", "q", 80));
        assert!(UrlParts::parse("/relative").is_none());
        assert!(UrlParts::parse("http://h:port/").is_none());
        assert!(UrlParts::parse("http:///x").is_none());
    }
}
