//! Moving bytes: the listeners, CONNECT interception and the upstream
//! client; each request they accept goes through the per-flow pipeline of
//! `crate::flow`. Shared state is built once and handed out by `Arc`.

mod auth;
pub mod body;
pub(crate) mod connect;
pub(crate) mod dial;
pub(crate) mod encoding;
pub(crate) mod files;
pub(crate) mod grant;
pub(crate) mod headers;
mod io;
mod listener;
pub mod mode;
mod socks;
pub(crate) mod stamped;
mod transparent;
pub(crate) mod upgrade;
pub(crate) mod upstream;
pub(crate) mod websocket;

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
};

pub use listener::serve;

use crate::{
    config::{HostPattern, Settings},
    error::Result,
    tls::{CertificateAuthority, LeafCertCache},
};

/// Everything flows share: built at start, read concurrently.
pub struct Proxy {
    ca: Arc<CertificateAuthority>,
    leaf_certs: LeafCertCache,
    /// Straight to origin servers.
    upstream: Arc<upstream::Upstream>,
    /// Through a parent proxy, one per `upstream:` mode.
    parents: Vec<(mode::Mode, Arc<upstream::Upstream>)>,
    /// With a transparent listener: proxlet's own open upstream sockets.
    own_sockets: Option<Arc<dial::OwnSockets>>,
    ignore_hosts: Vec<HostPattern>,
    /// `--proxy-auth`; `None` when the proxy is open.
    auth: Option<auth::ProxyAuth>,
    pub(crate) plugins: Arc<arc_swap::ArcSwap<crate::plugin::Chain>>,
    pub(crate) settings: Settings,
    next_flow: AtomicU64,
    /// Where finished flows go when capture is on (`--save`, `--flows-max`).
    pub(crate) sink: Option<Arc<crate::flows::sink::Sink>>,
    /// `--server-replay`: recorded responses answer matching requests.
    pub(crate) server_replay: Option<crate::flows::replay::ServerReplay>,
    /// Intercepting, when the web UI is on.
    pub(crate) intercept: Option<Arc<crate::flows::intercept::Intercept>>,
}

/// What start-up reads and checks before any plugin loads: the upstream
/// TLS settings (`--upstream-ca`) and the `--server-replay` files. A bad
/// one then stops proxlet at once, before the chain compiles and before
/// a built-in creates its cache dir.
pub struct Prepared {
    tls: rustls::ClientConfig,
    server_replay: Option<crate::flows::replay::ServerReplay>,
}

impl Proxy {
    /// Reads what [`Proxy::new`] needs from files.
    pub fn prepare(settings: &Settings) -> Result<Prepared> {
        let tls = crate::tls::client_config(&settings.upstream_ca, settings.insecure_upstream)?;
        let server_replay = crate::flows::replay::ServerReplay::load(settings)?;
        Ok(Prepared { tls, server_replay })
    }

    pub fn new(
        settings: Settings,
        ca: Arc<CertificateAuthority>,
        plugins: Arc<arc_swap::ArcSwap<crate::plugin::Chain>>,
        prepared: Prepared,
    ) -> Result<Arc<Self>> {
        let Prepared { tls, server_replay } = prepared;
        if settings.insecure_upstream {
            tracing::warn!("--insecure-upstream: upstream certificates are NOT verified");
        }
        let transparent = settings
            .listeners
            .iter()
            .any(|(m, _)| *m == mode::Mode::Transparent);
        let own_sockets = transparent.then(Arc::default);
        let upstream = |parent| {
            let route = dial::Route {
                web: settings.web,
                mark: settings.upstream_mark,
                parent,
                own: own_sockets.clone(),
            };
            let (timeout, idle) = (settings.upstream_timeout, settings.idle_timeout);
            Arc::new(upstream::Upstream::new(tls.clone(), timeout, idle, route))
        };
        let mut parents = Vec::new();
        for (mode, _) in &settings.listeners {
            if let mode::Mode::Upstream { scheme, authority } = mode {
                if parents.iter().all(|(m, _)| m != mode) {
                    let parent = dial::Parent {
                        scheme: scheme.clone(),
                        authority: authority.clone(),
                        auth: settings.upstream_auth.as_ref().map(|c| c.basic()),
                    };
                    parents.push((mode.clone(), upstream(Some(parent))));
                }
            }
        }
        Ok(Arc::new(Self {
            leaf_certs: LeafCertCache::new(ca.clone())?,
            ca,
            upstream: upstream(None),
            parents,
            own_sockets,
            ignore_hosts: settings.ignore_hosts.clone(),
            auth: auth::ProxyAuth::new(&settings.proxy_auth),
            plugins,
            sink: crate::flows::sink::Sink::new(&settings.capture)?,
            settings,
            next_flow: AtomicU64::new(1),
            server_replay,
            intercept: crate::web::events().map(|events| {
                Arc::new(crate::flows::intercept::Intercept::new(
                    events.paused.clone(),
                ))
            }),
        }))
    }

    /// Writes out the flows still queued for `--save` (at shutdown).
    pub fn close(&self) {
        if let Some(sink) = &self.sink {
            sink.close();
        }
    }

    /// Where the flows of a listener in `mode` go upstream.
    pub(crate) fn upstream_for(&self, mode: &mode::Mode) -> Arc<upstream::Upstream> {
        match self.parents.iter().find(|(m, _)| m == mode) {
            Some((_, parent)) => parent.clone(),
            None => self.upstream.clone(),
        }
    }

    /// The next flow id (flows made by the web UI take theirs here too).
    pub(crate) fn next_flow_id(&self) -> u64 {
        self.next_flow
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Where the proxy listens (an unspecified address as loopback), for
    /// requests proxlet sends through itself.
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        let mut addr = self.settings.listen();
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }

    pub(crate) fn upstream_timeout(&self) -> std::time::Duration {
        self.settings.upstream_timeout
    }

    pub(crate) fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The first `--proxy-auth` credentials, for requests proxlet sends
    /// through itself.
    pub(crate) fn own_credentials(&self) -> Option<&crate::config::ProxyCredential> {
        self.settings.proxy_auth.first()
    }

    /// Whether `host:port` names the web UI's listener.
    pub(crate) fn names_web_ui(&self, host: &str, port: u16) -> bool {
        let Some(web) = self.settings.web else {
            return false;
        };
        if port != web.port() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
        {
            return true;
        }
        host.parse()
            .is_ok_and(|ip| reaches_web_ui(web, SocketAddr::new(ip, port)))
    }

    pub(crate) fn is_ignored(&self, host: &str, port: u16) -> bool {
        self.ignore_hosts.iter().any(|p| p.matches(host, port))
    }
}

/// Whether a connection to `addr` would reach the web UI listening on
/// `web`: its address, or any loopback or unspecified one on its port (or
/// any address at all when the UI listens on every one).
fn reaches_web_ui(web: SocketAddr, addr: SocketAddr) -> bool {
    addr.port() == web.port()
        && (addr.ip() == web.ip()
            || addr.ip().is_loopback()
            || addr.ip().is_unspecified()
            || web.ip().is_unspecified())
}

/// Refuses an upstream connection to `peer` that reached the web UI (a
/// name that resolved to its address).
pub(crate) fn refuse_web_ui(web: Option<SocketAddr>, peer: SocketAddr) -> std::io::Result<()> {
    match web {
        Some(web) if reaches_web_ui(web, peer) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the web UI is not reachable through the proxy",
        )),
        _ => Ok(()),
    }
}

/// What a served connection knows about where it came from.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub client: SocketAddr,
    /// The listener's mode.
    pub mode: Arc<mode::Mode>,
    /// How the connection's flows reach servers (a parent proxy's, in
    /// upstream mode).
    pub upstream: Arc<upstream::Upstream>,
    /// Transparent mode: the address the client's connection was for
    /// before the kernel redirected it; upstream connections go there.
    pub original: Option<SocketAddr>,
    /// For connections inside an intercepted CONNECT: the tunnel's target.
    pub tunnel: Option<http::uri::Authority>,
    /// Changes when proxlet shuts down; held while the connection lives.
    pub stop: tokio::sync::watch::Receiver<()>,
    /// The connection's `--max-connections` slot, held by everything that
    /// serves the client's socket (its tunnel too) and freed when it closes.
    pub slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    /// When the client connected and, in a tunnel, its TLS (for flow records).
    pub facts: crate::flows::sink::ConnFacts,
}
