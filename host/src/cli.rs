//! The command line: `proxlet [run] [OPTIONS]`, `proxlet ca …`.
//! Every run option has a `PROXLET_*` environment fallback; flags beat the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Scriptable intercepting HTTP/HTTPS proxy.
#[derive(Debug, Parser)]
#[command(name = "proxlet", version, about)]
pub struct Cli {
    /// Where the CA and caches live (default ~/.proxlet).
    #[arg(long, global = true, env = "PROXLET_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

// Parsed once at start, so the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default when no command is given).
    Run(RunArgs),
    /// Create a ready-to-build plugin directory NAME from a template.
    New {
        /// Directory (and plugin) name.
        name: PathBuf,
        /// Language of the template.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
    },
    /// Load a plugin component and report its hooks, or why it does not fit.
    Check {
        /// The plugin component (.wasm).
        plugin: PathBuf,
    },
    /// List the flows of a flow file (one line each, like the access log),
    /// show one, or export them as HAR.
    Flows {
        /// A proxlet flow file, a HAR file or a mitmproxy dump.
        file: PathBuf,
        /// Only flows matching this mitmproxy filter expression (`~u /simple/ & ~c 200`).
        filter: Option<String>,
        /// Print one flow in full: heads, decoded bodies, timings, plugin decisions.
        #[arg(long, value_name = "ID")]
        show: Option<u64>,
        /// Write the (filtered) flows as HAR 1.2 to this file (`-` for stdout).
        #[arg(long, value_name = "OUT")]
        har: Option<PathBuf>,
    },
    /// Convert between proxlet flow files, HAR (`.har`) and mitmproxy dumps
    /// (`.mitm`); the input's format is recognised by its content.
    Convert {
        input: PathBuf,
        /// `.har`: HAR 1.2; `.mitm`: mitmproxy dump; anything else: proxlet flow file.
        output: PathBuf,
        /// Only flows matching this filter expression.
        #[arg(long, value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Re-send recorded requests and report responses that differ (client replay).
    Replay(ReplayArgs),
    /// Show, print or replace the CA that signs intercepted certificates.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum CaAction {
    /// Print the path of the CA certificate (PEM).
    Path,
    /// Print the CA certificate (PEM) to stdout.
    Export,
    /// Replace the CA with a new one; clients must trust the new certificate.
    Regenerate,
}

/// Options of `proxlet replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A proxlet flow file, a HAR file or a mitmproxy dump.
    pub file: PathBuf,
    /// Only flows matching this filter expression.
    pub filter: Option<String>,
    /// Extra CA (PEM) trusted for servers, besides the system store; repeatable.
    #[arg(long = "upstream-ca", value_delimiter = ',', value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// Do not verify server certificates.
    #[arg(long)]
    pub insecure_upstream: bool,
    /// Time allowed for each request's connect and response head [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
}

/// Options of `proxlet run`; `None` means "not given", so the config file or
/// the default applies.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// Address to accept proxy clients on [default: 127.0.0.1:8080]; port 0 picks a free one.
    #[arg(long, env = "PROXLET_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// TOML config file.
    #[arg(long, env = "PROXLET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Plugin: a .wasm path or a built-in name; repeatable, in chain order; `none` for no plugins.
    /// Replaces the config file's [[plugin]] entries.
    #[arg(
        long = "plugin",
        env = "PROXLET_PLUGIN",
        value_delimiter = ',',
        value_name = "SPEC"
    )]
    pub plugins: Vec<String>,

    /// Directory of plugin components (`*.wasm`), appended to the chain in
    /// name order and watched: new files load, changed ones reload, deleted
    /// ones unload.
    #[arg(long, env = "PROXLET_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Directory the built-in plugins cache into [default: ./proxlet-cache].
    #[arg(long, env = "PROXLET_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Shared cache store, `s3://BUCKET/PREFIX`: a second level under the
    /// cache dir that many proxlet instances share. Endpoint, region and
    /// credentials come from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_ALLOW_HTTP=true for a
    /// plain-HTTP endpoint).
    #[arg(long, env = "PROXLET_CACHE_STORE", value_name = "URL")]
    pub cache_store: Option<String>,

    /// Extra CA (PEM) trusted for upstream servers, besides the system store; repeatable.
    #[arg(
        long = "upstream-ca",
        env = "PROXLET_UPSTREAM_CA",
        value_delimiter = ',',
        value_name = "PEM"
    )]
    pub upstream_ca: Vec<PathBuf>,

    /// Do not verify upstream certificates (logs a warning).
    #[arg(long, env = "PROXLET_INSECURE_UPSTREAM")]
    pub insecure_upstream: bool,

    /// Host pattern (`example.com`, `*.example.com`, `host:port`) tunnelled without interception; repeatable.
    #[arg(
        long = "ignore-hosts",
        env = "PROXLET_IGNORE_HOSTS",
        value_delimiter = ',',
        value_name = "PATTERN"
    )]
    pub ignore_hosts: Vec<String>,

    /// Time allowed for connecting upstream and receiving response headers, e.g. `30s`, `500ms` [default: 30s].
    #[arg(long, env = "PROXLET_UPSTREAM_TIMEOUT", value_name = "DURATION")]
    pub upstream_timeout: Option<String>,

    /// Time a client gets to send a complete request head or finish the TLS
    /// handshake inside a tunnel, the longest a keep-alive connection may sit
    /// idle between requests, and how long a tunnel may stay entirely
    /// silent [default: 30s].
    #[arg(long, env = "PROXLET_CLIENT_TIMEOUT", value_name = "DURATION")]
    pub client_timeout: Option<String>,

    /// Most client connections served at once; more are closed with a warning
    /// [default: half the open-file limit].
    #[arg(long, env = "PROXLET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Longest time a connection or tunnel may move no byte in either
    /// direction (relayed tunnels, HTTP/1.1 and HTTP/2 inside intercepted
    /// ones, request and response bodies) before it is closed [default: 5m].
    #[arg(long, env = "PROXLET_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Require proxy clients to authenticate (HTTP Basic) with these
    /// credentials; repeatable. Without it anyone who reaches the listen
    /// address may use the proxy.
    #[arg(
        long = "proxy-auth",
        env = "PROXLET_PROXY_AUTH",
        value_name = "USER:PASS",
        hide_env_values = true
    )]
    pub proxy_auth: Vec<String>,

    /// Credentials (HTTP Basic) for the parent proxy of `--mode upstream:URL`.
    #[arg(
        long = "upstream-auth",
        env = "PROXLET_UPSTREAM_AUTH",
        value_name = "USER:PASS",
        hide_env_values = true
    )]
    pub upstream_auth: Option<String>,

    /// Set this SO_MARK on every connection proxlet opens upstream, so an
    /// iptables rule can exempt them from a transparent redirect on the
    /// same host (`-m mark ! --mark N`).
    #[arg(
        long = "upstream-mark",
        env = "PROXLET_UPSTREAM_MARK",
        value_name = "N"
    )]
    pub upstream_mark: Option<u32>,

    /// Time in-flight flows get to finish after SIGINT/SIGTERM [default: 10s].
    #[arg(long, env = "PROXLET_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<String>,

    /// Allow listening on an address other machines can reach.
    #[arg(long, env = "PROXLET_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; port 0 picks a free one).
    #[arg(long, env = "PROXLET_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,

    /// Serve the web UI (flows, intercept, replay, plugins) at ADDR
    /// [default when given without ADDR: 127.0.0.1:8081; port 0 picks a free one].
    #[arg(long, env = "PROXLET_WEB", value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::config::DEFAULT_WEB)]
    pub web: Option<String>,

    /// Save every finished flow to this flow file (`+FILE` appends).
    #[arg(long, env = "PROXLET_SAVE", value_name = "FILE")]
    pub save: Option<String>,

    /// Only save flows matching this filter expression (`~d example.com & ~c 200`).
    #[arg(long, env = "PROXLET_SAVE_FILTER", value_name = "EXPR")]
    pub save_filter: Option<String>,

    /// Most bytes of each request and response body kept in a flow; longer
    /// bodies keep their size and are marked truncated [default: 1M].
    #[arg(long, env = "PROXLET_FLOW_BODY_MAX", value_name = "SIZE")]
    pub flow_body_max: Option<String>,

    /// Flows kept in memory, newest first (`N`, or `N,SIZE` to also bound
    /// their bytes) [default: 0, none; the bytes bound defaults to 256M].
    #[arg(long, env = "PROXLET_FLOWS_MAX", value_name = "N[,SIZE]")]
    pub flows_max: Option<String>,

    /// Answer requests from the responses recorded in this file (a proxlet
    /// flow file, a HAR or a mitmproxy dump); repeatable.
    #[arg(
        long = "server-replay",
        env = "PROXLET_SERVER_REPLAY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub server_replay: Vec<PathBuf>,

    /// Request parts server replay does not compare: params, payload, host, port, content; repeatable.
    #[arg(
        long = "server-replay-ignore",
        value_delimiter = ',',
        value_name = "PART"
    )]
    pub server_replay_ignore: Vec<String>,

    /// Request header that must also match for server replay; repeatable.
    #[arg(
        long = "server-replay-use-headers",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub server_replay_use_headers: Vec<String>,

    /// Keep a recorded response for later requests instead of consuming it.
    #[arg(long)]
    pub server_replay_reuse: bool,

    /// What unmatched requests get under server replay: `forward` (to the
    /// upstream), `kill` (the connection is closed) or a status code [default: forward].
    #[arg(long, value_name = "forward|kill|STATUS")]
    pub server_replay_extra: Option<String>,

    /// A listener in this mode: `regular`, `upstream:http[s]://HOST:PORT`
    /// (through a parent proxy), `reverse:https://HOST[:PORT]`,
    /// `transparent` (Linux, iptables REDIRECT) or `socks5`, with `@PORT`
    /// or `@ADDR` (default 127.0.0.1:8080, socks5 1080); repeatable. Drops the default `--listen` (an explicit one
    /// still adds a regular listener).
    #[arg(
        long,
        env = "PROXLET_MODE",
        value_name = "SPEC[@ADDR]",
        value_delimiter = ','
    )]
    pub mode: Vec<String>,
}
