//! One `on-response` hook call through the pipeline's on-response step, for
//! several plugins in alternating short rounds, so that a machine whose
//! speed drifts (shared cores) is compared at the same moments:
//!
//!   PROXLET_AB_PLUGINS=none:a.wasm:b.wasm cargo bench --bench hook_ab
//!
//! `none` is the chain without a plugin. Prints each one's median µs a call
//! over the rounds and the median of its per-round difference from the first
//! (ROUNDS, default 40; each round runs every plugin for ~40 ms).

use std::time::Instant;

use proxlet::plugin::Chain;
use proxlet_micro::OnResponse;

fn main() {
    let list = std::env::var("PROXLET_AB_PLUGINS")
        .expect("PROXLET_AB_PLUGINS=none:path/a.wasm:path/b.wasm");
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(40);
    let mut step = OnResponse::new();
    let names: Vec<&str> = list.split(':').collect();
    let chains: Vec<Chain> = names
        .iter()
        .map(|name| match *name {
            "none" => Chain::default(),
            path => step.load(path),
        })
        .collect();
    let mut call = |chain: &Chain, n: u32| {
        let started = Instant::now();
        for _ in 0..n {
            step.call(chain);
        }
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    // Warm up and size each plugin's round to ~40 ms.
    let counts: Vec<u32> = chains
        .iter()
        .map(|chain| {
            call(chain, 200);
            let us = call(chain, 200);
            ((40_000.0 / us) as u32).max(20)
        })
        .collect();
    let mut times = vec![Vec::new(); chains.len()];
    for _ in 0..rounds {
        for (i, chain) in chains.iter().enumerate() {
            times[i].push(call(chain, counts[i]));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, name) in names.iter().enumerate() {
        let diffs = times[i]
            .iter()
            .zip(&times[0])
            .map(|(x, first)| x - first)
            .collect();
        println!(
            "{:>10.3} µs a call, {:>+10.3} µs over the first (medians of {rounds} rounds)  {name}",
            median(times[i].clone()),
            median(diffs),
        );
    }
}
