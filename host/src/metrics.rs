//! Prometheus metrics, served at `/metrics` by the admin listener
//! (`--admin`). Nothing is counted unless that listener is on: every site
//! that records asks [`get`] first, one atomic load. Counters, gauges and
//! histograms are atomics, so a flow takes no lock; the handles of label
//! sets are resolved once (at start-up, or when a plugin loads), never per
//! request.

use std::{
    fmt::{self, Write as _},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use http::{HeaderMap, StatusCode};
use prometheus_client::{
    encoding::{text, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType, TypedMetric},
    registry::Registry,
};

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, when the admin listener is on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Turns counting on (before plugins load, so their handles exist).
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The mode whose series are made up front (the others when first seen).
const MODE: &str = "regular";

/// Status classes, in label order; codes outside 100–599 count as `other`.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// What the cache did for a flow, from the `X-Proxlet` field of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Revalidated,
    Stale,
    Bypass,
    ErrorLink,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Revalidated,
        Outcome::Stale,
        Outcome::Bypass,
        Outcome::ErrorLink,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Revalidated => "revalidated",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
            Outcome::ErrorLink => "error_link",
        }
    }

    /// The outcome the first-party plugins name in `X-Proxlet`
    /// (`cache;hit`, `error-links;hit`, …); none for other values.
    pub fn of(headers: &HeaderMap) -> Option<Outcome> {
        let value = headers.get("x-proxlet")?.as_bytes();
        Some(match value {
            b"cache;hit" => Outcome::Hit,
            // An offline miss is answered 504 by the cache: still a miss.
            b"cache;miss" | b"cache;offline-miss" => Outcome::Miss,
            b"cache;revalidated" => Outcome::Revalidated,
            b"cache;stale" => Outcome::Stale,
            b"cache;bypass" => Outcome::Bypass,
            b"error-links;hit" => Outcome::ErrorLink,
            _ => return None,
        })
    }

    /// Whether the body came from the cache dir rather than the upstream.
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            Outcome::Hit | Outcome::Revalidated | Outcome::Stale | Outcome::ErrorLink
        )
    }
}

/// Where the bytes of a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// Made by proxlet or a plugin (errors, plugin responses, replay).
    #[default]
    Proxy,
    Upstream,
    Cache,
}

/// What an open connection is.
#[derive(Debug, Clone, Copy)]
pub enum Conn {
    /// A client's connection to the listener.
    Client = 0,
    /// A CONNECT tunnel, intercepted or relayed.
    Tunnel = 1,
}

/// The hooks, in the order of [`PluginMetrics::calls`].
pub const HOOKS: [&str; 7] = [
    "on-request",
    "on-request-body",
    "on-response",
    "on-response-body",
    "on-error",
    "on-websocket-open",
    "on-websocket-message",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status_class: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    hook: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    plugin: String,
    result: &'static str,
}

/// Upper bounds, in seconds, of upstream connect and first-byte times.
const UPSTREAM_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds, in seconds, of plugin calls (microseconds to the limit).
const CALL_BOUNDS: &[f64] = &[
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
    0.025, 0.1, 1.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    /// Regular-mode requests by status class, in [`CLASSES`] order.
    requests: [Counter; 6],
    /// All of them, for the other modes.
    by_mode: Family<RequestLabels, Counter>,
    /// By outcome, in [`Outcome::ALL`] order.
    outcomes: [Counter; 6],
    /// From the cache, from the upstream.
    bytes: [Counter; 2],
    /// By [`Conn`].
    active: [Gauge; 2],
    connect: Histogram,
    ttfb: Histogram,
    calls: HistogramFamily<HookLabels>,
    traps: Family<PluginLabels, Counter>,
    fields: Family<PluginLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("proxlet");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by status class and proxy mode",
            requests.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cache_outcomes",
            "What the cache did for each request it saw",
            outcomes.clone(),
        );
        let bytes = Family::<SourceLabels, Counter>::default();
        registry.register(
            "bytes_sent",
            "Response body bytes sent to clients, by where they came from",
            bytes.clone(),
        );
        let active = Family::<KindLabels, Gauge>::default();
        registry.register(
            "connections_active",
            "Open client connections and CONNECT tunnels",
            active.clone(),
        );
        let connect = Histogram::new(UPSTREAM_BOUNDS);
        registry.register(
            "upstream_connect_seconds",
            "Time to open an upstream connection (TCP and TLS)",
            connect.clone(),
        );
        let ttfb = Histogram::new(UPSTREAM_BOUNDS);
        registry.register(
            "upstream_ttfb_seconds",
            "Time from sending a request upstream to its response head, connecting included",
            ttfb.clone(),
        );
        let calls: HistogramFamily<HookLabels> =
            Family::new_with_constructor(|| Histogram::new(CALL_BOUNDS));
        registry.register(
            "plugin_call_seconds",
            "Duration of plugin hook calls",
            calls.clone(),
        );
        let traps = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_traps",
            "Plugin calls that trapped, timed out or ran out of memory",
            traps.clone(),
        );
        let fields = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_header_fields",
            "Header fields copied into plugins by the heads' accessors",
            fields.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "plugin_reloads",
            "Plugin reloads, by result (ok or failed)",
            reloads.clone(),
        );
        let by_mode = requests.clone();
        let requests = CLASSES.map(|status_class| {
            requests
                .get_or_create(&RequestLabels {
                    status_class,
                    mode: MODE,
                })
                .clone()
        });
        let outcomes = Outcome::ALL.map(|o| {
            outcomes
                .get_or_create(&OutcomeLabels { outcome: o.label() })
                .clone()
        });
        let bytes = ["cache", "upstream"]
            .map(|source| bytes.get_or_create(&SourceLabels { source }).clone());
        let active =
            ["client", "tunnel"].map(|kind| active.get_or_create(&KindLabels { kind }).clone());
        Self {
            registry,
            requests,
            by_mode,
            outcomes,
            bytes,
            active,
            connect,
            ttfb,
            calls,
            traps,
            fields,
            reloads,
        }
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a finished response: its status class, and its body bytes by
    /// where they came from.
    pub fn response(&self, status: StatusCode, source: Source, bytes: u64, mode: &'static str) {
        let class = match status.as_u16() {
            100..=599 => usize::from(status.as_u16() / 100 - 1),
            _ => 5,
        };
        match mode {
            MODE => {
                self.requests[class].inc();
            }
            mode => {
                let labels = RequestLabels {
                    status_class: CLASSES[class],
                    mode,
                };
                self.by_mode.get_or_create(&labels).inc();
            }
        };
        match source {
            Source::Cache => self.bytes[0].inc_by(bytes),
            Source::Upstream => self.bytes[1].inc_by(bytes),
            Source::Proxy => 0,
        };
    }

    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].inc();
    }

    pub fn connected(&self, took: Duration) {
        self.connect.observe(took);
    }

    pub fn first_byte(&self, took: Duration) {
        self.ttfb.observe(took);
    }

    /// The handles of one plugin (kept across its reloads).
    pub fn plugin(&self, name: &str) -> PluginMetrics {
        let calls = HOOKS.map(|hook| {
            self.calls
                .get_or_create(&HookLabels {
                    plugin: name.to_owned(),
                    hook,
                })
                .clone()
        });
        let traps = self
            .traps
            .get_or_create(&PluginLabels {
                plugin: name.to_owned(),
            })
            .clone();
        let fields = self
            .fields
            .get_or_create(&PluginLabels {
                plugin: name.to_owned(),
            })
            .clone();
        PluginMetrics {
            calls,
            traps,
            fields,
        }
    }

    /// Counts a reload of `plugin` that succeeded or failed.
    pub fn reloaded(&self, plugin: &str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                plugin: plugin.to_owned(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}

/// The metrics of one plugin.
#[derive(Debug, Clone)]
pub struct PluginMetrics {
    /// By hook, in [`HOOKS`] order.
    pub calls: [Histogram; HOOKS.len()],
    pub traps: Counter,
    /// Header fields a plugin read through `header` and `headers`.
    pub fields: Counter,
}

/// Counts an open connection of `kind` until dropped.
pub struct Active(Option<&'static Gauge>);

impl Active {
    pub fn new(kind: Conn) -> Self {
        Active(get().map(|m| {
            let gauge = &m.active[kind as usize];
            gauge.inc();
            gauge
        }))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(gauge) = self.0 {
            gauge.dec();
        }
    }
}

/// A histogram of durations with fixed buckets: one atomic add for the
/// bucket and one for the sum per observation.
#[derive(Clone)]
pub struct Histogram(Arc<Buckets>);

struct Buckets {
    /// Upper bounds in seconds; one more bucket (+Inf) follows.
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Observations so far and their sum in nanoseconds.
    pub fn totals(&self) -> (u64, u64) {
        let count = self
            .0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        (count, self.0.sum_nanos.load(Ordering::Relaxed))
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .0
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.0.bounds.len());
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counts = String::new();
        for count in self.0.counts.iter() {
            let _ = write!(counts, "{} ", count.load(Ordering::Relaxed));
        }
        f.debug_struct("Histogram")
            .field("counts", &counts.trim_end())
            .finish()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_the_first_bucket_that_holds_the_value() {
        let histogram = Histogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(2));
        let counts: Vec<u64> = histogram
            .0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 1, 1]);
        assert_eq!(histogram.0.sum_nanos.load(Ordering::Relaxed), 2_006_500_000);
    }

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics.response(StatusCode::NOT_FOUND, Source::Upstream, 10, "regular");
        metrics.response(StatusCode::OK, Source::Proxy, 1, "socks5");
        metrics.outcome(Outcome::ErrorLink);
        metrics.plugin("cache").calls[2].observe(Duration::from_micros(3));
        metrics.reloaded("cache", false);
        let text = metrics.encode();
        for line in [
            "proxlet_requests_total{status_class=\"4xx\",mode=\"regular\"} 1",
            "proxlet_requests_total{status_class=\"2xx\",mode=\"regular\"} 0",
            "proxlet_requests_total{status_class=\"2xx\",mode=\"socks5\"} 1",
            "proxlet_cache_outcomes_total{outcome=\"error_link\"} 1",
            "proxlet_bytes_sent_total{source=\"upstream\"} 10",
            "proxlet_connections_active{kind=\"tunnel\"} 0",
            "proxlet_upstream_connect_seconds_count 0",
            "proxlet_plugin_call_seconds_bucket{le=\"0.000005\",plugin=\"cache\",hook=\"on-response\"} 1",
            "proxlet_plugin_traps_total{plugin=\"cache\"} 0",
            "proxlet_plugin_reloads_total{plugin=\"cache\",result=\"failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn outcomes_are_read_from_the_plugins_x_proxlet_values() {
        let outcome = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-proxlet", http::HeaderValue::from_static(value));
            Outcome::of(&headers)
        };
        assert_eq!(outcome("cache;hit"), Some(Outcome::Hit));
        assert_eq!(outcome("cache;offline-miss"), Some(Outcome::Miss));
        assert_eq!(outcome("error-links;hit"), Some(Outcome::ErrorLink));
        assert_eq!(outcome("replace;map-local"), None);
        assert_eq!(Outcome::of(&HeaderMap::new()), None);
    }
}
