//! What the benches in benches/ share: one `on-response` through the
//! pipeline's on-response step (`proxlet::flow::on_response`) for a fixed
//! request and response, on a current-thread runtime.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, Uri};
use proxlet::{
    flow::{self, Notes},
    plugin::{Chain, Flow, PluginEngine, PluginSpec, RequestView},
};

pub struct OnResponse {
    runtime: tokio::runtime::Runtime,
    engine: std::sync::Arc<PluginEngine>,
    uri: Uri,
    sent: RequestView,
    flow: Flow,
}

impl OnResponse {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let uri: Uri = "https://example.com/static/app.js".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("accept", "*/*".parse().unwrap());
        headers.insert("user-agent", "bench/1".parse().unwrap());
        Self {
            runtime,
            engine: PluginEngine::new(None).unwrap(),
            sent: RequestView {
                method: Method::GET,
                uri: uri.clone(),
                headers,
            },
            uri,
            flow: Flow::new(1, true, "127.0.0.1:1".parse().unwrap()),
        }
    }

    /// The chain of the one component at `path`.
    pub fn load(&self, path: &str) -> Chain {
        let specs = [PluginSpec::from_path(path.into())];
        self.runtime
            .block_on(Chain::load(&self.engine, &specs))
            .unwrap()
    }

    /// One call through `chain`.
    pub fn call(&mut self, chain: &Chain) {
        self.runtime.block_on(async {
            let plugins = chain.for_flow(&Method::GET, &self.uri);
            let mut response = Response::new(proxlet::proxy::body::full(Bytes::from_static(b"x")));
            let headers = response.headers_mut();
            headers.insert("content-type", "text/javascript".parse().unwrap());
            headers.insert("etag", "\"abc\"".parse().unwrap());
            let mut notes = Notes::new(false);
            let (sent, flow) = (&mut self.sent, &self.flow);
            flow::on_response(&plugins, flow, sent, response, &mut notes, Vec::new()).await
        });
    }
}

impl Default for OnResponse {
    fn default() -> Self {
        Self::new()
    }
}
