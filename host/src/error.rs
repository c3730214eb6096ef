//! Errors that stop proxlet from starting or a command from completing.
//! Each message names what failed, on what, and what to do about it.

use std::{io, net::SocketAddr, path::PathBuf};

/// Everything that makes `proxlet` exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: the address is already in use (stop the other program or pick another port with --listen)")]
    AddrInUse { addr: SocketAddr },

    #[error("cannot listen on {addr}: {source} (check --listen)")]
    Bind { addr: SocketAddr, source: io::Error },

    #[error("refusing to listen on {addr}, which other machines can reach: pass --allow-remote if that is intended")]
    RemoteListen { addr: SocketAddr },

    #[error("invalid value {value:?} for {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        value: String,
        reason: String,
    },

    #[error("cannot read config {path:?}: {source} (check --config)")]
    ConfigRead { path: PathBuf, source: io::Error },

    #[error("invalid config {path:?}: line {line}: {message}")]
    ConfigParse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("cannot use proxlet home {path:?}: {source} (check --home or PROXLET_HOME)")]
    Home { path: PathBuf, source: io::Error },

    /// Like ssh's "permissions are too open": the home holds the CA key.
    #[error("{path:?} {problem}, so other users could {risk} (fix: {fix})")]
    HomeUnsafe {
        path: PathBuf,
        problem: String,
        risk: &'static str,
        fix: String,
    },

    #[error("cannot load the CA from {path:?}: {reason} (repair the file or run `proxlet ca regenerate`)")]
    CaLoad { path: PathBuf, reason: String },

    #[error("cannot create a CA certificate: {0}")]
    CaCreate(String),

    #[error("cannot load upstream CA {path:?}: {reason} (check --upstream-ca)")]
    UpstreamCa { path: PathBuf, reason: String },

    #[error("cannot set up TLS: {0}")]
    Tls(String),

    #[error("invalid plugin configuration: {reason}")]
    InvalidPlugin { reason: String },

    #[error("{0}")]
    PluginLoad(String),

    /// Reading, writing or converting flows.
    #[error("{0}")]
    Flows(String),

    /// `proxlet replay` saw responses that differ from the recorded ones.
    #[error("{0} of the replayed responses differ")]
    ReplayDiffers(usize),

    #[error("proxlet new: {0}")]
    Scaffold(String),

    #[error("{0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
