//! The CA that signs intercepted certificates: created once in the proxlet
//! home (`ca.pem` 0644, `ca-key.pem` 0600) and loaded from there afterwards.
//! Like ssh, it refuses a key or a home that other users could read or change.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
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
        check_home(home)?;
        let cert_path = Self::cert_path(home);
        let key_path = home.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                check_key(&key_path)?;
                Self::load(&cert_path, &key_path)
            }
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
        check_home(home)?;
        if !home.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .map_err(home_err)?;
        }

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

/// Refuses a home that another user owns or can write to (unless, like
/// `/tmp`, it is sticky and ours): they could swap the CA key, or the
/// compiled plugin code that is loaded from `<home>/cache/` without checks.
/// A home that does not exist yet is fine: it is created with mode 0700.
fn check_home(home: &Path) -> Result<()> {
    let meta = match fs::metadata(home) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Home {
                path: home.to_owned(),
                source,
            })
        }
    };
    const RISK: &str = "replace the CA key or the compiled plugin code in it";
    check_owner(home, &meta, RISK)?;
    let mode = meta.mode() & 0o7777;
    let sticky_and_ours = mode & 0o1000 != 0 && meta.uid() == current_uid();
    if mode & 0o022 != 0 && !sticky_and_ours {
        return Err(Error::HomeUnsafe {
            path: home.to_owned(),
            problem: format!("has mode {mode:04o} (writable by group or others)"),
            risk: RISK,
            fix: format!("chmod 700 {}", shell_quote(home)),
        });
    }
    Ok(())
}

/// Refuses a CA key that is not private to us, like ssh's "UNPROTECTED
/// PRIVATE KEY FILE": whoever reads it can impersonate any site to us.
fn check_key(key_path: &Path) -> Result<()> {
    let meta = fs::metadata(key_path).map_err(|e| Error::CaLoad {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    const RISK: &str = "use the CA key to impersonate any site to clients that trust it";
    check_owner(key_path, &meta, RISK)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::HomeUnsafe {
            path: key_path.to_owned(),
            problem: format!("has mode {mode:04o} (open to group or others)"),
            risk: RISK,
            fix: format!("chmod 600 {}", shell_quote(key_path)),
        });
    }
    Ok(())
}

/// Owned by us or by root, as ssh requires of the files it trusts.
fn check_owner(path: &Path, meta: &fs::Metadata, risk: &'static str) -> Result<()> {
    let me = current_uid();
    if meta.uid() == me || meta.uid() == 0 {
        return Ok(());
    }
    Err(Error::HomeUnsafe {
        path: path.to_owned(),
        problem: format!("is owned by uid {}, not by you (uid {me})", meta.uid()),
        risk,
        fix: format!(
            "chown {me} {} or choose a home of your own with --home",
            shell_quote(path)
        ),
    })
}

/// The effective user proxlet runs as: the owner its private files need.
pub(crate) fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `path` as one shell word, so the suggested command can be pasted.
fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
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
