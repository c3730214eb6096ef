//! A throwaway CA and a server certificate for the loopback origins.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    pub cert_pem: String,
    pub cert_path: PathBuf,
    pub server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    /// The leaf and its key as PEM files, for servers that are not Rust.
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// A CA named `name` and a leaf for localhost, 127.0.0.1 and ::1.
    pub fn new(name: &str) -> Self {
        Self::with_names(name, &[])
    }

    /// [`TestCa::new`] with a leaf also valid for the DNS `names`.
    pub fn with_names(name: &str, names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().unwrap();
        let dns = std::iter::once("localhost").chain(names.iter().copied());
        let mut params =
            CertificateParams::new(dns.map(str::to_owned).collect::<Vec<_>>()).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().unwrap()));
        let cert = params.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("test-ca.pem");
        std::fs::write(&cert_path, ca_cert.pem()).unwrap();
        let server_cert_path = dir.path().join("server.pem");
        std::fs::write(&server_cert_path, cert.pem()).unwrap();
        let server_key_path = dir.path().join("server.key");
        std::fs::write(&server_key_path, key.serialize_pem()).unwrap();
        Self {
            cert_pem: ca_cert.pem(),
            cert_path,
            server_chain: vec![cert.der().clone()],
            server_key: key.serialize_der(),
            server_cert_path,
            server_key_path,
            _dir: dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.cert_path
    }

    pub fn server_config(&self) -> rustls::ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(self.server_chain.clone(), key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// A rustls client config trusting only the PEM certificates in `ca_pem`.
pub fn client_config(ca_pem: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}
