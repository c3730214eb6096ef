//! The TOML config file and the settings a run uses, resolved from flags,
//! environment, file and defaults in that order of precedence.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    cli::RunArgs,
    error::{Error, Result},
    plugin::{builtin, PluginSpec},
    proxy::mode::Mode,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where `--web` without an address serves the UI.
pub const DEFAULT_WEB: &str = "127.0.0.1:8081";
/// Flows the web UI keeps when `--flows-max` does not say.
pub const DEFAULT_WEB_FLOWS: usize = 100_000;
pub const DEFAULT_CACHE_DIR: &str = "./proxlet-cache";
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Half the open-file limit (each intercepted flow holds a client and an
/// upstream socket), after raising the soft limit to the hard one as nginx's
/// `worker_rlimit_nofile` would.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 512;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max.min(1 << 20),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    ((limit.rlim_cur / 2) as usize).clamp(64, 100_000)
}

/// The config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to accept proxy clients on (`--listen`).
    pub listen: Option<String>,
    /// Directory built-in plugins cache into (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
    /// Shared cache store under the cache dir, "s3://BUCKET/PREFIX" (`--cache-store`).
    pub cache_store: Option<String>,
    /// Extra PEM CAs trusted for upstream servers (`--upstream-ca`).
    pub upstream_ca: Option<Vec<PathBuf>>,
    /// Skip upstream certificate verification (`--insecure-upstream`).
    pub insecure_upstream: Option<bool>,
    /// Host patterns tunnelled without interception (`--ignore-hosts`).
    pub ignore_hosts: Option<Vec<String>>,
    /// Connect + response-header timeout, e.g. "30s" (`--upstream-timeout`).
    pub upstream_timeout: Option<String>,
    /// Time in-flight flows get after SIGINT/SIGTERM (`--shutdown-grace`).
    pub shutdown_grace: Option<String>,
    /// Request-head and keep-alive idle timeout (`--client-timeout`).
    pub client_timeout: Option<String>,
    /// Most client connections at once (`--max-connections`).
    pub max_connections: Option<usize>,
    /// Time a connection, tunnel or body may move no byte (`--idle-timeout`).
    pub idle_timeout: Option<String>,
    /// "USER:PASS" credentials proxy clients must present (`--proxy-auth`).
    pub proxy_auth: Option<Vec<String>>,
    /// "USER:PASS" for the parent proxy of upstream mode (`--upstream-auth`).
    pub upstream_auth: Option<String>,
    /// SO_MARK on proxlet's upstream sockets (`--upstream-mark`).
    pub upstream_mark: Option<u32>,
    /// Allow a listen address other machines can reach (`--allow-remote`).
    pub allow_remote: Option<bool>,
    /// Address of the metrics listener (`--admin`).
    pub admin: Option<String>,
    /// Address of the web UI (`--web`).
    pub web: Option<String>,
    /// Listeners by mode (`--mode`): one spec or a list.
    pub mode: Option<OneOrMany>,
    /// Watched directory of plugin components (`--plugin-dir`).
    pub plugin_dir: Option<PathBuf>,
    /// Flow file every finished flow is saved to; "+FILE" appends (`--save`).
    pub save: Option<String>,
    /// Filter expression a flow must match to be saved (`--save-filter`).
    pub save_filter: Option<String>,
    /// Bytes of each body kept in a flow, e.g. "1M" (`--flow-body-max`).
    pub flow_body_max: Option<String>,
    /// Flows kept in memory: "N" or "N,SIZE" (`--flows-max`).
    pub flows_max: Option<String>,
    /// Recorded flows to answer requests from (`--server-replay`).
    pub server_replay: Option<Vec<PathBuf>>,
    /// Request parts server replay ignores (`--server-replay-ignore`).
    pub server_replay_ignore: Option<Vec<String>>,
    /// Request headers server replay compares (`--server-replay-use-headers`).
    pub server_replay_use_headers: Option<Vec<String>>,
    /// Reuse recorded responses instead of consuming them (`--server-replay-reuse`).
    pub server_replay_reuse: Option<bool>,
    /// "forward", "kill" or a status for unmatched requests (`--server-replay-extra`).
    pub server_replay_extra: Option<String>,
    /// Plugin chain, in order.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginEntry>,
}

/// One `[[plugin]]` entry of the chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Built-in name or any label.
    pub name: String,
    /// Component file; omitted for built-ins.
    pub path: Option<PathBuf>,
    /// Prefilter evaluated by the host (hosts, methods, url).
    #[serde(rename = "match")]
    pub matcher: Option<toml::Table>,
    /// Guest path = host path directories the plugin may use.
    pub dirs: Option<BTreeMap<String, PathBuf>>,
    /// Plugin configuration, passed to the plugin as JSON.
    pub config: Option<toml::Table>,
    /// Resource limits.
    pub limits: Option<toml::Table>,
    /// "fail-open" or "fail-closed".
    pub on_error: Option<String>,
    /// Extra capabilities, e.g. "credentials".
    pub grants: Option<Vec<String>>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| Error::ConfigParse {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses config text; an error is `(line, message)` with 1-based line.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            (line, e.message().trim_end().to_owned())
        })
    }
}

/// A host pattern of `--ignore-hosts`: `example.com`, `*.example.com` (the
/// domain and its subdomains), `*`, each optionally with `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidOption {
            option: "--ignore-hosts",
            value: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, port) = match pattern.rsplit_once(':') {
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (pattern, None), // bare IPv6
            Some((h, p)) => (
                h,
                Some(p.parse().map_err(|_| invalid("the port is not a number"))?),
            ),
            None => (pattern, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => {
                host.eq_ignore_ascii_case(domain)
                    || (host.len() > domain.len()
                        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
            }
            None => host.eq_ignore_ascii_case(&self.host),
        }
    }
}

/// A user and password of `--proxy-auth`. Debug output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredential {
    pub user: String,
    pub password: String,
}

impl ProxyCredential {
    /// Parses `USER:PASS` of `--proxy-auth`; the password may contain `:`,
    /// the user may not (RFC 7617 §2).
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_for("--proxy-auth", text)
    }

    /// The `Proxy-Authorization` value (HTTP Basic) sending these.
    pub fn basic(&self) -> http::HeaderValue {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut value = http::HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        value
    }

    fn parse_for(option: &'static str, text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidOption {
            option,
            value: "***".to_owned(),
            reason: reason.to_owned(),
        };
        let Some((user, password)) = text.split_once(':') else {
            return Err(invalid("expected USER:PASS"));
        };
        if user.is_empty() {
            return Err(invalid("the user name is empty"));
        }
        if text.chars().any(char::is_control) {
            return Err(invalid("control characters are not allowed"));
        }
        Ok(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl std::fmt::Debug for ProxyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***", self.user)
    }
}

/// Parses `30`, `30s`, `500ms`, `2m` into a duration.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// `text` (`HOST:PORT`) as the address to listen on for `option`.
fn socket_addr(option: &'static str, text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::InvalidOption {
            option,
            value: text.to_owned(),
            reason: "expected HOST:PORT, e.g. 127.0.0.1:8080".into(),
        })
}

impl Settings {
    /// The first regular listener's address (or the first listener's).
    pub fn listen(&self) -> SocketAddr {
        let regular = self
            .listeners
            .iter()
            .find(|(mode, _)| *mode == Mode::Regular);
        regular.unwrap_or(&self.listeners[0]).1
    }
}

/// A config value given as one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Everything a run needs, after precedence has been applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every listener, with its mode (never empty).
    pub listeners: Vec<(Mode, SocketAddr)>,
    /// Where `/metrics` is served (`--admin`), if anywhere.
    pub admin: Option<SocketAddr>,
    /// Where the web UI is served (`--web`), if anywhere.
    pub web: Option<SocketAddr>,
    pub home: PathBuf,
    pub cache_dir: PathBuf,
    /// `--cache-store`: the shared second level of the cache dir.
    pub cache_store: Option<crate::store::StoreUrl>,
    pub upstream_ca: Vec<PathBuf>,
    pub insecure_upstream: bool,
    pub ignore_hosts: Vec<HostPattern>,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    pub client_timeout: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Credentials proxy clients must present; empty: no authentication.
    pub proxy_auth: Vec<ProxyCredential>,
    /// Credentials for the parent proxy (upstream mode).
    pub upstream_auth: Option<ProxyCredential>,
    /// SO_MARK on every upstream socket.
    pub upstream_mark: Option<u32>,
    /// The plugin chain, in order (`plugin_dir`'s components last).
    pub plugins: Vec<PluginSpec>,
    /// The watched directory of plugin components.
    pub plugin_dir: Option<PathBuf>,
    /// What is kept of flows, and where.
    pub capture: CaptureSettings,
    /// `--server-replay`, when given.
    pub server_replay: Option<ServerReplaySettings>,
}

/// Flow capture: on when flows are saved or kept in memory.
#[derive(Debug, Clone, Default)]
pub struct CaptureSettings {
    /// `--save`: the file, and whether to append to it.
    pub save: Option<(PathBuf, bool)>,
    /// `--save-filter`, checked when the settings are resolved.
    pub save_filter: Option<String>,
    /// Bytes of each body kept.
    pub body_max: usize,
    /// Flows kept in memory (0: no store) and their bytes.
    pub store_count: usize,
    pub store_bytes: usize,
}

impl CaptureSettings {
    /// Whether flows are recorded at all.
    pub fn enabled(&self) -> bool {
        self.save.is_some() || self.store_count > 0
    }
}

/// What server replay compares and does (mitmproxy's `server_replay_*`).
#[derive(Debug, Clone, Default)]
pub struct ServerReplaySettings {
    /// Recorded flows: proxlet flow files, HAR files or mitmproxy dumps.
    pub files: Vec<PathBuf>,
    /// Ignore the query string.
    pub ignore_params: bool,
    /// Ignore the request body.
    pub ignore_payload: bool,
    /// Ignore the host.
    pub ignore_host: bool,
    /// Ignore the port.
    pub ignore_port: bool,
    /// Ignore the request body (mitmproxy's `server_replay_ignore_content`).
    pub ignore_content: bool,
    /// Request headers (lower case) that must match too.
    pub use_headers: Vec<String>,
    /// Keep responses for later requests rather than consuming them.
    pub reuse: bool,
    /// What an unmatched request gets.
    pub extra: ReplayExtra,
}

/// What server replay does with a request it has no recording for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayExtra {
    /// Send it upstream as usual.
    #[default]
    Forward,
    /// Close the connection without a response.
    Kill,
    /// Answer with this status.
    Status(u16),
}

pub const DEFAULT_FLOW_BODY_MAX: usize = 1 << 20;
pub const DEFAULT_FLOWS_MAX_BYTES: usize = 256 << 20;

/// Parses `1048576`, `512K`, `1M`, `2G` (powers of 1024; a trailing `B`
/// or `iB` is allowed).
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// `--home`, then `PROXLET_HOME` (both via clap), then `~/.proxlet`.
pub fn home_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".proxlet")
    })
}

impl Settings {
    pub fn resolve(args: &RunArgs, home: PathBuf) -> Result<Self> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        // Relative paths in the file are relative to the file, like Cargo.toml.
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();

        let cache_dir = args
            .cache_dir
            .clone()
            .or(file.cache_dir.as_ref().map(|p| base.join(p)))
            .unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
        let mut plugins = plugin_chain(args, &file, &base, &cache_dir)?;
        let cache_store =
            match args.cache_store.as_ref().or(file.cache_store.as_ref()) {
                Some(url) => Some(crate::store::StoreUrl::parse(url).map_err(|reason| {
                    Error::InvalidOption {
                        option: "--cache-store",
                        value: url.clone(),
                        reason,
                    }
                })?),
                None => None,
            };
        let plugin_dir = args
            .plugin_dir
            .clone()
            .or(file.plugin_dir.as_ref().map(|p| base.join(p)));
        if let Some(dir) = &plugin_dir {
            plugins.extend(dir_plugins(dir)?);
        }

        let mut capture = capture_settings(args, &file, &base)?;
        let server_replay = server_replay_settings(args, &file, &base)?;

        let allow_remote = args.allow_remote || file.allow_remote.unwrap_or(false);
        let specs = match (&args.mode, file.mode) {
            (flags, _) if !flags.is_empty() => flags.clone(),
            (_, Some(OneOrMany::One(spec))) => vec![spec],
            (_, Some(OneOrMany::Many(specs))) => specs,
            (_, None) => Vec::new(),
        };
        let mut listeners = Vec::new();
        for spec in &specs {
            let listener = Mode::parse(spec).map_err(|reason| Error::InvalidOption {
                option: "--mode",
                value: spec.clone(),
                reason,
            })?;
            listeners.push(listener);
        }
        // An explicit --listen adds a regular listener; the default one is
        // only for a run without --mode.
        let listen_text = args.listen.clone().or(file.listen);
        if listen_text.is_some() || listeners.is_empty() {
            let text = listen_text.unwrap_or_else(|| DEFAULT_LISTEN.into());
            listeners.insert(0, (Mode::Regular, socket_addr("--listen", &text)?));
        }
        for (_, addr) in &listeners {
            if !addr.ip().is_loopback() && !allow_remote {
                return Err(Error::RemoteListen { addr: *addr });
            }
        }
        let admin = match args.admin.clone().or(file.admin) {
            None => None,
            Some(text) => Some(socket_addr("--admin", &text)?),
        };
        if let Some(addr) = admin.filter(|a| !a.ip().is_loopback() && !allow_remote) {
            return Err(Error::RemoteListen { addr });
        }
        let web = match args.web.clone().or(file.web) {
            None => None,
            Some(text) => Some(socket_addr("--web", &text)?),
        };
        if let Some(addr) = web.filter(|a| !a.ip().is_loopback() && !allow_remote) {
            return Err(Error::RemoteListen { addr });
        }
        // The UI lists the flows kept in memory: keep some unless told.
        if web.is_some() && args.flows_max.is_none() && file.flows_max.is_none() {
            capture.store_count = DEFAULT_WEB_FLOWS;
        }

        let duration = |option: &'static str,
                        flag: &Option<String>,
                        file: Option<String>,
                        default| match flag.clone().or(file) {
            None => Ok(default),
            Some(text) => parse_duration(&text).ok_or_else(|| Error::InvalidOption {
                option,
                value: text,
                reason: "expected a duration such as 30s, 500ms or 2m".into(),
            }),
        };
        let upstream_timeout = duration(
            "--upstream-timeout",
            &args.upstream_timeout,
            file.upstream_timeout,
            DEFAULT_UPSTREAM_TIMEOUT,
        )?;
        let shutdown_grace = duration(
            "--shutdown-grace",
            &args.shutdown_grace,
            file.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        let client_timeout = duration(
            "--client-timeout",
            &args.client_timeout,
            file.client_timeout,
            DEFAULT_CLIENT_TIMEOUT,
        )?;
        let idle_timeout = duration(
            "--idle-timeout",
            &args.idle_timeout,
            file.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        )?;
        if idle_timeout.is_zero() {
            return Err(Error::InvalidOption {
                option: "--idle-timeout",
                value: "0".into(),
                reason: "must be longer than zero, e.g. 5m".into(),
            });
        }
        let proxy_auth = if args.proxy_auth.is_empty() {
            file.proxy_auth.unwrap_or_default()
        } else {
            args.proxy_auth.clone()
        };
        let proxy_auth = proxy_auth
            .iter()
            .map(|c| ProxyCredential::parse(c))
            .collect::<Result<_>>()?;
        let upstream_auth = args
            .upstream_auth
            .clone()
            .or(file.upstream_auth.clone())
            .map(|c| ProxyCredential::parse_for("--upstream-auth", &c))
            .transpose()?;
        let max_connections = match args.max_connections.or(file.max_connections) {
            Some(0) => {
                return Err(Error::InvalidOption {
                    option: "--max-connections",
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => default_max_connections(),
        };

        let upstream_ca = if args.upstream_ca.is_empty() {
            file.upstream_ca
                .unwrap_or_default()
                .into_iter()
                .map(|p| base.join(p))
                .collect()
        } else {
            args.upstream_ca.clone()
        };
        let ignore_hosts = if args.ignore_hosts.is_empty() {
            file.ignore_hosts.unwrap_or_default()
        } else {
            args.ignore_hosts.clone()
        };
        let ignore_hosts = ignore_hosts
            .iter()
            .map(|p| HostPattern::parse(p))
            .collect::<Result<_>>()?;

        Ok(Self {
            listeners,
            admin,
            web,
            home,
            cache_dir,
            cache_store,
            upstream_ca,
            insecure_upstream: args.insecure_upstream || file.insecure_upstream.unwrap_or(false),
            ignore_hosts,
            upstream_timeout,
            shutdown_grace,
            client_timeout,
            max_connections,
            idle_timeout,
            proxy_auth,
            upstream_auth,
            upstream_mark: args.upstream_mark.or(file.upstream_mark),
            plugins,
            plugin_dir,
            capture,
            server_replay,
        })
    }
}

fn capture_settings(args: &RunArgs, file: &FileConfig, base: &Path) -> Result<CaptureSettings> {
    let size = |option: &'static str, text: &str| {
        parse_size(text).ok_or_else(|| Error::InvalidOption {
            option,
            value: text.to_owned(),
            reason: "expected a size such as 1M, 512K or 1048576".into(),
        })
    };
    let save = args.save.clone().or(file.save.clone()).map(|spec| {
        let (path, append) = match spec.strip_prefix('+') {
            Some(path) => (path, true),
            None => (spec.as_str(), false),
        };
        let path = match &args.save {
            Some(_) => PathBuf::from(path),
            None => base.join(path),
        };
        (path, append)
    });
    let save_filter = args.save_filter.clone().or(file.save_filter.clone());
    if let Some(expr) = &save_filter {
        crate::flows::filter::Filter::parse(expr).map_err(|e| Error::InvalidOption {
            option: "--save-filter",
            value: expr.clone(),
            reason: e.to_string(),
        })?;
    }
    let body_max = match args.flow_body_max.as_ref().or(file.flow_body_max.as_ref()) {
        Some(text) => size("--flow-body-max", text)?.min(1 << 30),
        None => DEFAULT_FLOW_BODY_MAX,
    };
    let (store_count, store_bytes) = match args.flows_max.as_ref().or(file.flows_max.as_ref()) {
        None => (0, DEFAULT_FLOWS_MAX_BYTES),
        Some(text) => {
            let (count, bytes) = text.split_once(',').unwrap_or((text, ""));
            let count = count.trim().parse().map_err(|_| Error::InvalidOption {
                option: "--flows-max",
                value: text.clone(),
                reason: "expected a number of flows, optionally with a size: 10000 or 10000,256M"
                    .into(),
            })?;
            let bytes = match bytes.trim() {
                "" => DEFAULT_FLOWS_MAX_BYTES,
                b => size("--flows-max", b)?,
            };
            (count, bytes)
        }
    };
    Ok(CaptureSettings {
        save,
        save_filter,
        body_max,
        store_count,
        store_bytes,
    })
}

fn server_replay_settings(
    args: &RunArgs,
    file: &FileConfig,
    base: &Path,
) -> Result<Option<ServerReplaySettings>> {
    let files: Vec<PathBuf> = if args.server_replay.is_empty() {
        let listed = file.server_replay.clone().unwrap_or_default();
        listed.into_iter().map(|p| base.join(p)).collect()
    } else {
        args.server_replay.clone()
    };
    if files.is_empty() {
        return Ok(None);
    }
    let mut settings = ServerReplaySettings {
        files,
        reuse: args.server_replay_reuse || file.server_replay_reuse.unwrap_or(false),
        ..ServerReplaySettings::default()
    };
    let ignore = if args.server_replay_ignore.is_empty() {
        file.server_replay_ignore.clone().unwrap_or_default()
    } else {
        args.server_replay_ignore.clone()
    };
    for part in ignore {
        match part.trim() {
            "params" => settings.ignore_params = true,
            "payload" => settings.ignore_payload = true,
            "host" => settings.ignore_host = true,
            "port" => settings.ignore_port = true,
            "content" => settings.ignore_content = true,
            other => {
                return Err(Error::InvalidOption {
                    option: "--server-replay-ignore",
                    value: other.to_owned(),
                    reason: "expected params, payload, host, port or content".into(),
                })
            }
        }
    }
    settings.use_headers = if args.server_replay_use_headers.is_empty() {
        file.server_replay_use_headers.clone().unwrap_or_default()
    } else {
        args.server_replay_use_headers.clone()
    };
    settings.use_headers = settings
        .use_headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let extra = args
        .server_replay_extra
        .clone()
        .or(file.server_replay_extra.clone());
    settings.extra = match extra.as_deref().map(str::trim) {
        None | Some("forward") => ReplayExtra::Forward,
        Some("kill") => ReplayExtra::Kill,
        Some(text) => match text.parse::<u16>() {
            Ok(status) if (100..=599).contains(&status) => ReplayExtra::Status(status),
            _ => {
                return Err(Error::InvalidOption {
                    option: "--server-replay-extra",
                    value: text.to_owned(),
                    reason: "expected forward, kill or a status code such as 404".into(),
                })
            }
        },
    };
    Ok(Some(settings))
}

/// The chain when neither `--plugin` nor `[[plugin]]` names one: the
/// caching stack.
pub const DEFAULT_CHAIN: [&str; 3] = ["pypi-slash", "error-links", "cache"];

/// The chain: `--plugin` specs replace the file's `[[plugin]]` entries;
/// `--plugin none` means no plugins; neither gives [`DEFAULT_CHAIN`].
fn plugin_chain(
    args: &RunArgs,
    file: &FileConfig,
    base: &Path,
    cache_dir: &Path,
) -> Result<Vec<PluginSpec>> {
    let invalid = |reason: String| Error::InvalidPlugin { reason };
    let named = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|name| match builtin::component(name) {
                Some(_) => builtin::spec(name, None, base, cache_dir),
                None => Ok(PluginSpec::from_path(PathBuf::from(name))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)
    };
    if !args.plugins.is_empty() {
        return named(
            &mut args
                .plugins
                .iter()
                .map(String::as_str)
                .filter(|p| *p != "none"),
        );
    }
    if file.plugins.is_empty() {
        return named(&mut DEFAULT_CHAIN.into_iter());
    }
    file.plugins
        .iter()
        .map(
            |entry| match (&entry.path, builtin::component(&entry.name)) {
                (None, Some(_)) => builtin::spec(&entry.name, Some(entry), base, cache_dir),
                _ => PluginSpec::from_entry(entry, base),
            },
        )
        .collect::<std::result::Result<_, _>>()
        .map_err(invalid)
}

/// The `*.wasm` files of `dir` in name order, each a plugin named by its
/// file stem. The directory is created when missing.
fn dir_plugins(dir: &Path) -> Result<Vec<PluginSpec>> {
    let invalid = |e: std::io::Error| Error::InvalidPlugin {
        reason: format!("--plugin-dir {}: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(invalid)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(invalid)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| is_plugin_file(path))
        .collect();
    files.sort();
    Ok(files.into_iter().map(PluginSpec::from_path).collect())
}

/// A component file in a plugin dir (not a dotfile an editor or copier
/// writes first).
pub fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        && path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let (line, message) =
            FileConfig::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("listen_port"), "{message}");
    }

    #[test]
    fn the_readme_config_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\nlisten = ")
            .expect("the config example")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config = FileConfig::parse(&readme[start..end]).unwrap();
        assert_eq!(config.save.as_deref(), Some("+ci.flows"));
        assert_eq!(config.server_replay_extra.as_deref(), Some("forward"));
    }

    #[test]
    fn sizes_and_capture_options_parse() {
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1T"), None);
        assert_eq!(parse_size("x"), None);
        let resolve = |args: &[&str]| {
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(
                ["proxlet", "--plugin", "none"].iter().chain(args),
            )
            .unwrap();
            Settings::resolve(&cli.run, "/nonexistent".into())
        };
        let settings = resolve(&["--save", "+a.flows", "--flows-max", "10,1M"]).unwrap();
        assert_eq!(settings.capture.save, Some(("a.flows".into(), true)));
        assert_eq!(settings.capture.store_count, 10);
        assert_eq!(settings.capture.store_bytes, 1 << 20);
        assert!(settings.capture.enabled());
        assert!(!resolve(&[]).unwrap().capture.enabled());
        let replay = resolve(&[
            "--server-replay",
            "r.flows",
            "--server-replay-ignore",
            "params,host",
            "--server-replay-extra",
            "404",
        ])
        .unwrap()
        .server_replay
        .unwrap();
        assert!(replay.ignore_params && replay.ignore_host && !replay.ignore_port);
        assert_eq!(replay.extra, ReplayExtra::Status(404));
        for bad in [
            &["--server-replay", "r", "--server-replay-extra", "maybe"][..],
            &["--server-replay", "r", "--server-replay-ignore", "cookies"],
            &["--flows-max", "many"],
            &["--save-filter", "~zz"],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plugin_entries_parse() {
        let config = FileConfig::parse(
            "[[plugin]]\nname = \"cache\"\nconfig = { offline = true }\non_error = \"fail-open\"\n",
        )
        .unwrap();
        assert_eq!(config.plugins.len(), 1);
        assert_eq!(config.plugins[0].name, "cache");
    }

    #[test]
    fn host_patterns_match_domains_ports_and_subdomains() {
        let exact = HostPattern::parse("example.com").unwrap();
        assert!(exact.matches("EXAMPLE.com", 443));
        assert!(!exact.matches("www.example.com", 443));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("example.com", 1));
        assert!(wild.matches("a.b.example.com", 1));
        assert!(!wild.matches("badexample.com", 1));
        let port = HostPattern::parse("127.0.0.1:8443").unwrap();
        assert!(port.matches("127.0.0.1", 8443));
        assert!(!port.matches("127.0.0.1", 443));
        let v6 = HostPattern::parse("[::1]:443").unwrap();
        assert!(v6.matches("[::1]", 443));
        assert!(HostPattern::parse("::1").unwrap().matches("::1", 80));
        assert!(HostPattern::parse("host:notaport").is_err());
    }

    #[test]
    fn idle_timeout_and_proxy_auth_come_from_the_file_unless_flags_say_otherwise() {
        let dir = std::env::temp_dir().join(format!("proxlet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxlet.toml");
        std::fs::write(
            &path,
            "idle_timeout = \"90s\"\nproxy_auth = [\"a:1\", \"b:2\"]\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            plugins: vec!["none".into()],
            ..RunArgs::default()
        };
        let settings = Settings::resolve(&args, dir.clone()).unwrap();
        assert_eq!(settings.idle_timeout, Duration::from_secs(90));
        assert_eq!(settings.proxy_auth.len(), 2);
        assert_eq!(settings.proxy_auth[1].user, "b");
        let args = RunArgs {
            idle_timeout: Some("2s".into()),
            proxy_auth: vec!["c:3".into()],
            ..args
        };
        let settings = Settings::resolve(&args, dir.clone()).unwrap();
        assert_eq!(settings.idle_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.proxy_auth,
            [ProxyCredential::parse("c:3").unwrap()]
        );
        let defaults = RunArgs {
            plugins: vec!["none".into()],
            ..RunArgs::default()
        };
        let settings = Settings::resolve(&defaults, dir.clone()).unwrap();
        assert_eq!(settings.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert!(settings.proxy_auth.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proxy_credentials_split_at_the_first_colon_and_hide_the_password() {
        let credential = ProxyCredential::parse("ci:s3:cr,et").unwrap();
        assert_eq!(credential.user, "ci");
        assert_eq!(credential.password, "s3:cr,et");
        assert_eq!(format!("{credential:?}"), "ci:***");
        assert!(ProxyCredential::parse("nopassword").is_err());
        assert!(ProxyCredential::parse(":pass").is_err());
        let error = ProxyCredential::parse("u:p\n").unwrap_err().to_string();
        assert!(
            error.contains("--proxy-auth") && !error.contains("p\n"),
            "{error}"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("5h"), None);
    }
}
