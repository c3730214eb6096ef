//! Instances with cache dirs of their own sharing one cache on a real
//! S3-compatible server (`--cache-store`): pip through one instance, then
//! through another with the origin gone; cold requests across both; and a
//! store that dies or never answers.

use std::{path::Path, sync::Barrier, time::Duration};

use proxlet_tests::{
    curl,
    origin::pattern,
    packages::{assert_ok, caching_proxy_sharing, pip_install, registry},
    wait_until, Origin, Proxlet, S3Server,
};

/// A proxlet with the caching stack into `dir/cache-NAME`, sharing `store`.
fn instance(origin: &Origin, dir: &Path, name: &str, store: &S3Server) -> Proxlet {
    let cache = dir.join(format!("cache-{name}"));
    let home = dir.join(format!("home-{name}"));
    caching_proxy_sharing(origin, &cache, &home, "offline = false", Some(store))
}

/// The origin's directory in a cache dir or under the bucket prefix.
fn host(origin: &Origin) -> String {
    format!("127.0.0.1_{}", origin.addr.port())
}

#[test]
fn a_second_instance_installs_pip_packages_from_the_shared_store_without_the_origin() {
    let (mut origin, _packages) = registry("127.0.0.1");
    let store = S3Server::start();
    let work = tempfile::tempdir().unwrap();
    let host = host(&origin);

    let a = instance(&origin, work.path(), "a", &store);
    assert_ok(
        "pip install through a",
        &pip_install(&a, &origin, &work.path().join("a-site")),
        &a,
    );
    // Uploads follow the stores: the bucket reads like a's cache dir.
    let files = [
        "simple/pkg-a/index.html#vnd.pypi.simple.v1.json",
        "simple/pkg-b/index.html#vnd.pypi.simple.v1.json",
        "packages/pkg_a-1.0-py3-none-any.whl",
        "packages/pkg_b-1.0-py3-none-any.whl",
    ];
    let all_up = wait_until(Duration::from_secs(20), || {
        files.iter().all(|file| {
            let meta = format!("fleet/.proxlet-meta/{host}/{}#meta.json", meta_key(file));
            store.object(&format!("fleet/{host}/{file}")).is_some() && store.object(&meta).is_some()
        })
    });
    assert!(all_up, "not all uploaded: {:?}\n{}", store.keys(), a.log());
    let cache_a = work.path().join("cache-a").join(&host);
    for file in files {
        assert_eq!(
            store.object(&format!("fleet/{host}/{file}")),
            std::fs::read(cache_a.join(file)).ok(),
            "{file}: the object holds the plain body"
        );
    }

    origin.stop();
    let b = instance(&origin, work.path(), "b", &store);
    let site = work.path().join("b-site");
    assert_ok(
        "pip install through b, the origin stopped",
        &pip_install(&b, &origin, &site),
        &b,
    );
    assert!(site.join("pkg_a/__init__.py").is_file());
    assert!(site.join("pkg_b/__init__.py").is_file());
    // What b got from the store it keeps.
    let cache_b = work.path().join("cache-b").join(&host);
    for file in files {
        assert!(cache_b.join(file).is_file(), "{file} is not in b's cache");
    }
    assert!(b.log().contains("cache=shared"), "{}", b.log());
}

/// The metadata of a stored file is kept per URL path: a type variant's
/// under the path it varies at.
fn meta_key(file: &str) -> &str {
    file.split_once('#').map_or(file, |(path, _)| path)
}

#[test]
fn sixteen_cold_requests_across_two_instances_reach_the_origin_at_most_twice() {
    let origin = Origin::https_with_ca("shared origin CA");
    let store = S3Server::start();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (
        instance(&origin, work.path(), "a", &store),
        instance(&origin, work.path(), "b", &store),
    );
    let path = "/bytes/3000000";
    let url = origin.url(path);
    let start = Barrier::new(16);
    let answers: Vec<_> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let (proxy, start, url) = (if i % 2 == 0 { &a } else { &b }, &start, &url);
                scope.spawn(move || {
                    start.wait();
                    curl(proxy, &[url])
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let expected = pattern(3_000_000);
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.stderr);
        assert!(answer.body == expected, "a whole, correct body");
    }
    let hits = origin.hits(path);
    assert!(
        (1..=2).contains(&hits),
        "the origin was asked {hits} times\n{}\n{}",
        a.log(),
        b.log()
    );
    // Once it is up, a third instance takes it from the store.
    let object = format!("fleet/{}{path}", host(&origin));
    assert!(wait_until(Duration::from_secs(10), || store
        .object(&object)
        .is_some()));
    let c = instance(&origin, work.path(), "c", &store);
    let answer = curl(&c, &[&url]);
    assert!(answer.status == 200 && answer.body == expected);
    assert_eq!(origin.hits(path), hits, "{}", c.log());
}

#[test]
fn killing_the_store_mid_run_loses_nothing_and_fails_no_request() {
    let origin = Origin::https_with_ca("shared origin CA");
    let mut store = S3Server::start();
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (
        instance(&origin, work.path(), "a", &store),
        instance(&origin, work.path(), "b", &store),
    );
    let host = host(&origin);
    let shared = format!("fleet/{host}/bytes/1000");
    let first = curl(&a, &[&origin.url("/bytes/1000")]);
    assert_eq!(first.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || store.object(&shared).is_some()),
        "{}",
        a.log()
    );

    // Through both instances, in turn: cached, shared and new URLs, the
    // store killed after a few.
    for i in 0..12 {
        if i == 4 {
            store.stop();
        }
        let (proxy, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for n in [1000, 2000 + i] {
            let answer = curl(
                proxy,
                &["--max-time", "15", &origin.url(&format!("/bytes/{n}"))],
            );
            assert_eq!(
                (answer.status, answer.body == pattern(n)),
                (200, true),
                "request {i} for /bytes/{n}: {}\n{}\n{}",
                answer.stderr,
                proxy.log(),
                other.log()
            );
        }
    }
    // Everything each instance served, it has.
    for (name, proxy, parity) in [("a", &a, 0), ("b", &b, 1)] {
        let cache = work.path().join(format!("cache-{name}")).join(&host);
        assert!(cache.join("bytes/1000").is_file(), "{name}");
        for i in (parity..12).step_by(2) {
            let file = cache.join(format!("bytes/{}", 2000 + i));
            assert!(file.is_file(), "{}: {}", file.display(), proxy.log());
        }
    }
    // The failure is said once, not on every miss.
    let logs = a.log() + &b.log();
    assert!(
        logs.contains("serving from the local cache and origins only"),
        "{logs}"
    );
}

#[test]
fn a_store_that_never_answers_costs_one_miss_the_lookup_limit_at_most() {
    let origin = Origin::https_with_ca("shared origin CA");
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let store = S3Server::start();
    let mut env = store.env();
    env[0].1 = format!("http://{silent_addr}");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("proxlet.toml");
    std::fs::write(
        &config,
        format!(
            "cache_store = \"s3://{}/fleet\"\n",
            proxlet_tests::s3::BUCKET
        ),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let proxy = Proxlet::start_with_env(
        &work.path().join("home"),
        &env,
        &[
            "--config",
            config.to_str().unwrap(),
            "--plugin",
            "pypi-slash,error-links,cache",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--upstream-ca",
            &origin.ca_pem(),
        ],
    )
    .unwrap();

    let first = curl(&proxy, &["--max-time", "15", &origin.url("/bytes/100")]);
    assert_eq!(first.status, 200, "{}", proxy.log());
    assert!(
        first.time_total < 10.0,
        "the first miss waited {}s",
        first.time_total
    );
    assert!(
        proxy.log().contains("no answer within 5s"),
        "{}",
        proxy.log()
    );
    // The store rests: the next misses do not wait for it.
    let next = curl(&proxy, &["--max-time", "15", &origin.url("/bytes/200")]);
    assert_eq!(next.status, 200);
    assert!(
        next.time_total < 4.0,
        "a miss waited {}s for a resting store",
        next.time_total
    );
    assert_eq!(proxy.log().matches("no answer within 5s").count(), 1);
}
