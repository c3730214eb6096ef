//! SOCKS5 (RFC 1928) listeners: a client asks for a TCP connection to a
//! host (by name or address) and port, optionally after RFC 1929
//! username/password authentication (required when `--proxy-auth` is
//! set); the connection is then served as a CONNECT tunnel is, TLS inside
//! intercepted.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{connect, io::Prefixed, ConnInfo, Proxy};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
// Replies (RFC 1928 §6).
const SUCCEEDED: u8 = 0;
const NOT_ALLOWED: u8 = 2;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// Serves one SOCKS5 client: the handshake within `--client-timeout`, then
/// the tunnel.
pub(crate) async fn serve(mut stream: TcpStream, proxy: Arc<Proxy>, conn: Arc<ConnInfo>) {
    let limit = proxy.settings.client_timeout;
    let target = match tokio::time::timeout(limit, handshake(&mut stream, &proxy)).await {
        Ok(Ok(target)) => target,
        Ok(Err(why)) => {
            return tracing::info!("socks5 client {}: {why}", conn.client);
        }
        Err(_) => {
            return tracing::info!(
                "socks5 client {}: no complete handshake within {limit:?} (--client-timeout)",
                conn.client
            );
        }
    };
    tracing::debug!("socks5 client {}: CONNECT {target}", conn.client);
    connect::tunnel(Prefixed::new(Bytes::new(), stream), target, proxy, conn).await;
}

/// The greeting, authentication and request; the target once the client
/// has been told it succeeded.
async fn handshake(stream: &mut TcpStream, proxy: &Proxy) -> Result<Authority, String> {
    let io = |e: std::io::Error| e.to_string();
    let [version, count] = read::<2>(stream).await.map_err(io)?;
    if version != VERSION {
        return Err(format!("not SOCKS5 (version byte {version})"));
    }
    let mut methods = vec![0; count as usize];
    stream.read_exact(&mut methods).await.map_err(io)?;
    let wanted = if proxy.auth.is_some() {
        USER_PASSWORD
    } else {
        NO_AUTH
    };
    if !methods.contains(&wanted) {
        stream
            .write_all(&[VERSION, NO_ACCEPTABLE_METHOD])
            .await
            .map_err(io)?;
        return Err(match wanted {
            USER_PASSWORD => "no username/password offered (--proxy-auth is set)".into(),
            _ => "no acceptable authentication method offered".into(),
        });
    }
    stream.write_all(&[VERSION, wanted]).await.map_err(io)?;
    if let Some(auth) = &proxy.auth {
        // RFC 1929: VER=1, ULEN, UNAME, PLEN, PASSWD.
        let [_, length] = read::<2>(stream).await.map_err(io)?;
        let mut user = vec![0; length as usize];
        stream.read_exact(&mut user).await.map_err(io)?;
        let [length] = read::<1>(stream).await.map_err(io)?;
        let mut password = vec![0; length as usize];
        stream.read_exact(&mut password).await.map_err(io)?;
        let allowed = auth.allows_user(&user, &password);
        stream
            .write_all(&[1, if allowed { 0 } else { 1 }])
            .await
            .map_err(io)?;
        if !allowed {
            return Err("wrong username or password (--proxy-auth)".into());
        }
    }
    let [version, command, _, kind] = read::<4>(stream).await.map_err(io)?;
    if version != VERSION {
        return Err(format!("bad request version {version}"));
    }
    let host = match kind {
        1 => std::net::Ipv4Addr::from(read::<4>(stream).await.map_err(io)?).to_string(),
        3 => {
            let [length] = read::<1>(stream).await.map_err(io)?;
            let mut name = vec![0; length as usize];
            stream.read_exact(&mut name).await.map_err(io)?;
            String::from_utf8(name).map_err(|_| "a host name that is not text".to_string())?
        }
        4 => format!(
            "[{}]",
            std::net::Ipv6Addr::from(read::<16>(stream).await.map_err(io)?)
        ),
        other => {
            reply(stream, ADDRESS_NOT_SUPPORTED).await.map_err(io)?;
            return Err(format!("address type {other} is not supported"));
        }
    };
    let port = u16::from_be_bytes(read::<2>(stream).await.map_err(io)?);
    if command != CONNECT {
        reply(stream, COMMAND_NOT_SUPPORTED).await.map_err(io)?;
        return Err(format!("command {command} is not supported (only CONNECT)"));
    }
    let Ok(target) = format!("{host}:{port}").parse::<Authority>() else {
        reply(stream, ADDRESS_NOT_SUPPORTED).await.map_err(io)?;
        return Err(format!("{host:?} is not a host name"));
    };
    if proxy.names_web_ui(target.host(), port) {
        reply(stream, NOT_ALLOWED).await.map_err(io)?;
        return Err("the web UI is not reachable through the proxy".into());
    }
    reply(stream, SUCCEEDED).await.map_err(io)?;
    Ok(target)
}

async fn read<const N: usize>(stream: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut bytes = [0; N];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// A reply with an unspecified bound address (the client does not use it).
async fn reply(stream: &mut TcpStream, code: u8) -> std::io::Result<()> {
    stream
        .write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
}
