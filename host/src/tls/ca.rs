//! The CA that signs intercepted certificates: created once in the proxlet
//! home (`ca.pem` 0644, `ca-key.pem` 0600) and loaded from there afterwards.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca-key.pem";

pub struct CertificateAuthority {
    cert_pem: String,
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    pub fn cert_path(home: &Path) -> PathBuf {
        home.join(CERT_FILE)
    }

    /// Loads the CA from `home`, creating it (and `home`) on first use.
    pub fn load_or_create(home: &Path) -> Result<Self> {
        let cert_path = Self::cert_path(home);
        let key_path = home.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => Self::create(home),
            (true, false) => Err(Error::CaLoad {
                path: key_path,
                reason: "the key file is missing while the certificate exists".into(),
            }),
            (false, true) => Err(Error::CaLoad {
                path: cert_path,
                reason: "the certificate file is missing while the key exists".into(),
            }),
        }
    }

    /// Creates a new CA in `home`, replacing any existing one.
    pub fn create(home: &Path) -> Result<Self> {
        let home_err = |source| Error::Home {
            path: home.to_owned(),
            source,
        };
        fs::create_dir_all(home).map_err(home_err)?;
        let _ = fs::set_permissions(home, fs::Permissions::from_mode(0o700));

        let key = KeyPair::generate().map_err(|e| Error::CaCreate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "proxlet CA");
        name.push(DnType::OrganizationName, "proxlet");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now + Duration::days(10 * 365);
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::CaCreate(e.to_string()))?;

        let cert_path = Self::cert_path(home);
        write_atomically(&home.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)
            .map_err(home_err)?;
        write_atomically(&cert_path, cert.pem().as_bytes(), 0o644).map_err(home_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_path,
            issuer: Issuer::new(params, key),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|e| Error::CaLoad {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let bad_key = |reason: String| Error::CaLoad {
            path: key_path.to_owned(),
            reason,
        };
        let bad_cert = |reason: String| Error::CaLoad {
            path: cert_path.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad_key(e.to_string()))?;

        // The pair must belong together, or every intercepted handshake fails later.
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad_cert(e.to_string()))?;
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad_key(e.to_string()))?;
        let signing_key = super::provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| bad_key(e.to_string()))?;
        rustls::sign::CertifiedKey::new(vec![cert_der], signing_key)
            .keys_match()
            .map_err(|_| bad_cert(format!("it does not match the key in {key_path:?}")))?;

        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad_cert(e.to_string()))?;
        Ok(Self {
            cert_pem,
            cert_path: cert_path.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn path(&self) -> &Path {
        &self.cert_path
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// Writes `bytes` to a temp file beside `path` with `mode`, then renames it,
/// so a crash never leaves a half-written key.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}
