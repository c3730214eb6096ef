//! mitmproxy filter expressions evaluated on flows in the host. The parser
//! and the tests themselves are the plugin SDK's (`plugins/sdk/src/filter.rs`),
//! compiled in here, so a filter means the same in a plugin and on a flow file.

use std::borrow::Cow;

#[path = "../../../plugins/sdk/src/filter.rs"]
#[allow(dead_code)] // the SDK's unit tests and helpers a guest uses
mod expr;

pub use expr::{Filter, FilterError};

use super::{Flow, Header};

impl expr::Fields for Vec<Header> {
    fn any_field(&self, test: &mut dyn FnMut(&str, &[u8]) -> bool) -> bool {
        self.iter().any(|h| test(&h.name, &h.value))
    }
}

/// Whether `flow` matches `filter`. Bodies are decoded (gzip, br, zstd,
/// deflate) only when the filter tests them.
pub fn matches(filter: &Filter, flow: &Flow) -> bool {
    let bodies = filter.uses_bodies();
    let request_body = bodies.then(|| decoded(&flow.request.headers, &flow.request.body.data));
    let response_body = flow
        .response
        .as_ref()
        .filter(|_| bodies)
        .map(|r| decoded(&r.headers, &r.body.data));
    let (client, server) = (
        flow.client.map(|a| a.to_string()).unwrap_or_default(),
        flow.server.map(|a| a.to_string()).unwrap_or_default(),
    );
    filter.matches(&expr::Flow {
        method: &flow.request.method,
        url: &flow.request.url,
        host: flow.host(),
        request_headers: &flow.request.headers,
        response: flow
            .response
            .as_ref()
            .map(|r| (r.status, &r.headers as &dyn expr::Fields)),
        request_body: request_body.as_deref(),
        response_body: response_body.as_deref(),
        error: flow.error.is_some(),
        client: &client,
        server: &server,
        marked: flow.marked,
        comment: &flow.comment,
        websocket: flow.websocket.is_some(),
    })
}

/// The message's content codings (all `Content-Encoding` fields, joined),
/// or `None` when there is none but `identity`.
pub fn content_coding(headers: &[Header]) -> Option<String> {
    let coding = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let real = coding
        .split(',')
        .any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"));
    real.then_some(coding)
}

/// Largest decoded view of a body (a captured body is at most
/// `--flow-body-max`; this bounds what a small bomb may become).
pub const DECODED_MAX: usize = 64 << 20;

/// A body without its content codings; the bytes as they are when a coding
/// is unknown or the data does not decode (a truncated capture).
pub fn decoded<'a>(headers: &[Header], data: &'a [u8]) -> Cow<'a, [u8]> {
    let Some(coding) = content_coding(headers).filter(|_| !data.is_empty()) else {
        return Cow::Borrowed(data);
    };
    match crate::proxy::encoding::decode(Some(&coding), data, DECODED_MAX) {
        Ok(plain) => Cow::Owned(plain),
        Err(_) => Cow::Borrowed(data),
    }
}
