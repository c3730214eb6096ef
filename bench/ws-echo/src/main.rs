//! WebSocket echo servers (RFC 6455) on loopback, plain and over TLS: every
//! text or binary message goes back as it came, on one thread.
//!   ws-echo CERT_PEM KEY_PEM    prints "PLAIN_PORT TLS_PORT", then serves

use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    TlsAcceptor,
};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, cert, key] = &args[..] else {
        eprintln!("usage: ws-echo CERT_PEM KEY_PEM");
        std::process::exit(2);
    };
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("cannot read certificate {cert}: {e}"));
    let key =
        PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("cannot read key {key}: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .unwrap_or_else(|e| panic!("TLS configuration: {e}"));
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let secure = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!(
        "{} {}",
        plain.local_addr().expect("address").port(),
        secure.local_addr().expect("address").port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = plain.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(echo(tcp));
        }
    });
    while let Ok((tcp, _)) = secure.accept().await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                echo(tls).await;
            }
        });
    }
}

/// Echoes until the client closes; writes are flushed once per batch of
/// messages that had already arrived, not once per message.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(first)) = ws.next().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            if matches!(message, Message::Binary(_) | Message::Text(_))
                && ws.feed(message).await.is_err()
            {
                return;
            }
            next = match ws.next().now_or_never() {
                Some(Some(Ok(m))) => Some(m),
                Some(Some(Err(_))) | Some(None) => return,
                None => None,
            };
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}
