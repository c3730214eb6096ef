//! Proxy modes, as mitmproxy names them (`--mode SPEC[@ADDR|@PORT]`), each
//! on a listener of its own: `regular` (an explicit HTTP proxy with
//! CONNECT), `upstream:URL` (the same, but every request goes on through a
//! parent proxy), `reverse:URL` (proxlet in front of one origin: clients
//! send plain requests, proxlet fetches them from the origin),
//! `transparent` (connections redirected by the kernel, e.g. iptables
//! `REDIRECT`: the original destination comes from `SO_ORIGINAL_DST`) and
//! `socks5` (SOCKS5 CONNECT, TLS inside intercepted).

use std::net::SocketAddr;

use http::uri::{Authority, Scheme};

/// What a listener speaks to its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Regular,
    /// Every request is for this origin (`Host` rewritten to it).
    Reverse {
        scheme: Scheme,
        authority: Authority,
    },
    /// Like `Regular`, but every upstream connection goes through this
    /// parent proxy (absolute-form for http, CONNECT for https and tunnels).
    Upstream {
        scheme: Scheme,
        authority: Authority,
    },
    /// Connections redirected to proxlet by the kernel (Linux).
    Transparent,
    Socks5,
}

impl Mode {
    /// The mode's name in access logs, flow records and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Regular => "regular",
            Mode::Reverse { .. } => "reverse",
            Mode::Upstream { .. } => "upstream",
            Mode::Transparent => "transparent",
            Mode::Socks5 => "socks5",
        }
    }

    /// The port a spec without an address listens on.
    fn default_port(&self) -> u16 {
        match self {
            Mode::Socks5 => 1080,
            _ => 8080,
        }
    }

    /// Parses `SPEC[@ADDR|@PORT]`; a bare port binds 127.0.0.1.
    pub fn parse(text: &str) -> Result<(Mode, SocketAddr), String> {
        let (spec, addr) = match text.rsplit_once('@') {
            Some((spec, at)) if at.parse::<u16>().is_ok() || at.parse::<SocketAddr>().is_ok() => {
                (spec, Some(at))
            }
            _ => (text, None),
        };
        let mode = match (spec, spec.split_once(':')) {
            ("regular", _) => Mode::Regular,
            ("socks5", _) => Mode::Socks5,
            ("transparent", _) => Mode::Transparent,
            (_, Some(("reverse", url))) => {
                let (scheme, authority) = origin("reverse", url)?;
                Mode::Reverse { scheme, authority }
            }
            (_, Some(("upstream", url))) => {
                let (scheme, authority) = origin("upstream", url)?;
                if authority.port_u16().is_none() {
                    return Err(format!("upstream:{url}: give the parent proxy's port"));
                }
                Mode::Upstream { scheme, authority }
            }
            _ => {
                return Err(format!(
                    "unknown mode {spec:?}; modes: regular, upstream:http[s]://HOST:PORT, \
                     reverse:http[s]://HOST[:PORT], transparent, socks5"
                ))
            }
        };
        let addr = match addr {
            None => SocketAddr::from(([127, 0, 0, 1], mode.default_port())),
            Some(at) => match at.parse::<u16>() {
                Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
                Err(_) => at.parse().map_err(|_| format!("bad address {at:?}"))?,
            },
        };
        Ok((mode, addr))
    }
}

/// The scheme and authority of a `reverse:` origin or an `upstream:`
/// parent proxy: http or https, a host, no path and no credentials
/// (a parent's come from `--upstream-auth`).
fn origin(kind: &str, url: &str) -> Result<(Scheme, Authority), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{kind}:{url}: not a URL ({e})"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("{kind}:{url}: the URL must be http:// or https://")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.as_str().contains('@'))
        .ok_or_else(|| format!("{kind}:{url}: the URL needs a host (and no userinfo)"))?
        .clone();
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!(
            "{kind}:{url}: give scheme, host and port only (no path)"
        ));
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_the_mode_and_the_address() {
        let parsed = |t| Mode::parse(t).unwrap();
        assert_eq!(
            parsed("regular"),
            (Mode::Regular, "127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parsed("regular@9000"),
            (Mode::Regular, "127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            parsed("socks5"),
            (Mode::Socks5, "127.0.0.1:1080".parse().unwrap())
        );
        assert_eq!(
            parsed("socks5@[::1]:0"),
            (Mode::Socks5, "[::1]:0".parse().unwrap())
        );
        let (mode, addr) = parsed("reverse:https://pypi.org@8443");
        assert_eq!(addr, "127.0.0.1:8443".parse().unwrap());
        let Mode::Reverse { scheme, authority } = mode else {
            panic!("{mode:?}")
        };
        assert_eq!((scheme, authority.as_str()), (Scheme::HTTPS, "pypi.org"));
        let (mode, _) = parsed("reverse:http://127.0.0.1:3000");
        assert_eq!(mode.name(), "reverse");
        for bad in [
            "reverse:ftp://x",
            "reverse:https://",
            "reverse:https://a/b",
            "wireguard",
            "reverse:https://u:p@host",
        ] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        let (mode, addr) = parsed("upstream:http://proxy:3128@9090");
        assert_eq!(addr, "127.0.0.1:9090".parse().unwrap());
        let Mode::Upstream { scheme, authority } = mode else {
            panic!("{mode:?}")
        };
        assert_eq!((scheme, authority.as_str()), (Scheme::HTTP, "proxy:3128"));
        assert_eq!(parsed("transparent@0").0, Mode::Transparent);
        for bad in ["upstream:http://proxy", "upstream:http://u:p@proxy:3128"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
    }
}
