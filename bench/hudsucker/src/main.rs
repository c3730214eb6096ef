//! A no-op MITM proxy on hudsucker, as its users build one: rcgen CA,
//! rustls (aws-lc-rs) upstream connector trusting one extra CA, no handlers.
//!   hudsucker-noop PORT CA_CERT_PEM CA_KEY_PEM UPSTREAM_CA_PEM

use std::{net::SocketAddr, sync::Arc};

use hudsucker::{
    certificate_authority::RcgenAuthority,
    rcgen::{Issuer, KeyPair},
    rustls::{self, crypto::aws_lc_rs, pki_types::pem::PemObject},
    Proxy,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, ca_cert, ca_key, upstream_ca] = &args[..] else {
        eprintln!("usage: hudsucker-noop PORT CA_CERT_PEM CA_KEY_PEM UPSTREAM_CA_PEM");
        std::process::exit(2);
    };
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let key = KeyPair::from_pem(&read(ca_key)).expect("CA key");
    let issuer = Issuer::from_ca_cert_pem(&read(ca_cert), key).expect("CA certificate");
    let ca = RcgenAuthority::new(issuer, 1_000, aws_lc_rs::default_provider());

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(upstream_ca).expect("upstream CA") {
        roots.add(cert.expect("upstream CA")).expect("upstream CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();

    let addr = SocketAddr::from(([127, 0, 0, 1], port.parse().expect("port")));
    let proxy = Proxy::builder()
        .with_addr(addr)
        .with_ca(ca)
        .with_http_connector(https)
        .build()
        .expect("proxy");
    eprintln!("hudsucker listening on http://{addr}");
    proxy.start().await.expect("proxy runs");
}
