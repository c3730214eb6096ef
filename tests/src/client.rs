//! Clients through proxlet: curl as users run it, and hyper over a CONNECT
//! tunnel for tests that need many connections or streams.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::Proxlet;

/// curl (`command`, e.g. `curl` or `ip netns exec NS curl`) with `args`,
/// bounded to 30 s: the status (0 when there was none), body and stderr.
pub fn curl_status(mut command: Command, args: &[&str]) -> (u16, Vec<u8>, String) {
    let output = command
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let mut body = output.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (status, body, stderr)
}

/// What a curl run gave.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    /// `1.1` or `2`, as curl's `%{http_version}`.
    pub http_version: String,
    pub body: Vec<u8>,
    pub size_download: u64,
    /// Seconds the transfer took.
    pub time_total: f64,
    /// The `X-Proxlet` response header (what a built-in plugin did), or "".
    pub x_proxlet: String,
    /// curl's own messages (errors), without the `-w` line.
    pub stderr: String,
    pub success: bool,
}

impl Curl {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl ARGS` through `proxy`, trusting proxlet's CA.
pub fn curl(proxy: &Proxlet, args: &[&str]) -> Curl {
    curl_with(Some(proxy), &proxy.ca_path(), args)
}

/// Runs curl with `--cacert ca`, through `proxy` if given.
pub fn curl_with(proxy: Option<&Proxlet>, ca: &Path, args: &[&str]) -> Curl {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "120", "--cacert"])
        .arg(ca)
        .args([
            "-w",
            "%{stderr}\n@@ %{http_code} %{http_version} %{size_download} %{time_total} %header{x-proxlet}\n",
        ]);
    if let Some(proxy) = proxy {
        command.arg("-x").arg(proxy.url());
    }
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let (messages, stats) = stderr.rsplit_once("@@ ").unwrap_or((&stderr, "0 0 0"));
    let mut stats = stats.split_whitespace();
    Curl {
        status: stats.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: stats.next().unwrap_or("0").to_owned(),
        size_download: stats.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        time_total: stats.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        x_proxlet: stats.next().unwrap_or_default().to_owned(),
        body: output.stdout,
        stderr: messages.trim().to_owned(),
        success: output.status.success(),
    }
}

/// Opens a CONNECT tunnel through `proxy` to `target` and returns the raw
/// stream after the proxy's `200` line.
pub async fn connect_tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "proxy closed during CONNECT"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT answered {head}");
    stream
}

/// An HTTP/2 connection to `target` through a CONNECT tunnel of `proxy`,
/// trusting only the CA at `ca`.
pub async fn h2_through(
    proxy: SocketAddr,
    target: SocketAddr,
    ca: &Path,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = connect_tunnel(proxy, target).await;
    let config = crate::test_ca::client_config(ca, &[b"h2"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    let tls = connector.connect(name, stream).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}
