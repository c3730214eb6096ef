//! One `on-response` hook call through the pipeline's on-response step
//! (`proxlet::flow::on_response`), on a reused instance, with the Rust
//! example plugin (`PROXLET_BENCH_PLUGIN`), against the same step with no
//! plugin.

use criterion::{criterion_group, criterion_main, Criterion};
use proxlet::plugin::Chain;
use proxlet_micro::OnResponse;

fn hook_call(c: &mut Criterion) {
    let path = std::env::var("PROXLET_BENCH_PLUGIN")
        .expect("PROXLET_BENCH_PLUGIN=path/to/rust_hello.wasm");
    let mut step = OnResponse::new();
    let with_plugin = step.load(&path);
    let without = Chain::default();

    let mut group = c.benchmark_group("on-response");
    for (name, chain) in [("rust-hello", &with_plugin), ("no plugin", &without)] {
        group.bench_function(name, |b| b.iter(|| step.call(chain)));
    }
    group.finish();
}

criterion_group!(benches, hook_call);
criterion_main!(benches);
