//! pip and npm installing through proxlet's caching stack from loopback
//! registries, then again offline from the cache alone.

use std::path::{Path, PathBuf};

use proxlet_tests::{
    packages::{
        assert_ok, caching_proxy, clean, pip_install, refetches_only_the_deleted, registry,
    },
    Origin, Proxlet,
};

#[test]
fn pip_installs_through_the_cache_then_offline_then_refetches_one_deleted_wheel() {
    let (mut origin, _packages) = registry("127.0.0.1");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let host = cache.join(format!("127.0.0.1_{}", origin.addr.port()));
    let wheel_a = "/packages/pkg_a-1.0-py3-none-any.whl";
    let wheel_b = "/packages/pkg_b-1.0-py3-none-any.whl";

    let proxy = caching_proxy(&origin, &cache, &work.path().join("home1"), false);
    let cold = work.path().join("cold");
    assert_ok(
        "cold pip install",
        &pip_install(&proxy, &origin, &cold),
        &proxy,
    );
    assert!(cold.join("pkg_a/__init__.py").is_file());
    assert!(cold.join("pkg_b/__init__.py").is_file());
    // The index pages (pip asks for PEP 691 JSON) and wheels, as plain files.
    for file in [
        "simple/pkg-a/index.html#vnd.pypi.simple.v1.json",
        "simple/pkg-b/index.html#vnd.pypi.simple.v1.json",
        &wheel_a[1..],
        &wheel_b[1..],
    ] {
        assert!(host.join(file).is_file(), "{file} is not cached");
    }

    origin.stop();
    let offline = caching_proxy(&origin, &cache, &work.path().join("home2"), true);
    let again = work.path().join("offline");
    assert_ok(
        "offline pip install",
        &pip_install(&offline, &origin, &again),
        &offline,
    );
    assert!(again.join("pkg_b/__init__.py").is_file());

    let refetch = work.path().join("refetch");
    refetches_only_the_deleted(
        &mut origin,
        &host.join(&wheel_b[1..]),
        wheel_b,
        wheel_a,
        |origin| {
            assert_ok(
                "pip install after deleting a wheel",
                &pip_install(&proxy, origin, &refetch),
                &proxy,
            );
        },
    );
    assert_eq!(origin.hits("/simple/pkg-a/"), 1);
}

/// npm's proxy agent checks an IP registry's certificate against
/// "localhost", so the npm registry is addressed by name.
fn npm_registry(origin: &Origin) -> String {
    format!("https://localhost:{}/", origin.addr.port())
}

fn npm_install(proxy: &Proxlet, origin: &Origin, project: &Path) -> std::process::Output {
    std::fs::create_dir_all(project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{ "name": "app", "version": "1.0.0", "private": true, "dependencies": { "pkg-c": "1.0.0" } }"#,
    )
    .unwrap();
    let npm_cache: PathBuf = project.join(".npm-cache");
    clean("npm")
        .current_dir(project)
        .args(["install", "--no-audit", "--no-fund", "--no-update-notifier"])
        .args(["--fetch-retries", "0", "--loglevel", "warn"])
        .arg("--registry")
        .arg(npm_registry(origin))
        .arg("--cache")
        .arg(&npm_cache)
        .arg("--cafile")
        .arg(proxy.ca_path())
        .arg("--proxy")
        .arg(proxy.url())
        .arg("--https-proxy")
        .arg(proxy.url())
        .env("NPM_CONFIG_USERCONFIG", project.join(".npmrc-none"))
        .output()
        .expect("npm runs")
}

#[test]
fn npm_installs_a_scoped_dependency_through_the_cache_then_offline() {
    let (mut origin, _packages) = registry("localhost");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let host = cache.join(format!("localhost_{}", origin.addr.port()));

    let proxy = caching_proxy(&origin, &cache, &work.path().join("home1"), false);
    let first = work.path().join("first");
    assert_ok("npm install", &npm_install(&proxy, &origin, &first), &proxy);
    assert!(first.join("node_modules/pkg-c/index.js").is_file());
    assert!(first.join("node_modules/@scope/dep/index.js").is_file());
    // The scoped packument is one file beside the tarball tree; the
    // unscoped one moved into its directory when the tarball needed it.
    let files = listing(&cache);
    for file in [
        "pkg-c/#file",
        "pkg-c/-/pkg-c-1.0.0.tgz",
        "@scope%2Fdep",
        "@scope/dep/-/dep-1.0.0.tgz",
    ] {
        assert!(
            host.join(file).is_file(),
            "{file} is not cached: {files:?}\n{}",
            proxy.log()
        );
    }

    origin.stop();
    let offline = caching_proxy(&origin, &cache, &work.path().join("home2"), true);
    let second = work.path().join("second");
    assert_ok(
        "offline npm install",
        &npm_install(&offline, &origin, &second),
        &offline,
    );
    assert!(second.join("node_modules/@scope/dep/index.js").is_file());
}

/// Every file under `dir`, relative.
fn listing(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}
