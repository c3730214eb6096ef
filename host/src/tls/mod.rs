//! Certificates: the proxlet CA on disk, leaf certificates it issues for
//! intercepted hosts, and the verifier used towards upstream servers.

mod ca;
mod leaf;
mod upstream;

pub(crate) use ca::current_uid;
pub use ca::CertificateAuthority;
pub use leaf::LeafCertCache;
pub use upstream::client_config;

use std::sync::Arc;

/// The one crypto provider every TLS config in the process uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
