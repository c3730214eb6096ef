//! cargo, Go and Maven resolving through proxlet's caching stack from
//! loopback registries: cold, then offline from the cache alone (with fresh
//! client-side caches, so every file comes through the proxy), then after
//! one cached artifact was deleted (only it is fetched again), then after a
//! new release was published (the revalidated index documents show it).
//!
//! The online proxy runs the cache's default revalidate rules with TTL 0,
//! so each index document is revalidated at once: no test waits for a TTL,
//! and the rules proven are the ones users get.

#[path = "../../plugins/cache/src/rules.rs"]
#[allow(dead_code)]
mod rules;

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use proxlet_tests::{
    packages::{
        assert_ok, caching_proxy, caching_proxy_with, clean, publish_next,
        refetches_only_the_deleted, registry_of,
    },
    Origin, Proxlet,
};

/// The cache's config: its default revalidate rules, each with TTL 0.
fn revalidate_at_once() -> String {
    let rules: Vec<String> = rules::DEFAULT_RULES
        .iter()
        .map(|rule| {
            let kind = rule
                .content_type
                .map(|t| format!(", type = '{t}'"))
                .unwrap_or_default();
            format!("{{ url = '{}'{kind}, ttl = \"0\" }}", rule.url)
        })
        .collect();
    format!("revalidate = [{}]", rules.join(", "))
}

/// A test's scratch space: the proxy's cache dir and fresh dirs on demand.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `name` under the scratch dir, created empty.
    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The online proxy, revalidating index documents at once.
    fn online(&self, origin: &Origin) -> Proxlet {
        caching_proxy_with(
            origin,
            &self.cache(),
            &self.dir.path().join("home-online"),
            &revalidate_at_once(),
        )
    }

    /// A proxy that never contacts the upstream.
    fn offline(&self, origin: &Origin) -> Proxlet {
        caching_proxy(
            origin,
            &self.cache(),
            &self.dir.path().join("home-offline"),
            true,
        )
    }
}

/// Fails naming each of `files` (relative to `dir`) that is not a file.
fn assert_cached(dir: &Path, files: &[&str], proxy: &Proxlet) {
    let missing: Vec<&&str> = files.iter().filter(|f| !dir.join(f).is_file()).collect();
    assert!(
        missing.is_empty(),
        "not cached under {}: {missing:?}\nproxlet:\n{}",
        dir.display(),
        proxy.log()
    );
}

/// Fails unless the file at `path` contains `needle`: a cached index
/// document that was replaced by its new version.
fn assert_contains(path: &Path, needle: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(needle),
        "{needle} not in {}:\n{text}",
        path.display()
    );
}

// cargo ------------------------------------------------------------------

/// A binary crate depending on `hello = "1"` from crates.io, which its
/// `.cargo/config.toml` replaces with the loopback sparse registry.
fn cargo_project(dir: &Path, origin: &Origin) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nhello = \"1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() {\n    println!(\"{}\", hello::greeting());\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(".cargo/config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"loopback\"\n\n[source.loopback]\nregistry = \"sparse+{}\"\n",
            origin.url("/index/")
        ),
    )
    .unwrap();
}

/// `cargo ARGS` in `project` through `proxy`, with `cargo_home` as its own
/// (empty at first) home, so nothing comes from an earlier run's caches.
fn cargo(proxy: &Proxlet, project: &Path, cargo_home: &Path, args: &[&str]) -> Output {
    // The cargo running these tests, not whatever `cargo` is on PATH.
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    clean(program)
        .current_dir(project)
        .args(args)
        .env("CARGO_HOME", cargo_home)
        .env("CARGO_HTTP_PROXY", proxy.url())
        .env("CARGO_HTTP_CAINFO", proxy.ca_path())
        .env("CARGO_HTTP_TIMEOUT", "30")
        .env("CARGO_NET_RETRY", "0")
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .expect("cargo runs")
}

/// The version of `name` a Cargo.lock resolved.
fn locked_version(project: &Path, name: &str) -> String {
    let lock = std::fs::read_to_string(project.join("Cargo.lock")).unwrap();
    let entry = format!("name = \"{name}\"\nversion = \"");
    let start = lock
        .find(&entry)
        .unwrap_or_else(|| panic!("{name} in\n{lock}"))
        + entry.len();
    lock[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn cargo_builds_from_a_sparse_registry_through_the_cache_then_offline() {
    let (mut origin, built) = registry_of("cargo", "127.0.0.1");
    let work = Work::new();
    let host = work
        .cache()
        .join(format!("127.0.0.1_{}", origin.addr.port()));
    let hello = "/api/v1/crates/hello/1.0.0/download";
    let abc = "/api/v1/crates/abc/1.0.0/download";

    let proxy = work.online(&origin);
    let app = work.dir.path().join("app");
    cargo_project(&app, &origin);
    let cold = cargo(&proxy, &app, &work.fresh("cargo-home-cold"), &["build"]);
    assert_ok("cold cargo build", &cold, &proxy);
    assert_eq!(locked_version(&app, "hello"), "1.0.0");
    // The index root's config, index files in two prefix layouts, crates.
    assert_cached(
        &host,
        &[
            "index/config.json",
            "index/he/ll/hello",
            "index/3/a/abc",
            &hello[1..],
            &abc[1..],
        ],
        &proxy,
    );

    origin.stop();
    let offline = work.offline(&origin);
    std::fs::remove_dir_all(app.join("target")).unwrap();
    let again = cargo(
        &offline,
        &app,
        &work.fresh("cargo-home-offline"),
        &["build", "--locked"],
    );
    assert_ok("offline cargo build", &again, &offline);
    let run = std::process::Command::new(app.join("target/debug/app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello abc 1.0.0\n");

    refetches_only_the_deleted(&mut origin, &host.join(&abc[1..]), abc, hello, |_| {
        let refetch = cargo(
            &proxy,
            &app,
            &work.fresh("cargo-home-refetch"),
            &["fetch", "--locked"],
        );
        assert_ok("cargo fetch after deleting a crate", &refetch, &proxy);
    });

    // A new release shows in the revalidated index file.
    publish_next(&origin, &built);
    let newer = work.dir.path().join("app-newer");
    cargo_project(&newer, &origin);
    let update = cargo(&proxy, &newer, &work.fresh("cargo-home-newer"), &["fetch"]);
    assert_ok("cargo fetch after a release", &update, &proxy);
    assert_eq!(locked_version(&newer, "hello"), "1.1.0");
    assert_eq!(origin.hits("/api/v1/crates/hello/1.1.0/download"), 1);
    assert_cached(&host, &["api/v1/crates/hello/1.1.0/download"], &proxy);
    assert_contains(&host.join("index/he/ll/hello"), r#""vers":"1.1.0""#);
}

// Go ---------------------------------------------------------------------

/// The GOPROXY URL of `origin`. Go never sends requests for `localhost` or
/// a loopback IP through a proxy (net/http's ProxyFromEnvironment), but it
/// compares the name case-sensitively: `LOCALHOST` goes through proxlet,
/// which resolves it like `localhost` (and stores it under `localhost_PORT`).
fn goproxy(origin: &Origin) -> String {
    format!("https://LOCALHOST:{}", origin.addr.port())
}

/// A main module `example.com/app` in `dir` requiring `requires` (e.g.
/// `example.com/hello v1.0.0`) and printing hello's greeting.
fn go_module(dir: &Path, requires: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("go.mod"),
        format!("module example.com/app\n\ngo 1.18\n{requires}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/hello\"\n)\n\nfunc main() { fmt.Println(hello.Greeting(), hello.Version) }\n",
    )
    .unwrap();
}

/// `go ARGS` in `dir` through `proxy`, with `gopath` (module cache inside)
/// as its own; the build cache is shared, it holds no downloads.
fn go(
    proxy: &Proxlet,
    origin: &Origin,
    work: &Work,
    dir: &Path,
    gopath: &Path,
    args: &[&str],
) -> Output {
    clean("go")
        .current_dir(dir)
        .args(args)
        .env("GOPROXY", goproxy(origin))
        .env("GOSUMDB", "off")
        // -modcacherw: the module cache is removable with the temp dir.
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("GOTOOLCHAIN", "local")
        .env("GOENV", "off")
        .env("GOPATH", gopath)
        .env("GOMODCACHE", gopath.join("pkg/mod"))
        .env("GOCACHE", work.fresh("go-build-cache"))
        .env("CGO_ENABLED", "0")
        .env("HTTPS_PROXY", proxy.url())
        .env("SSL_CERT_FILE", proxy.ca_path())
        .output()
        .expect("go runs")
}

#[test]
fn go_builds_modules_through_the_cache_then_offline() {
    let (mut origin, built) = registry_of("go", "127.0.0.1");
    let work = Work::new();
    let host = work
        .cache()
        .join(format!("localhost_{}", origin.addr.port()));
    let hello = "/example.com/hello/@v/v1.0.0.zip";
    // example.com/World: `!`-escaped by the GOPROXY protocol, and that `!`
    // percent-encoded on the wire; the cache file has it decoded.
    let world = "/example.com/%21world/@v/v1.0.0.zip";
    let world_file = "example.com/!world/@v/v1.0.0.zip";

    let proxy = work.online(&origin);
    let app = work.dir.path().join("app");
    go_module(&app, "\nrequire example.com/hello v1.0.0\n");
    let build = |proxy: &Proxlet, origin: &Origin, gopath: &str| {
        let gopath = work.fresh(gopath);
        go(
            proxy,
            origin,
            &work,
            &app,
            &gopath,
            &["build", "-o", "app", "."],
        )
    };
    assert_ok(
        "cold go build",
        &build(&proxy, &origin, "gopath-cold"),
        &proxy,
    );
    assert_cached(
        &host,
        &[
            "example.com/hello/@v/v1.0.0.mod",
            &hello[1..],
            "example.com/!world/@v/v1.0.0.mod",
            world_file,
        ],
        &proxy,
    );

    // go.sum now holds both modules' hashes: the offline build checks the
    // cached zips against them.
    origin.stop();
    let offline = work.offline(&origin);
    std::fs::remove_file(app.join("app")).unwrap();
    assert_ok(
        "offline go build",
        &build(&offline, &origin, "gopath-offline"),
        &offline,
    );
    let run = std::process::Command::new(app.join("app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello world v1.0.0\n");

    refetches_only_the_deleted(
        &mut origin,
        &host.join(world_file),
        world,
        hello,
        |origin| {
            assert_ok(
                "go build after deleting a module zip",
                &build(&proxy, origin, "gopath-refetch"),
                &proxy,
            );
        },
    );

    // `go get @latest` reads @v/list: v1.0.0 at first, then, once v1.1.0
    // is published, the revalidated list shows it.
    let latest = |name: &str| {
        let module = work.dir.path().join(name);
        go_module(&module, "");
        let gopath = work.fresh(&format!("gopath-{name}"));
        let get = go(
            &proxy,
            &origin,
            &work,
            &module,
            &gopath,
            &["get", "example.com/hello@latest"],
        );
        assert_ok("go get example.com/hello@latest", &get, &proxy);
        std::fs::read_to_string(module.join("go.mod")).unwrap()
    };
    let go_mod = latest("app-latest");
    assert!(go_mod.contains("example.com/hello v1.0.0"), "{go_mod}");
    publish_next(&origin, &built);
    let go_mod = latest("app-newer");
    assert!(go_mod.contains("example.com/hello v1.1.0"), "{go_mod}");
    assert_eq!(origin.hits("/example.com/hello/@v/v1.1.0.zip"), 1);
    assert_contains(&host.join("example.com/hello/@v/list"), "v1.1.0\n");
}

// Maven ------------------------------------------------------------------

/// A project whose parent POM and build extension (`hello`, depending on
/// `world` in the range [1.0,2.0)) come from the repository: Maven resolves
/// both while it reads the project, so `mvn validate` downloads POMs, jars,
/// checksums and, for the range, `maven-metadata.xml`, and needs no plugin
/// from anywhere else.
fn maven_project(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("pom.xml"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <parent>
    <groupId>com.example</groupId>
    <artifactId>parent</artifactId>
    <version>1.0</version>
    <relativePath/>
  </parent>
  <artifactId>app</artifactId>
  <packaging>pom</packaging>
  <build>
    <extensions>
      <extension>
        <groupId>com.example</groupId>
        <artifactId>hello</artifactId>
        <version>1.0</version>
      </extension>
    </extensions>
  </build>
</project>
"#,
    )
    .unwrap();
}

/// Maven's settings for one proxy: every repository mirrored by the
/// loopback one, reached through proxlet.
fn maven_settings(dir: &Path, proxy: &Proxlet, origin: &Origin) -> PathBuf {
    let settings = dir.join("settings.xml");
    std::fs::write(
        &settings,
        format!(
            r#"<settings>
  <mirrors>
    <mirror><id>loopback</id><mirrorOf>*</mirrorOf><url>{}</url></mirror>
  </mirrors>
  <proxies>
    <proxy><id>proxlet</id><active>true</active><protocol>https</protocol><host>127.0.0.1</host><port>{}</port></proxy>
  </proxies>
</settings>
"#,
            origin.url("/maven2"),
            proxy.addr.port()
        ),
    )
    .unwrap();
    settings
}

/// A PKCS#12 trust store holding only `proxy`'s CA (Java 17 cannot read
/// PEM trust stores).
fn java_trust_store(dir: &Path, proxy: &Proxlet) -> PathBuf {
    let store = dir.join("trust.p12");
    let output = clean("keytool")
        .args(["-importcert", "-noprompt", "-alias", "proxlet"])
        .arg("-file")
        .arg(proxy.ca_path())
        .arg("-keystore")
        .arg(&store)
        .args(["-storetype", "PKCS12", "-storepass", "changeit"])
        .output()
        .expect("keytool runs");
    assert_ok("keytool -importcert", &output, proxy);
    store
}

/// `mvn validate` of `project` through `proxy` into `repo`, a fresh local
/// repository.
fn mvn(proxy: &Proxlet, origin: &Origin, work: &Work, project: &Path, repo: &str) -> Output {
    let config = work.fresh(&format!("{repo}-config"));
    let settings = maven_settings(&config, proxy, origin);
    // Nothing from the machine's global settings either.
    let global = config.join("global-settings.xml");
    std::fs::write(&global, "<settings/>\n").unwrap();
    let trust = java_trust_store(&config, proxy);
    clean("mvn")
        .current_dir(project)
        .args(["-B", "-e", "validate"])
        .arg("-s")
        .arg(&settings)
        .arg("-gs")
        .arg(&global)
        .arg(format!("-Dmaven.repo.local={}", work.fresh(repo).display()))
        .env(
            "MAVEN_OPTS",
            format!(
                "-Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=PKCS12",
                trust.display()
            ),
        )
        .output()
        .expect("mvn runs")
}

#[test]
fn maven_resolves_through_the_cache_then_offline() {
    let (mut origin, built) = registry_of("maven", "127.0.0.1");
    let work = Work::new();
    let host = work
        .cache()
        .join(format!("127.0.0.1_{}", origin.addr.port()));
    let repo = "/maven2/com/example";
    let hello = format!("{repo}/hello/1.0/hello-1.0.jar");
    let world = format!("{repo}/world/1.0/world-1.0.jar");

    let proxy = work.online(&origin);
    let app = work.dir.path().join("app");
    maven_project(&app);
    assert_ok(
        "cold mvn validate",
        &mvn(&proxy, &origin, &work, &app, "m2-cold"),
        &proxy,
    );
    assert_cached(
        &host,
        &[
            "maven2/com/example/parent/1.0/parent-1.0.pom",
            "maven2/com/example/hello/1.0/hello-1.0.pom",
            &hello[1..],
            "maven2/com/example/hello/1.0/hello-1.0.jar.sha1",
            "maven2/com/example/world/maven-metadata.xml",
            &world[1..],
        ],
        &proxy,
    );

    origin.stop();
    let offline = work.offline(&origin);
    let again = mvn(&offline, &origin, &work, &app, "m2-offline");
    assert_ok("offline mvn validate", &again, &offline);
    assert!(work
        .dir
        .path()
        .join("m2-offline/com/example/world/1.0/world-1.0.jar")
        .is_file());

    refetches_only_the_deleted(
        &mut origin,
        &host.join(&world[1..]),
        &world,
        &hello,
        |origin| {
            assert_ok(
                "mvn validate after deleting a jar",
                &mvn(&proxy, origin, &work, &app, "m2-refetch"),
                &proxy,
            );
        },
    );

    // A new release shows in the revalidated maven-metadata.xml.
    publish_next(&origin, &built);
    assert_ok(
        "mvn validate after a release",
        &mvn(&proxy, &origin, &work, &app, "m2-newer"),
        &proxy,
    );
    let newer = format!("{repo}/world/1.1/world-1.1.jar");
    assert_eq!(origin.hits(&newer), 1);
    assert_contains(
        &host.join("maven2/com/example/world/maven-metadata.xml"),
        "<version>1.1</version>",
    );
    assert!(work
        .dir
        .path()
        .join("m2-newer/com/example/world/1.1/world-1.1.jar")
        .is_file());
}
