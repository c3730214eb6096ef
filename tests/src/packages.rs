//! The package registries tests install from: a loopback HTTPS PyPI built
//! by `tests/fixtures/packages.py`, and the real clients that use it.

use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc};

use crate::{Origin, Proxlet, TestCa};

/// An HTTPS origin serving the index `tests/fixtures/packages.py` builds,
/// its absolute URLs on `host`.
pub fn registry(host: &str) -> (Origin, tempfile::TempDir) {
    let origin = Origin::https(Arc::new(TestCa::new("registry CA")));
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/packages.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .arg(format!("https://{host}:{}/", origin.addr.port()))
        .status()
        .expect("python3 is installed");
    assert!(status.success(), "building the test packages failed");
    let manifest = std::fs::read_to_string(dir.path().join("manifest")).unwrap();
    let mut docs: BTreeMap<&str, Vec<(&str, Vec<u8>)>> = BTreeMap::new();
    for line in manifest.lines() {
        let mut fields = line.split('\t');
        let (path, kind, file) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let body = std::fs::read(dir.path().join(file)).unwrap();
        docs.entry(path).or_default().push((kind, body));
    }
    for (path, representations) in docs {
        origin.put(path, representations);
    }
    (origin, dir)
}

/// A command with no proxy or package-manager settings from the machine.
pub fn clean(program: &str) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        let lower = key.to_ascii_lowercase();
        // Trust-store variables too: requests lets REQUESTS_CA_BUNDLE
        // override pip's --cert.
        let ca_bundle = [
            "requests_ca_bundle",
            "curl_ca_bundle",
            "ssl_cert_file",
            "ssl_cert_dir",
        ];
        if lower.ends_with("_proxy")
            || lower.starts_with("pip_")
            || lower.starts_with("npm_config")
            || ca_bundle.contains(&lower.as_str())
        {
            command.env_remove(&key);
        }
    }
    command
}

pub fn pip_install(proxy: &Proxlet, origin: &Origin, target: &Path) -> std::process::Output {
    clean("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--timeout", "30", "--retries", "0"])
        .arg("--index-url")
        .arg(origin.url("/simple/"))
        .arg("--proxy")
        .arg(proxy.url())
        .arg("--cert")
        .arg(proxy.ca_path())
        .arg("--target")
        .arg(target)
        .arg("pkg-a")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .output()
        .expect("python3 -m pip runs")
}

pub fn assert_ok(what: &str, output: &std::process::Output, proxy: &Proxlet) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}\nproxlet:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        proxy.log()
    );
}
