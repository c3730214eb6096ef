//! Transparent mode in network namespaces: a client namespace joined to
//! proxlet's by a veth pair, whose port 80/443 traffic an iptables
//! `REDIRECT` sends into proxlet. The client has no proxy settings; the
//! origins listen on an address in proxlet's namespace under a name
//! nothing resolves (`origin.test`), so only the original destination
//! (`SO_ORIGINAL_DST`) can get a connection there. A second rule
//! redirects proxlet's own namespace's traffic too, except sockets
//! carrying `--upstream-mark`. Needs root (namespaces, iptables).

use std::{
    net::SocketAddr,
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use proxlet_tests::{pattern, proxlet::Proxlet, Origin, TestCa};

const ORIGIN_IP: &str = "10.77.1.1";
const MARK: &str = "42";

/// Two namespaces and a veth pair between them; removed on drop.
struct Net {
    client: String,
    proxy: String,
}

impl Net {
    fn new() -> Option<Self> {
        let started = std::time::Instant::now();
        let id = std::process::id() % 100_000;
        let net = Net {
            client: format!("pxc{id}"),
            proxy: format!("pxp{id}"),
        };
        let (vc, vp) = (format!("pvc{id}"), format!("pvp{id}"));
        let (client, proxy) = (net.client.as_str(), net.proxy.as_str());
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", client],
            vec!["ip", "netns", "add", proxy],
            vec![
                "ip", "link", "add", &vc, "netns", client, "type", "veth", "peer", "name", &vp,
                "netns", proxy,
            ],
            vec!["ip", "-n", client, "link", "set", "lo", "up"],
            vec![
                "ip",
                "-n",
                client,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &vc,
            ],
            vec!["ip", "-n", client, "link", "set", &vc, "up"],
            vec![
                "ip",
                "-n",
                client,
                "route",
                "add",
                "default",
                "via",
                "10.77.0.1",
            ],
            vec!["ip", "-n", proxy, "link", "set", "lo", "up"],
            vec![
                "ip",
                "-n",
                proxy,
                "addr",
                "add",
                "10.77.1.1/32",
                "dev",
                "lo",
            ],
            vec!["ip", "-n", proxy, "addr", "add", "10.77.0.1/24", "dev", &vp],
            vec!["ip", "-n", proxy, "link", "set", &vp, "up"],
        ];
        for step in steps {
            let output = Command::new(step[0]).args(&step[1..]).output().unwrap();
            assert!(
                output.status.success(),
                "{step:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprintln!("namespaces ready in {:?}", started.elapsed());
        Some(net)
    }

    /// `args` run inside namespace `ns`.
    fn exec(ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap()
    }

    fn iptables(&self, rule: &[&str]) {
        let mut args = vec!["iptables", "-t", "nat", "-A"];
        args.extend_from_slice(rule);
        let output = Self::exec(&self.proxy, &args);
        assert!(
            output.status.success(),
            "iptables {rule:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.client, &self.proxy] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets it binds stay there).
fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an open namespace file; it affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// curl in namespace `ns` with no proxy settings: (status, body, stderr).
fn curl_in(ns: &str, args: &[&str]) -> (u16, Vec<u8>, String) {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, "curl", "--noproxy", "*"]);
    proxlet_tests::client::curl_status(command, args)
}

/// The port of `proxlet`'s transparent listener.
fn transparent_port(proxlet: &Proxlet) -> String {
    let log = proxlet.log();
    log.lines()
        .find_map(|l| {
            l.strip_prefix("proxlet listening on http://")?
                .strip_suffix(" (transparent)")?
                .parse::<SocketAddr>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no transparent listener in:\n{log}"))
        .port()
        .to_string()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn redirected_clients_without_proxy_settings_get_cached_files_and_proxlets_certificate() {
    if !is_root() {
        eprintln!("SKIPPED: transparent mode needs root for network namespaces and iptables");
        return;
    }
    let net = Net::new().unwrap();
    let ca = Arc::new(TestCa::with_names(
        "transparent origin CA",
        &["origin.test"],
    ));
    let origin_ca = ca.clone();
    let https = inside(&net.proxy, move || {
        Origin::at(format!("{ORIGIN_IP}:443").parse().unwrap(), Some(origin_ca))
    });
    let plain = inside(&net.proxy, || {
        Origin::at(format!("{ORIGIN_IP}:80").parse().unwrap(), None)
    });

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let wrapper = ["ip", "netns", "exec", net.proxy.as_str()];
    let ca_pem = ca.path().to_str().unwrap();
    // A transparent proxlet in the proxy namespace, with `args`.
    let start = |home: &str, args: &[&str]| {
        let mut all = vec![
            "--upstream-ca",
            ca_pem,
            "--mode",
            "transparent@0.0.0.0:0",
            "--allow-remote",
        ];
        all.extend_from_slice(args);
        Proxlet::start_wrapped(&wrapper, &dir.path().join(home), &all).unwrap()
    };
    let cache_dir = cache.to_str().unwrap();
    let proxlet = start(
        "home",
        &[
            "--plugin",
            "cache",
            "--cache-dir",
            cache_dir,
            "--upstream-mark",
            MARK,
        ],
    );
    let port = transparent_port(&proxlet);
    // The client namespace's web traffic, and proxlet's own namespace's
    // (except proxlet's marked upstream sockets), goes to proxlet.
    let (client_side, proxy_side) = (format!("pvp{}", std::process::id() % 100_000), port.clone());
    for dport in ["80", "443"] {
        net.iptables(&[
            "PREROUTING",
            "-i",
            &client_side,
            "-p",
            "tcp",
            "--dport",
            dport,
            "-j",
            "REDIRECT",
            "--to-ports",
            &proxy_side,
        ]);
        net.iptables(&[
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            ORIGIN_IP,
            "--dport",
            dport,
            "-m",
            "mark",
            "!",
            "--mark",
            MARK,
            "-j",
            "REDIRECT",
            "--to-ports",
            &proxy_side,
        ]);
    }
    let proxlet_ca = proxlet.ca_path();
    let cacert = proxlet_ca.to_str().unwrap();
    let resolve = format!("origin.test:443:{ORIGIN_IP}");
    let url = "https://origin.test/bytes/4096";

    // HTTPS by a name proxlet cannot resolve: intercepted (proxlet's
    // certificate, which curl checks against proxlet's CA), fetched from
    // the original destination, stored, then served from the cache.
    for _ in 0..2 {
        let (status, body, err) = curl_in(
            &net.client,
            &["--resolve", &resolve, "--cacert", cacert, url],
        );
        assert_eq!(
            (status, body.len()),
            (200, 4096),
            "{err}\n{}",
            proxlet.log()
        );
        assert_eq!(body, pattern(4096));
    }
    assert_eq!(
        https.hits("/bytes/4096"),
        1,
        "the second came from the cache"
    );
    assert!(
        cache.join("origin.test/bytes/4096").is_file(),
        "{}",
        proxlet.log()
    );
    let (status, _, err) = curl_in(
        &net.client,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            ca.path().to_str().unwrap(),
            url,
        ],
    );
    assert_eq!(
        status, 0,
        "the origin's own certificate reached the client: {err}"
    );
    assert!(
        proxlet
            .log()
            .contains("(transparent) GET https://origin.test/bytes/4096 "),
        "{}",
        proxlet.log()
    );

    // Plain HTTP, by address: served and stored under it.
    let plain_url = format!("http://{ORIGIN_IP}/bytes/100");
    let (status, body, err) = curl_in(&net.client, &[&plain_url]);
    assert_eq!(
        (status, body),
        (200, pattern(100)),
        "{err}\n{}",
        proxlet.log()
    );
    assert!(cache.join(format!("http+{ORIGIN_IP}/bytes/100")).is_file());
    // A Host the address does not serve cannot put another site's
    // content under its name.
    let (status, body, _) = curl_in(
        &net.client,
        &[
            "-H",
            "Host: pypi.org",
            &format!("http://{ORIGIN_IP}/bytes/7"),
        ],
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(
        status == 409 && body.contains("does not resolve"),
        "{status} {body}"
    );
    assert_eq!(plain.hits("/bytes/7"), 0);
    // Nor is a redirected connection a way to open tunnels elsewhere.
    let connect = format!("{ORIGIN_IP}:80");
    let mut proxied = Command::new("ip");
    proxied.args(["netns", "exec", &net.client, "curl", "-p", "-x"]);
    proxied.arg(format!("http://{connect}"));
    let (status, _, connect_err) =
        proxlet_tests::client::curl_status(proxied, &["https://example.test/"]);
    assert_ne!(status, 200);
    assert!(
        proxlet.wait_for_log("CONNECT is not served", Duration::from_secs(5)),
        "{connect_err}\n{}",
        proxlet.log()
    );
    assert!(!cache.join("http+pypi.org").exists());

    // Same host: proxlet's namespace is redirected too; its own upstream
    // sockets carry the mark and leave, so there is no loop.
    let (status, body, err) = curl_in(
        &net.proxy,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            cacert,
            "https://origin.test/bytes/50",
        ],
    );
    assert_eq!(
        (status, body),
        (200, pattern(50)),
        "{err}\n{}",
        proxlet.log()
    );
    assert_eq!(https.hits("/bytes/50"), 1);

    // Connecting to the transparent port itself is no redirect: closed,
    // not a loop into proxlet.
    let direct = format!("http://10.77.0.1:{port}/bytes/1");
    let (status, _, _) = curl_in(&net.client, &[&direct]);
    assert_eq!(status, 0);
    assert!(
        proxlet.wait_for_log("transparent client", Duration::from_secs(5)),
        "{}",
        proxlet.log()
    );
    drop(proxlet);

    // Without the mark, proxlet's upstream connection would come back to
    // it, again and again: it recognises its own socket and closes it.
    let looping = start("home-loop", &[]);
    let loop_port = transparent_port(&looping);
    net.iptables(&[
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        ORIGIN_IP,
        "--dport",
        "8443",
        "-j",
        "REDIRECT",
        "--to-ports",
        &loop_port,
    ]);
    let looping_ca = looping.ca_path();
    let resolve = format!("origin.test:8443:{ORIGIN_IP}");
    let (status, body, err) = curl_in(
        &net.proxy,
        &[
            "--resolve",
            &resolve,
            "--cacert",
            looping_ca.to_str().unwrap(),
            "https://origin.test:8443/bytes/1",
        ],
    );
    assert_eq!(
        status,
        502,
        "{err} {}\n{}",
        String::from_utf8_lossy(&body),
        looping.log()
    );
    assert!(
        looping.log().contains("redirected back into it"),
        "{}",
        looping.log()
    );
}
