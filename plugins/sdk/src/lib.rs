//! The Rust guest SDK for proxlet plugins: bindings generated from `wit/`,
//! a [`Plugin`] trait with defaults for every hook, edits, a typed config
//! helper, and header/URL helpers.
//!
//! Heads are host handles: read only what you need (`request.url()`,
//! `response.header("etag")`), and answer with edits, not heads.
//!
//! ```ignore
//! use proxlet_plugin::{Edit, FlowInfo, Hooks, Plugin, RequestHead, ResponseAction, ResponseHead};
//! struct Hello;
//! impl Plugin for Hello {
//!     const HOOKS: Hooks = Hooks::ON_RESPONSE;
//!     fn new(_config: &str) -> Result<Self, String> { Ok(Hello) }
//!     fn on_response(&mut self, _: &FlowInfo, _: &RequestHead, _: &ResponseHead) -> ResponseAction {
//!         ResponseAction::Continue(vec![Edit::set_header("x-hello", "world")])
//!     }
//! }
//! proxlet_plugin::export!(Hello);
//! ```

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin-websocket",
        pub_export_macro: true,
        default_bindings_module: "proxlet_plugin::bindings",
    });
}

pub mod accept;
pub mod cachepath;
#[cfg(feature = "filter")]
pub mod filter;
pub mod tree;

use std::{any::Any, cell::RefCell};

use bindings::exports::proxlet::plugin::{
    error_hooks, lifecycle, request_hooks, response_hooks, websocket_hooks,
};
pub use bindings::exports::proxlet::plugin::websocket_hooks::{
    Injected, Message, MessageAction, MessageDecision, Payload,
};
pub use bindings::proxlet::plugin::host::log as host_log;
pub use bindings::proxlet::plugin::types::{
    Body, Delay, Edit, ErrorKind, Field, Fill, FlowInfo, Headers, Hooks, Level, RequestAction,
    RequestBodyAction, RequestHead, Response, ResponseAction, ResponseBodyAction, ResponseHead,
    Sidecar, Store, UpstreamError,
};

/// A plugin. `new` runs once per instance with the JSON config; the hooks
/// named in `HOOKS` are the only ones the host calls.
pub trait Plugin: Sized + 'static {
    /// The hooks this plugin implements.
    const HOOKS: Hooks;

    /// Builds the plugin from its JSON config (`{}` when none).
    fn new(config: &str) -> Result<Self, String>;

    fn on_request(&mut self, _flow: &FlowInfo, _request: &RequestHead) -> RequestAction {
        RequestAction::Continue(Vec::new())
    }

    fn on_request_body(
        &mut self,
        _flow: &FlowInfo,
        _request: &RequestHead,
        _body: Vec<u8>,
    ) -> RequestBodyAction {
        RequestBodyAction::Continue
    }

    fn on_response(
        &mut self,
        _flow: &FlowInfo,
        _request: &RequestHead,
        _response: &ResponseHead,
    ) -> ResponseAction {
        ResponseAction::Continue(Vec::new())
    }

    fn on_response_body(
        &mut self,
        _flow: &FlowInfo,
        _request: &RequestHead,
        _response: &ResponseHead,
        _body: Vec<u8>,
    ) -> ResponseBodyAction {
        ResponseBodyAction::Continue
    }

    fn on_error(
        &mut self,
        _flow: &FlowInfo,
        _request: &RequestHead,
        _error: &UpstreamError,
    ) -> Option<Response> {
        None
    }

    /// Whether this plugin wants the messages of the WebSocket `request`
    /// asks for (the host then calls [`on_websocket_message`](Self::on_websocket_message)
    /// for each). None by default.
    fn on_websocket_open(&mut self, _flow: &FlowInfo, _request: &RequestHead) -> bool {
        false
    }

    /// One message of a WebSocket this plugin wanted.
    fn on_websocket_message(&mut self, _flow: &FlowInfo, _message: Message) -> MessageDecision {
        MessageDecision::pass()
    }
}

thread_local! {
    /// The one plugin value of this instance (components are single-threaded).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with<P: Plugin, R>(default: R, f: impl FnOnce(&mut P) -> R) -> R {
    STATE.with(|state| {
        match state
            .borrow_mut()
            .as_mut()
            .and_then(|b| b.downcast_mut::<P>())
        {
            Some(plugin) => f(plugin),
            None => default,
        }
    })
}

/// Adapts a [`Plugin`] to the generated export traits; used by [`export!`].
#[doc(hidden)]
pub struct Exports<P>(std::marker::PhantomData<P>);

impl<P: Plugin> lifecycle::Guest for Exports<P> {
    fn init(config: String) -> Result<Hooks, String> {
        let plugin = P::new(&config)?;
        STATE.with(|state| *state.borrow_mut() = Some(Box::new(plugin)));
        Ok(P::HOOKS)
    }
}

impl<P: Plugin> request_hooks::Guest for Exports<P> {
    fn on_request(flow: FlowInfo, request: &RequestHead) -> RequestAction {
        with::<P, _>(RequestAction::Continue(Vec::new()), |p| {
            p.on_request(&flow, request)
        })
    }

    fn on_request_body(flow: FlowInfo, request: &RequestHead, body: Vec<u8>) -> RequestBodyAction {
        with::<P, _>(RequestBodyAction::Continue, |p| {
            p.on_request_body(&flow, request, body)
        })
    }
}

impl<P: Plugin> response_hooks::Guest for Exports<P> {
    fn on_response(flow: FlowInfo, request: &RequestHead, response: &ResponseHead) -> ResponseAction {
        with::<P, _>(ResponseAction::Continue(Vec::new()), |p| {
            p.on_response(&flow, request, response)
        })
    }

    fn on_response_body(
        flow: FlowInfo,
        request: &RequestHead,
        response: &ResponseHead,
        body: Vec<u8>,
    ) -> ResponseBodyAction {
        with::<P, _>(ResponseBodyAction::Continue, |p| {
            p.on_response_body(&flow, request, response, body)
        })
    }
}

impl<P: Plugin> error_hooks::Guest for Exports<P> {
    fn on_error(flow: FlowInfo, request: &RequestHead, error: UpstreamError) -> Option<Response> {
        with::<P, _>(None, |p| p.on_error(&flow, request, &error))
    }
}

impl<P: Plugin> websocket_hooks::Guest for Exports<P> {
    fn on_websocket_open(flow: FlowInfo, request: &RequestHead) -> bool {
        with::<P, _>(false, |p| p.on_websocket_open(&flow, request))
    }

    fn on_websocket_message(flow: FlowInfo, message: Message) -> MessageDecision {
        with::<P, _>(MessageDecision::pass(), |p| {
            p.on_websocket_message(&flow, message)
        })
    }
}

impl MessageDecision {
    /// The message goes on as it is.
    pub fn pass() -> Self {
        Self::with(MessageAction::Pass)
    }

    /// Nothing goes on.
    pub fn drop() -> Self {
        Self::with(MessageAction::Drop)
    }

    /// `payload` goes on instead of the message.
    pub fn replace(payload: Payload) -> Self {
        Self::with(MessageAction::Replace(payload))
    }

    fn with(action: MessageAction) -> Self {
        Self {
            action,
            inject: Vec::new(),
        }
    }

    /// Also sends `payload` to the client (`to_client`) or to the server,
    /// after the message.
    pub fn inject(mut self, to_client: bool, payload: Payload) -> Self {
        self.inject.push(Injected { to_client, payload });
        self
    }
}

impl Payload {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: true,
            data: text.into().into_bytes(),
        }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Vec<u8>>) -> Self {
        Self {
            text: false,
            data: data.into(),
        }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as the component's hooks.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        type __ProxletExports = $crate::Exports<$plugin>;
        $crate::bindings::export!(__ProxletExports with_types_in $crate::bindings);
    };
}

/// Logs through the host at `level`.
pub fn log(level: Level, message: &str) {
    host_log(level, message);
}

/// The first value of header `name` (case-insensitive) as text.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Replaces every `name` field with one `name: value`.
pub fn set_header(headers: &mut Headers, name: &str, value: &str) {
    remove_header(headers, name);
    headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
}

/// Removes every `name` field.
pub fn remove_header(headers: &mut Headers, name: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

/// The parts of an absolute URL: scheme, host, port (if explicit), path with query.
pub fn url_parts(url: &str) -> Option<(&str, &str, Option<u16>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse().ok()?)),
        _ => (authority, None),
    };
    Some((scheme, host, port, if path.is_empty() { "/" } else { path }))
}

/// A response of `status` with `headers` and a text body.
pub fn text_response(status: u16, headers: Headers, text: &str) -> Response {
    let mut headers = headers;
    if header(&headers, "content-type").is_none() {
        headers.push(("content-type".into(), b"text/plain; charset=utf-8".to_vec()));
    }
    Response {
        status,
        headers,
        body: Body::Bytes(text.as_bytes().to_vec()),
    }
}

/// Whether header `name` is present.
pub fn has_header(headers: &Headers, name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The comma-separated tokens of every `name` field, trimmed and lowercase
/// (e.g. `Vary`, `Cache-Control` directives).
pub fn header_tokens(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Parses the plugin's JSON config into `T` (`{}` when none was given), with
/// an error that names the problem.
///
/// ```ignore
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default)]
/// struct Config { greeting: String }
/// let config: Config = proxlet_plugin::config(json)?;
/// ```
#[cfg(feature = "config")]
pub fn config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("bad config: {e}"))
}

#[cfg(feature = "config")]
pub use serde;

impl Edit {
    /// Replaces every field `name` with `name: value`.
    pub fn set_header(name: &str, value: impl AsRef<[u8]>) -> Self {
        Edit::SetHeader(Field {
            name: name.to_owned(),
            value: value.as_ref().to_vec(),
        })
    }

    /// Adds `name: value`, keeping other fields of that name.
    pub fn append_header(name: &str, value: impl AsRef<[u8]>) -> Self {
        Edit::AppendHeader(Field {
            name: name.to_owned(),
            value: value.as_ref().to_vec(),
        })
    }

    /// Removes every field `name`.
    pub fn remove_header(name: &str) -> Self {
        Edit::RemoveHeader(name.to_owned())
    }
}

impl RequestHead {
    /// The first value of header `name` as text (none when absent, hidden or
    /// not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }
}

impl ResponseHead {
    /// The first value of header `name` as text (none when absent, hidden or
    /// not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }
}
