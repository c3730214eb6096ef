//! Raw bytes from a proxy client, through the real listener and service
//! (no plugins): proxlet answers with an HTTP response or closes, never
//! panics or hangs, and keeps serving a well-formed request afterwards.
//! `ORIGIN` in the input is replaced by a loopback origin's address, so
//! well-formed requests reach an upstream (and `CONNECT ORIGIN` reaches the
//! TLS interception path). Run it in a network namespace with only
//! loopback (fuzz/run.sh does), so no other host is ever contacted.
#![no_main]

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, OnceLock},
    time::Duration,
};

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

struct Harness {
    runtime: Runtime,
    proxy: SocketAddr,
    origin: SocketAddr,
    runs: AtomicU64,
    _home: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let home = tempfile::tempdir().unwrap();
        let (proxy, origin) = runtime.block_on(async {
            let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let origin_addr = origin.local_addr().unwrap();
            tokio::spawn(serve_origin(origin));

            let cli = proxlet::cli::Cli::try_parse_from([
                "proxlet",
                "--plugin",
                "none",
                "--upstream-timeout",
                "300ms",
                "--client-timeout",
                "2s",
            ])
            .unwrap();
            let settings =
                proxlet::config::Settings::resolve(&cli.run, home.path().into()).unwrap();
            let ca =
                Arc::new(proxlet::tls::CertificateAuthority::load_or_create(home.path()).unwrap());
            let chain = Arc::new(arc_swap::ArcSwap::from_pointee(
                proxlet::plugin::Chain::default(),
            ));
            let proxy = proxlet::proxy::Proxy::new(settings, ca, chain).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(proxlet::proxy::serve(
                listener,
                proxy,
                std::future::pending(),
            ));
            (addr, origin_addr)
        });
        Harness {
            runtime,
            proxy,
            origin,
            runs: AtomicU64::new(0),
            _home: home,
        }
    })
}

/// Answers every request head with a small 200, keep-alive.
async fn serve_origin(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            let mut seen = Vec::new();
            while let Ok(Ok(n @ 1..)) =
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                seen.extend_from_slice(&buf[..n]);
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Sends `request`, half-closes, and reads until proxlet closes.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(proxy).await.expect("proxlet accepts");
    // The peer may close before all was written; that is an answer too.
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response));
    match read.await {
        Ok(_) => response,
        Err(_) => panic!("proxlet neither answered nor closed within 10 s"),
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let origin = h.origin.to_string();
    let request = replace_all(data, b"ORIGIN", origin.as_bytes());
    h.runtime.block_on(async {
        let response = exchange(h.proxy, &request).await;
        assert!(
            response.is_empty() || response.starts_with(b"HTTP/1."),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
        let runs = h.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if runs % 1000 == 0 {
            let good = format!(
                "GET http://{origin}/ HTTP/1.1\r\nhost: {origin}\r\nconnection: close\r\n\r\n"
            );
            let answer = exchange(h.proxy, good.as_bytes()).await;
            assert!(
                answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"ok"),
                "proxlet stopped serving: {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
    });
});

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
