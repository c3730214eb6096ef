//! The package registries tests install from — a loopback HTTPS PyPI and
//! npm registry built by `tests/fixtures/packages.py`, Cargo, Go and Maven
//! registries built by `tests/fixtures/registries.py` — the caching proxy
//! in front of them, and the real clients that use it.

use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc};

use crate::{Origin, Proxlet, TestCa};

/// An HTTPS origin serving the index `tests/fixtures/packages.py` builds,
/// its absolute URLs on `host`.
pub fn registry(host: &str) -> (Origin, tempfile::TempDir) {
    build("packages.py", &[], host)
}

/// An HTTPS origin serving the `kind` registry (`cargo`, `go` or `maven`)
/// `tests/fixtures/registries.py` builds, its absolute URLs on `host`;
/// [`publish_next`] with the returned dir adds its later release.
pub fn registry_of(kind: &str, host: &str) -> (Origin, tempfile::TempDir) {
    build("registries.py", &[kind], host)
}

/// Publishes the later release of a [`registry_of`]: its new files, and the
/// index documents that list it, replacing theirs.
pub fn publish_next(origin: &Origin, built: &tempfile::TempDir) {
    serve(origin, built.path(), "manifest-next");
}

/// Runs the fixture `script` with `args`, an output dir and the origin's
/// URL, and serves what it lists in its `manifest`.
fn build(script: &str, args: &[&str], host: &str) -> (Origin, tempfile::TempDir) {
    let origin = Origin::https(Arc::new(TestCa::new("registry CA")));
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(script);
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg(dir.path())
        .arg(format!("https://{host}:{}/", origin.addr.port()))
        .status()
        .expect("python3 is installed");
    assert!(status.success(), "building the test packages failed");
    serve(&origin, dir.path(), "manifest");
    (origin, dir)
}

/// Serves the documents a fixture's `manifest` lists: "PATH<TAB>TYPE<TAB>FILE"
/// lines, several for one path being representations negotiated by Accept.
fn serve(origin: &Origin, dir: &Path, manifest: &str) {
    let manifest = std::fs::read_to_string(dir.join(manifest)).unwrap();
    let mut docs: BTreeMap<&str, Vec<(&str, Vec<u8>)>> = BTreeMap::new();
    for line in manifest.lines() {
        let mut fields = line.split('\t');
        let (path, kind, file) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let body = std::fs::read(dir.join(file)).unwrap();
        docs.entry(path).or_default().push((kind, body));
    }
    for (path, representations) in docs {
        origin.put(path, representations);
    }
}

/// A command with no proxy, trust-store or package-manager settings from
/// the machine.
pub fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if leaks(&key.to_ascii_lowercase()) {
            command.env_remove(&key);
        }
    }
    command
}

/// Whether the variable `lower` (lowercased) would make a client use
/// something other than what a test gives it.
fn leaks(lower: &str) -> bool {
    // Trust-store variables too: requests lets REQUESTS_CA_BUNDLE
    // override pip's --cert.
    const CA_BUNDLE: [&str; 4] = [
        "requests_ca_bundle",
        "curl_ca_bundle",
        "ssl_cert_file",
        "ssl_cert_dir",
    ];
    // The JVM reads these before any command-line option (a trust store,
    // proxy properties).
    const JAVA: [&str; 3] = ["java_tool_options", "_java_options", "jdk_java_options"];
    // Cargo, Go and Maven settings: CARGO_HOME, CARGO_HTTP_*, CARGO_TARGET_DIR
    // (the outer build's), GOPROXY, GOFLAGS, GOPATH, MAVEN_OPTS, MAVEN_ARGS…
    const PREFIXES: [&str; 6] = ["pip_", "npm_config", "cargo_", "go", "maven_", "rustflags"];
    lower.ends_with("_proxy")
        || PREFIXES.iter().any(|p| lower.starts_with(p))
        || CA_BUNDLE.contains(&lower)
        || JAVA.contains(&lower)
}

/// proxlet with the default caching stack into `cache`, trusting `origin`.
pub fn caching_proxy(origin: &Origin, cache: &Path, home: &Path, offline: bool) -> Proxlet {
    caching_proxy_with(origin, cache, home, &format!("offline = {offline}"))
}

/// [`caching_proxy`] with `cache_config` as the body of the cache plugin's
/// config table, e.g. `offline = true`.
pub fn caching_proxy_with(
    origin: &Origin,
    cache: &Path,
    home: &Path,
    cache_config: &str,
) -> Proxlet {
    caching_proxy_sharing(origin, cache, home, cache_config, None)
}

/// [`caching_proxy_with`] whose cache dir has `store`'s bucket under
/// `s3://BUCKET/fleet` as its shared second level.
pub fn caching_proxy_sharing(
    origin: &Origin,
    cache: &Path,
    home: &Path,
    cache_config: &str,
    store: Option<&crate::S3Server>,
) -> Proxlet {
    let config = home.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\nname = \"pypi-slash\"\n[[plugin]]\nname = \"error-links\"\n[[plugin]]\nname = \"cache\"\nconfig = {{ {cache_config} }}\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--upstream-ca",
    ];
    let ca = origin.ca_pem();
    args.push(&ca);
    let shared = format!("s3://{}/fleet", crate::s3::BUCKET);
    let env = match store {
        Some(store) => {
            args.extend(["--cache-store", &shared]);
            store.env()
        }
        None => Vec::new(),
    };
    Proxlet::start_with_env(home, &env, &args).unwrap_or_else(|e| panic!("{e}"))
}

pub fn pip_install(proxy: &Proxlet, origin: &Origin, target: &Path) -> std::process::Output {
    pip_install_from(&origin.url("/simple/"), Some(proxy), target)
}

/// `pip install pkg-a` from the index at `index`, through `proxy` (trusting
/// its CA) when given, into `target`.
pub fn pip_install_from(
    index: &str,
    proxy: Option<&Proxlet>,
    target: &Path,
) -> std::process::Output {
    let mut command = clean("python3");
    command
        .args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--timeout", "30", "--retries", "0"])
        .arg("--index-url")
        .arg(index);
    if let Some(proxy) = proxy {
        command
            .arg("--proxy")
            .arg(proxy.url())
            .arg("--cert")
            .arg(proxy.ca_path());
    }
    command
        .arg("--target")
        .arg(target)
        .arg("pkg-a")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .output()
        .expect("python3 -m pip runs")
}

/// Brings `origin` back, deletes the cached `file` (the artifact at URL
/// path `deleted`) and runs `install` again: the origin is asked for
/// `deleted` once more and for `kept` (cached beside it) not at all.
pub fn refetches_only_the_deleted(
    origin: &mut Origin,
    file: &Path,
    deleted: &str,
    kept: &str,
    install: impl FnOnce(&Origin),
) {
    origin.restart();
    std::fs::remove_file(file).unwrap();
    let (kept_before, deleted_before) = (origin.hits(kept), origin.hits(deleted));
    install(origin);
    assert_eq!(
        origin.hits(kept),
        kept_before,
        "{kept} must come from the cache"
    );
    assert_eq!(
        origin.hits(deleted),
        deleted_before + 1,
        "{deleted} is fetched again, once"
    );
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
