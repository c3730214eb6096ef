//! One `on-response` hook call through the pipeline's on-response step
//! (`proxlet::flow::on_response`), on a reused instance, with the Rust
//! example plugin (`PROXLET_BENCH_PLUGIN`), against the same step with no
//! plugin.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, Response, Uri};
use proxlet::{
    flow::{self, Notes},
    plugin::{Chain, Flow, PluginEngine, PluginSpec, RequestView},
};

fn hook_call(c: &mut Criterion) {
    let path = std::env::var("PROXLET_BENCH_PLUGIN").expect("PROXLET_BENCH_PLUGIN=path/to/rust_hello.wasm");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = PluginEngine::new(None).unwrap();
    let with_plugin = runtime
        .block_on(Chain::load(&engine, &[PluginSpec::from_path(path.into())]))
        .unwrap();
    let without = Chain::default();
    let uri: Uri = "https://example.com/static/app.js".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("accept", "*/*".parse().unwrap());
    headers.insert("user-agent", "bench/1".parse().unwrap());
    let mut sent = RequestView { method: Method::GET, uri: uri.clone(), headers };
    let this_flow = Flow::new(1, true, "127.0.0.1:1".parse().unwrap());

    let mut group = c.benchmark_group("on-response");
    for (name, chain) in [("rust-hello", Arc::new(with_plugin)), ("no plugin", Arc::new(without))] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let plugins = chain.for_flow(&Method::GET, &uri);
                    let mut response = Response::new(proxlet::proxy::body::full(Bytes::from_static(b"x")));
                    response.headers_mut().insert("content-type", "text/javascript".parse().unwrap());
                    response.headers_mut().insert("etag", "\"abc\"".parse().unwrap());
                    let mut notes = Notes::new(false);
                    flow::on_response(&plugins, &this_flow, &mut sent, response, &mut notes, Vec::new()).await
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hook_call);
criterion_main!(benches);
