//! Where a request goes, decided once before any plugin runs: the URL
//! plugins see, the authority fetched and every cache key are this one.
//! Requests to proxlet itself (not through it) are answered here too.

use http::{header, uri::Scheme, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::proxy::{
    body::{text_response, Body},
    headers,
    mode::Mode,
    ConnInfo, Proxy,
};

/// The absolute URI a request is for, without userinfo (RFC 9110 §4.2.4:
/// it is never forwarded, and is kept out of logs and plugins). On the
/// listener a proxy request carries an absolute URI (RFC 9112 §3.2.2).
/// Inside an intercepted tunnel the scheme is https and the CONNECT
/// authority rules: a request naming another authority — an absolute-form
/// target, an HTTP/2 `:authority` or a `Host` field — gets 421 Misdirected
/// Request (RFC 9110 §15.5.20) rather than reaching a host the tunnel and
/// its certificate were not made for.
pub(super) fn target_uri(
    request: &Request<Incoming>,
    conn: &ConnInfo,
) -> Result<Uri, (StatusCode, String)> {
    let uri = request.uri();
    let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
    // Reverse: every request is for the one origin, whatever its target
    // named (the path is kept).
    if let (Mode::Reverse { scheme, authority }, None) = (&*conn.mode, &conn.tunnel) {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        return Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| bad(format!("bad request target: {e}")));
    }
    let Some(tunnel) = &conn.tunnel else {
        return match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {
                headers::without_userinfo(uri).map_err(|e| bad(format!("bad request target: {e}")))
            }
            Some(s) => Err(bad(format!(
                "scheme {s} is not proxied; use CONNECT for https"
            ))),
            // Origin-form: addressed to proxlet itself.
            None => Ok(uri.clone()),
        };
    };
    let named = uri.authority().map(|a| a.as_str()).into_iter().chain(
        request
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|v| v.to_str().unwrap_or("\0")),
    );
    for name in named {
        if !headers::names_authority(name, tunnel, 443) {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                format!("this tunnel is to {tunnel}, not to {name}"),
            ));
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = match tunnel.port_u16() {
        Some(443) => tunnel.host(),
        _ => tunnel.as_str(),
    };
    Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| bad(format!("bad request target: {e}")))
}

/// Answers requests sent to proxlet as a web server: `/ca.pem` hands out the
/// CA certificate (like mitm.it), anything else explains how to use a proxy.
pub(super) fn local_response(proxy: &Proxy, target: &Uri) -> Response<Body> {
    if target.path() == "/ca.pem" {
        let mut response = text_response(StatusCode::OK, proxy.ca().cert_pem().trim_end());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        return response;
    }
    text_response(
        StatusCode::BAD_REQUEST,
        format!(
            "proxlet is a proxy: send requests through it (curl -x http://{0} …); its CA certificate is at http://{0}/ca.pem",
            proxy.settings.listen()
        ),
    )
}
