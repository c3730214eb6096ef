//! Client replay from the web UI: the request is sent through proxlet's own
//! listener, as a client would send it (CONNECT and TLS trusting proxlet's
//! CA for https), so plugins, intercepting and recording treat it as any
//! other flow, and it appears in the list as a new one.

use std::{sync::Arc, time::Duration};

use http::{header, HeaderValue, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::proxy::{body::Body, Proxy};

/// Longest CONNECT answer head read.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// Sends `request` (absolute URL, no `Host`) through the proxy; the
/// response's status, once its body has been read (and dropped).
pub(super) async fn send(proxy: &Arc<Proxy>, mut request: Request<Body>) -> Result<u16, String> {
    let uri = request.uri().clone();
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = crate::proxy::headers::port_of(&uri);
    // Host is the URL's authority.
    let host_field = match (uri.port_u16(), uri.authority()) {
        (Some(p), Some(a)) if p != if https { 443 } else { 80 } => a.as_str().to_owned(),
        _ => match host.contains(':') {
            true => format!("[{host}]"),
            false => host.clone(),
        },
    };
    let host_value = HeaderValue::from_str(&host_field).map_err(|e| e.to_string())?;
    request.headers_mut().insert(header::HOST, host_value);
    let authorization = proxy.own_credentials().map(|c| {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        format!("Basic {token}")
    });
    let limit = proxy_timeout(proxy);
    let exchange = async {
        let tcp = TcpStream::connect(proxy.local_addr())
            .await
            .map_err(|e| format!("cannot reach the proxy listener: {e}"))?;
        tcp.set_nodelay(true).ok();
        if https {
            let mut tcp = tcp;
            connect(&mut tcp, &host, port, authorization.as_deref()).await?;
            let tls = tls_to(proxy, tcp, &host).await?;
            let target = uri.path_and_query().map_or("/", |p| p.as_str());
            *request.uri_mut() = target.parse().map_err(|e| format!("bad target: {e}"))?;
            exchange(tls, request).await
        } else {
            if let Some(value) = authorization.and_then(|a| HeaderValue::from_str(&a).ok()) {
                request
                    .headers_mut()
                    .insert(header::PROXY_AUTHORIZATION, value);
            }
            exchange(tcp, request).await
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

fn proxy_timeout(proxy: &Proxy) -> Duration {
    proxy.upstream_timeout() * 2
}

/// Opens a tunnel to `host:port` through the proxy.
async fn connect(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    authorization: Option<&str>,
) -> Result<(), String> {
    let authority = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = authorization {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte: nothing of the tunnel's first bytes may be read here.
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_CONNECT_HEAD
            || tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0
        {
            return Err("the proxy closed the CONNECT".into());
        }
        answer.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let first = line.lines().next().unwrap_or("");
        return Err(format!("CONNECT {authority}: {first}"));
    }
    Ok(())
}

/// TLS inside the tunnel, trusting proxlet's own CA (the proxy intercepts).
async fn tls_to(
    proxy: &Proxy,
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(proxy.ca().cert_pem().as_bytes())
        .map_err(|e| format!("proxlet's CA: {e}"))?;
    roots.add(ca).map_err(|e| format!("proxlet's CA: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS through the proxy: {e}"))
}

async fn exchange<S>(io: S, request: Request<Body>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read to the end so the flow completes (and is recorded) as a whole.
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| e.to_string())?;
    }
    Ok(status)
}
