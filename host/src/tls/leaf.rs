//! Leaf certificates for intercepted hosts, issued by the proxlet CA on first
//! use and kept in a bounded LRU as ready-to-use rustls server configs.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ProducesTickets, StoresServerSessions},
    sign::{CertifiedKey, SigningKey, SingleCertAndKey},
    ServerConfig,
};
use time::{Duration, OffsetDateTime};

use super::CertificateAuthority;
use crate::error::{Error, Result};

/// How many hosts keep their certificate in memory.
const CAPACITY: usize = 1024;

pub struct LeafCertCache {
    ca: Arc<CertificateAuthority>,
    /// One key for every leaf (as mitmproxy does): issuing is then one
    /// signature, not a key generation.
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    configs: Mutex<LruCache<String, Arc<ServerConfig>>>,
}

impl LeafCertCache {
    pub fn new(ca: Arc<CertificateAuthority>) -> Result<Self> {
        let provider = super::provider();
        let leaf_key = KeyPair::generate().map_err(|e| Error::Tls(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            provider,
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            ticketer,
            configs: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).expect("non-zero"),
            )),
        })
    }

    /// The server config presenting a certificate for `host` (a DNS name or
    /// an IP literal), issuing it on first use.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if let Some(config) = self.lock().get(&host) {
            return Ok(config.clone());
        }
        let config = Arc::new(self.issue(&host)?);
        self.lock().put(host, config.clone());
        Ok(config)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ServerConfig>>> {
        // A panic while holding the lock cannot leave the LRU inconsistent
        // in a way that matters: at worst an entry is missing.
        self.configs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issue(&self, host: &str) -> Result<ServerConfig> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Tls(format!("cannot issue a certificate for {host}: {e}"))
        };
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(|e| fail(&e))?),
        };
        params.subject_alt_names = vec![san];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        // Browsers refuse leaves valid for more than 398 days.
        params.not_after = now + Duration::days(365);
        let cert = params
            .signed_by(&self.leaf_key, self.ca.issuer())
            .map_err(|e| fail(&e))?;

        let certified = CertifiedKey::new(
            vec![CertificateDer::from(cert.der().to_vec())],
            self.signing_key.clone(),
        );
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&e))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        Ok(config)
    }
}
