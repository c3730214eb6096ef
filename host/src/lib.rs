//! proxlet: an intercepting HTTP/HTTPS proxy whose request and response hooks
//! are WebAssembly components. `run` is the whole program behind `main`.

pub mod admin;
pub mod cache_limit;
pub mod cli;
pub mod config;
pub mod error;
pub mod flow;
pub mod flows;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod scaffold;
pub mod store;
pub mod tls;
pub mod web;

use std::sync::Arc;

use arc_swap::ArcSwap;
use cli::{CaAction, Cli, Command, RunArgs};
use config::Settings;
use error::{Error, Result};
use proxy::mode::Mode;
use tls::CertificateAuthority;

/// Runs the command `cli` asks for.
pub fn run(cli: Cli) -> Result<()> {
    init_logging();
    let home = config::home_dir(cli.home);
    match cli.command {
        Some(Command::Ca { action }) => ca_command(action, &home),
        Some(Command::Check { plugin }) => match plugin::check(&plugin) {
            Ok(report) => {
                println!("{report}");
                Ok(())
            }
            Err(reason) => Err(Error::PluginLoad(reason)),
        },
        Some(Command::New { name, lang }) => {
            let next = scaffold::create(&name, lang).map_err(Error::Scaffold)?;
            print!("{next}");
            Ok(())
        }
        Some(Command::Flows {
            file,
            filter,
            show,
            har,
        }) => flows::cli::flows(&file, filter.as_deref(), show, har.as_deref()),
        Some(Command::Convert {
            input,
            output,
            filter,
        }) => flows::convert::convert(&input, &output, filter.as_deref()),
        Some(Command::Replay(args)) => flows::replay::client_replay(&args),
        Some(Command::Run(args)) => run_proxy(Settings::resolve(&args, home.clone())?, args),
        None => run_proxy(Settings::resolve(&cli.run, home)?, cli.run),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn ca_command(action: CaAction, home: &std::path::Path) -> Result<()> {
    match action {
        CaAction::Path => {
            let ca = CertificateAuthority::load_or_create(home)?;
            println!("{}", ca.path().display());
        }
        CaAction::Export => {
            let ca = CertificateAuthority::load_or_create(home)?;
            print!("{}", ca.cert_pem());
        }
        CaAction::Regenerate => {
            let ca = CertificateAuthority::create(home)?;
            eprintln!(
                "proxlet: new CA written to {}; clients must trust it again",
                ca.path().display()
            );
        }
    }
    Ok(())
}

fn run_proxy(mut settings: Settings, args: RunArgs) -> Result<()> {
    let ca = Arc::new(CertificateAuthority::load_or_create(&settings.home)?);
    let prepared = proxy::Proxy::prepare(&settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("proxlet")
        .build()?;
    runtime.block_on(async move {
        let mut listeners = Vec::with_capacity(settings.listeners.len());
        for (mode, addr) in &mut settings.listeners {
            let listener = bind(*addr).await?;
            *addr = listener.local_addr()?;
            listeners.push((listener, mode.clone()));
        }
        if let Some(warning) = open_proxy_warning(&settings) {
            tracing::warn!("{warning}");
        }
        if settings.idle_timeout < settings.upstream_timeout {
            tracing::warn!(
                "--idle-timeout ({:?}) is shorter than --upstream-timeout ({:?}): a client waiting for a slow response head is disconnected before it would get 504",
                settings.idle_timeout,
                settings.upstream_timeout
            );
        }
        tracing::info!(
            "CA certificate: {} (clients must trust it to intercept HTTPS)",
            ca.path().display()
        );
        if let Some(url) = &settings.cache_store {
            store::start(url, &settings.cache_dir, &settings.upstream_ca)?;
        }
        // Counting starts before plugins load, so theirs are counted too
        // (the web UI shows the same counts, and its plugin history).
        if settings.web.is_some() {
            metrics::enable();
            web::enable();
        }
        if let Some(addr) = settings.admin {
            let metrics = metrics::enable();
            let admin = bind(addr).await?;
            eprintln!("proxlet admin on http://{}", admin.local_addr()?);
            tokio::spawn(admin::serve(admin, metrics));
        }
        // Bound before the proxy is made: the proxy refuses requests to
        // the UI's address, which port 0 only picks here.
        let web_listener = match settings.web {
            Some(addr) => {
                let listener = bind(addr).await?;
                settings.web = Some(listener.local_addr()?);
                Some(listener)
            }
            None => None,
        };
        let (chain, engine) = load_plugins(&settings, &args).await?;
        cache_limit::configure(&settings.plugins);
        let proxy = proxy::Proxy::new(settings.clone(), ca, chain.clone(), prepared)?;
        if let (Some(listener), Some(addr)) = (web_listener, settings.web) {
            let web = web::Web::new(&settings.home, addr, proxy.clone(), chain, engine)?;
            eprintln!("proxlet web on {}", web.url());
            tokio::spawn(web::serve(listener, web));
        }
        // The lines scripts and tests wait for; keep their format (the
        // regular listeners' last: they say the proxy is ready).
        let mut shown: Vec<&(Mode, std::net::SocketAddr)> = settings.listeners.iter().collect();
        shown.sort_by_key(|(mode, _)| *mode == Mode::Regular);
        for (mode, addr) in shown {
            match mode {
                Mode::Regular => eprintln!("proxlet listening on http://{addr}"),
                Mode::Socks5 => eprintln!("proxlet listening on socks5://{addr}"),
                Mode::Reverse { scheme, authority } => {
                    eprintln!("proxlet listening on http://{addr} (reverse:{scheme}://{authority})")
                }
                Mode::Upstream { scheme, authority } => {
                    eprintln!("proxlet listening on http://{addr} (upstream:{scheme}://{authority})")
                }
                Mode::Transparent => eprintln!("proxlet listening on http://{addr} (transparent)"),
            }
        }
        proxy::serve(listeners, proxy.clone(), shutdown_signal()).await;
        proxy.close();
        Ok(())
    })
}

/// The warning for a proxy that anyone who reaches it may use: a listener
/// beyond loopback without `--proxy-auth`.
fn open_proxy_warning(settings: &Settings) -> Option<String> {
    let (_, open) = settings
        .listeners
        .iter()
        .find(|(_, addr)| !addr.ip().is_loopback() && settings.proxy_auth.is_empty())?;
    Some(format!(
        "listening on {open} without --proxy-auth: the proxy is open to anyone who reaches it (add --proxy-auth USER:PASS)"
    ))
}

/// Loads the plugin chain and starts watching its files (and the config
/// file, when its `[[plugin]]` entries define the chain) for hot reload.
async fn load_plugins(
    settings: &Settings,
    args: &RunArgs,
) -> Result<(
    Arc<ArcSwap<plugin::Chain>>,
    Option<Arc<plugin::PluginEngine>>,
)> {
    let config_chain = args.config.clone().filter(|_| args.plugins.is_empty());
    if settings.plugins.is_empty() && config_chain.is_none() && settings.plugin_dir.is_none() {
        tracing::info!("no plugins: running as a plain intercepting proxy");
        return Ok((
            Arc::new(ArcSwap::from_pointee(plugin::Chain::default())),
            None,
        ));
    }
    let engine = plugin::PluginEngine::new(Some(settings.home.join("cache")))
        .map_err(|e| Error::PluginLoad(e.to_string()))?;
    let chain = plugin::Chain::load(&engine, &settings.plugins)
        .await
        .map_err(Error::PluginLoad)?;
    let chain = Arc::new(ArcSwap::from_pointee(chain));
    let triggers = plugin::Triggers {
        config: config_chain,
        dir: settings.plugin_dir.clone(),
    };
    let (args, home) = (args.clone(), settings.home.clone());
    let resolve: plugin::Resolver = Box::new(move || {
        Settings::resolve(&args, home.clone())
            .map(|s| s.plugins)
            .inspect(|plugins| cache_limit::configure(plugins))
            .map_err(|e| e.to_string())
    });
    plugin::watch(chain.clone(), engine.clone(), triggers, resolve).map_err(Error::PluginLoad)?;
    Ok((chain, Some(engine)))
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            Error::AddrInUse { addr }
        } else {
            Error::Bind { addr, source }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_listener_without_proxy_auth_is_warned_about() {
        let resolve = |args: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(
                ["proxlet", "--allow-remote", "--plugin", "none"]
                    .iter()
                    .chain(args),
            )
            .unwrap();
            Settings::resolve(&cli.run, "/nonexistent".into()).unwrap()
        };
        let open = resolve(&["--listen", "0.0.0.0:0"]);
        let warning = open_proxy_warning(&open).expect("a warning");
        assert!(
            warning.contains("0.0.0.0:0") && warning.contains("open to anyone"),
            "{warning}"
        );
        assert!(
            open_proxy_warning(&resolve(&["--listen", "[::]:0", "--proxy-auth", "u:p"])).is_none()
        );
        assert!(open_proxy_warning(&resolve(&["--listen", "127.0.0.1:0"])).is_none());
        assert!(open_proxy_warning(&resolve(&["--listen", "[::1]:0"])).is_none());
    }
}
