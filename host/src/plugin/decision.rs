//! What a plugin decided, in the host's terms: each hook's answer converted
//! from the guest's WIT values into the types the flow pipeline
//! (`crate::flow`) carries out. The values are moved, never copied; edits
//! and responses stay opaque until the flow applies them, so the WIT types
//! never leave `plugin/`.

use http::Response;

use super::{
    bindings::types::{
        self, ErrorKind, Hooks, RequestAction, RequestBodyAction, ResponseAction,
        ResponseBodyAction, UpstreamError,
    },
    chain::Flow,
    heads::{self, RequestView},
    instance::LoadedPlugin,
};

/// What `on-request` decided.
pub enum RequestStep {
    /// Go on, after these edits.
    Continue(Edits),
    /// Answer the client with this.
    Respond(PluginResponse),
    /// Wait `ms`, then go on after these edits.
    Delay { ms: u32, edits: Edits },
    /// Apply these edits, then call `on-request-body` with the body.
    NeedBody(Edits),
    /// Go on as the only flow fetching `key`, after these edits.
    Fill { key: String, edits: Edits },
}

/// What `on-request-body` decided.
pub enum RequestBodyStep {
    Continue,
    /// Send these bytes instead.
    Replace(Vec<u8>),
    /// Answer the client with this.
    Respond(PluginResponse),
}

/// What `on-response` decided.
pub enum ResponseStep {
    /// Go on, after these edits.
    Continue(Edits),
    /// Send this instead of the upstream's response.
    Replace(PluginResponse),
    /// Tee the body into the file at guest path `path` (and write
    /// `sidecar` once it is stored); apply these edits.
    Store {
        path: String,
        sidecar: Option<Sidecar>,
        edits: Edits,
    },
    /// Apply these edits, then call `on-response-body` with the body.
    NeedBody(Edits),
}

/// What `on-response-body` decided.
pub enum ResponseBodyStep {
    Continue,
    /// Send these bytes instead.
    Replace(Vec<u8>),
}

/// A small file a plugin has the host write beside a stored body.
pub struct Sidecar {
    /// Guest path under a granted directory.
    pub path: String,
    pub contents: Vec<u8>,
}

/// Head edits a plugin returned, applied in order by the host (`heads.rs`
/// holds the rules: framing fields stay the host's, credentials need the
/// grant). None is free.
#[derive(Default)]
pub struct Edits(Vec<types::Edit>);

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies the edits to a request head; the error says which was bad.
    /// `credentials`: the plugin holds the grant.
    pub fn apply_to_request(
        self,
        parts: &mut http::request::Parts,
        credentials: bool,
    ) -> Result<(), String> {
        heads::edit_request(parts, self.0, credentials)
    }

    /// Applies the edits to a response head; the error says which was bad.
    pub fn apply_to_response(
        self,
        parts: &mut http::response::Parts,
        credentials: bool,
    ) -> Result<(), String> {
        heads::edit_response(parts, self.0, credentials)
    }
}

/// A response a plugin made, as it returned it.
pub struct PluginResponse(types::Response);

/// The body of a plugin's response.
pub enum PluginBody {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The file at this guest path (granted or not: the host checks).
    File(String),
}

impl PluginResponse {
    /// The status the plugin asked for, checked or not.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The response's head — its status checked, its fields those a plugin
    /// may set (`credentials`: it holds the grant) — and its body.
    pub fn into_parts(
        self,
        credentials: bool,
    ) -> Result<(http::response::Parts, PluginBody), String> {
        let types::Response {
            status,
            headers,
            body,
        } = self.0;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = heads::status_code(status)?;
        // The host frames the bodies it builds (Content-Length is not taken).
        parts.headers = heads::made(headers, credentials);
        let body = match body {
            types::Body::Bytes(bytes) => PluginBody::Bytes(bytes),
            types::Body::File(path) => PluginBody::File(path),
        };
        Ok((parts, body))
    }
}

/// An upstream failure as `on-error` plugins see it, made once per flow.
pub struct FailedUpstream(UpstreamError);

impl From<&crate::proxy::upstream::UpstreamError> for FailedUpstream {
    fn from(failed: &crate::proxy::upstream::UpstreamError) -> Self {
        use crate::proxy::upstream::Failure;
        let kind = match failed.kind {
            Failure::Dns => ErrorKind::Dns,
            Failure::Refused => ErrorKind::Refused,
            Failure::Tls => ErrorKind::Tls,
            Failure::Timeout => ErrorKind::Timeout,
            Failure::Client | Failure::Other => ErrorKind::Other,
        };
        Self(UpstreamError {
            kind,
            message: failed.reason.clone(),
        })
    }
}

impl From<RequestAction> for RequestStep {
    fn from(action: RequestAction) -> Self {
        match action {
            RequestAction::Continue(edits) => Self::Continue(Edits(edits)),
            RequestAction::Respond(response) => Self::Respond(PluginResponse(response)),
            RequestAction::Delay(types::Delay { ms, edits }) => Self::Delay {
                ms,
                edits: Edits(edits),
            },
            RequestAction::NeedBody(edits) => Self::NeedBody(Edits(edits)),
            RequestAction::Fill(types::Fill { key, edits }) => Self::Fill {
                key,
                edits: Edits(edits),
            },
        }
    }
}

impl From<RequestBodyAction> for RequestBodyStep {
    fn from(action: RequestBodyAction) -> Self {
        match action {
            RequestBodyAction::Continue => Self::Continue,
            RequestBodyAction::Replace(bytes) => Self::Replace(bytes),
            RequestBodyAction::Respond(response) => Self::Respond(PluginResponse(response)),
        }
    }
}

impl From<ResponseAction> for ResponseStep {
    fn from(action: ResponseAction) -> Self {
        match action {
            ResponseAction::Continue(edits) => Self::Continue(Edits(edits)),
            ResponseAction::Replace(response) => Self::Replace(PluginResponse(response)),
            ResponseAction::Store(types::Store {
                path,
                edits,
                sidecar,
            }) => Self::Store {
                path,
                sidecar: sidecar
                    .map(|types::Sidecar { path, contents }| Sidecar { path, contents }),
                edits: Edits(edits),
            },
            ResponseAction::NeedBody(edits) => Self::NeedBody(Edits(edits)),
        }
    }
}

impl From<ResponseBodyAction> for ResponseBodyStep {
    fn from(action: ResponseBodyAction) -> Self {
        match action {
            ResponseBodyAction::Continue => Self::Continue,
            ResponseBodyAction::Replace(bytes) => Self::Replace(bytes),
        }
    }
}

/// The hook calls the flow makes, each returning the host's type; the
/// error is the plugin's failure, one sentence naming it.
impl LoadedPlugin {
    /// Calls `on-request` on the flow's request head.
    pub async fn request_step(
        &self,
        flow: &Flow,
        request: &mut http::request::Parts,
    ) -> Result<RequestStep, String> {
        self.on_request(flow, request).await.map(RequestStep::from)
    }

    /// Calls `on-request-body` with the decoded request body.
    pub async fn request_body_step(
        &self,
        flow: &Flow,
        request: &mut http::request::Parts,
        body: &[u8],
    ) -> Result<RequestBodyStep, String> {
        self.on_request_body(flow, request, body)
            .await
            .map(RequestBodyStep::from)
    }

    /// Calls `on-response` on the request as sent and the response head.
    pub async fn response_step(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        response: &mut http::response::Parts,
    ) -> Result<ResponseStep, String> {
        self.on_response(flow, request, response)
            .await
            .map(ResponseStep::from)
    }

    /// Calls `on-response-body` with the decoded response body.
    pub async fn response_body_step(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        response: &mut http::response::Parts,
        body: &[u8],
    ) -> Result<ResponseBodyStep, String> {
        self.on_response_body(flow, request, response, body)
            .await
            .map(ResponseBodyStep::from)
    }

    /// Calls `on-error`: the plugin's answer for the failed upstream, if any.
    pub async fn error_answer(
        &self,
        flow: &Flow,
        request: &mut RequestView,
        error: &FailedUpstream,
    ) -> Result<Option<PluginResponse>, String> {
        self.on_error(flow, request, &error.0)
            .await
            .map(|answer| answer.map(PluginResponse))
    }

    /// Whether the plugin has `on-request-body` (for its `need-body`).
    pub fn has_request_body_hook(&self) -> bool {
        self.hooks.contains(Hooks::ON_REQUEST_BODY)
    }

    /// Whether the plugin has `on-response-body` (for its `need-body`).
    pub fn has_response_body_hook(&self) -> bool {
        self.hooks.contains(Hooks::ON_RESPONSE_BODY)
    }
}
