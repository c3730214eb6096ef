//! The web UI's API and access rules, through the real binary with curl:
//! the token, Host and Origin checks, the proxy refusing to reach the UI,
//! intercepting (edit, kill, response edits), replay, marks, load/export,
//! the event stream, and plugins disabled and enabled. The browser tests
//! of the page are tests/web/ (run by web_ui.rs).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use proxlet_tests::{client::curl, guest, proxlet::Proxlet, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The UI's address and token, from the line proxlet printed.
struct Ui {
    addr: String,
    token: String,
}

impl Ui {
    fn of(proxlet: &Proxlet) -> Self {
        let log = proxlet.log();
        let url = log
            .lines()
            .find_map(|l| l.strip_prefix("proxlet web on http://"))
            .unwrap_or_else(|| panic!("no web line in:\n{log}"));
        let (addr, token) = url.split_once("/?token=").expect("a token in the URL");
        Self {
            addr: addr.to_owned(),
            token: token.to_owned(),
        }
    }

    /// `curl` to the UI (not through the proxy) with the token and `args`;
    /// (status, body).
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let token = format!("X-Proxlet-Token: {}", self.token);
        let mut args = vec!["-X", method, "-H", &token];
        if let Some(body) = body {
            args.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        raw(&self.addr, path, &args)
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, text) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    fn flows(&self) -> Vec<Value> {
        let list = self.json("GET", "/api/flows", None);
        list["flows"].as_array().cloned().unwrap_or_default()
    }

    /// Waits for a paused flow whose URL ends with `path`; its id.
    fn paused(&self, path: &str) -> u64 {
        let mut id = None;
        let found = wait_until(WAIT, || {
            id = self
                .flows()
                .iter()
                .find(|f| !f["intercepted"].is_null() && f["path"] == path)
                .and_then(|f| f["id"].as_u64());
            id.is_some()
        });
        assert!(found, "no flow for {path} was paused: {:?}", self.flows());
        id.unwrap()
    }
}

/// curl to the UI with `args`; (status, body).
fn raw(addr: &str, path: &str, args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A request as the origin got it: head text and body.
type Received = (String, Vec<u8>);

/// A loopback origin that records each request (head and body) and answers
/// `hello from origin` (or `slow` after the request for `/slow`).
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    stream.set_read_timeout(Some(WAIT)).ok();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut head = String::new();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            let end = line == "\r\n";
                            head.push_str(&line);
                            if end {
                                break;
                            }
                        }
                        let mut body = vec![0; length.min(1 << 20)];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        record.lock().unwrap().push((head, body));
                        let text = "hello from origin";
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if (&stream).write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received whose request line names `path`.
    fn requests(&self, path: &str) -> Vec<(String, Vec<u8>)> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(head, _)| head.split(' ').nth(1) == Some(path))
            .cloned()
            .collect()
    }
}

/// curl through `proxlet` in the background; its output when it ends.
fn curl_later(proxlet: &Proxlet, args: &[&str]) -> Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n@@%{http_code}", "-x"])
        .arg(proxlet.url())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl")
}

fn finished(child: Child) -> (bool, String) {
    let output = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_ui_answers_only_with_its_token_on_its_own_host_and_never_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxlet = Proxlet::start_with_home(dir.path(), &["--web", "127.0.0.1:0"]).unwrap();
    let ui = Ui::of(&proxlet);
    assert_eq!(ui.token.len(), 32, "{}", ui.token);

    // No token: 401 everywhere, the stream included; a wrong one: 403.
    for path in ["/", "/app.js", "/api/flows", "/api/events", "/api/plugins"] {
        assert_eq!(raw(&ui.addr, path, &[]).0, 401, "{path}");
        assert_eq!(
            raw(&ui.addr, path, &["-H", "X-Proxlet-Token: 0123"]).0,
            403,
            "{path}"
        );
        let wrong = format!("Cookie: proxlet_web={}", "f".repeat(32));
        assert_eq!(raw(&ui.addr, path, &["-H", &wrong]).0, 403, "{path}");
    }
    assert_eq!(raw(&ui.addr, "/?token=nope", &[]).0, 403);

    // The printed URL sets the cookie and sends the browser to /.
    let output = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://{}/?token={}", ui.addr, ui.token))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 303"), "{head}");
    assert!(head.contains("location: /\r\n"), "{head}");
    let cookie = format!("proxlet_web={}", ui.token);
    assert!(
        head.contains(&format!("set-cookie: {cookie}; httponly; samesite=strict")),
        "{head}"
    );
    let with_cookie = format!("Cookie: {cookie}");
    let (status, page) = raw(&ui.addr, "/", &["-H", &with_cookie]);
    assert_eq!(status, 200);
    assert!(page.contains("app.js"), "{page}");
    let bearer = format!("Authorization: Bearer {}", ui.token);
    assert_eq!(raw(&ui.addr, "/api/flows", &["-H", &bearer]).0, 200);

    // DNS rebinding: a page on another name that resolves here.
    let port = ui.addr.rsplit_once(':').unwrap().1;
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "127.0.0.1".into(),
    ] {
        let host = format!("Host: {host}");
        assert_eq!(
            raw(&ui.addr, "/api/flows", &["-H", &with_cookie, "-H", &host]).0,
            403,
            "{host}"
        );
    }
    let localhost = format!("Host: localhost:{port}");
    assert_eq!(
        raw(
            &ui.addr,
            "/api/flows",
            &["-H", &with_cookie, "-H", &localhost]
        )
        .0,
        200
    );
    // Cross-site requests, even carrying the cookie.
    let origin = "Origin: http://evil.example";
    let (status, _) = raw(
        &ui.addr,
        "/api/flows",
        &["-X", "DELETE", "-H", &with_cookie, "-H", origin],
    );
    assert_eq!(status, 403);
    let same = format!("Origin: http://{}", ui.addr);
    assert_eq!(
        raw(&ui.addr, "/api/flows", &["-H", &with_cookie, "-H", &same]).0,
        200
    );

    // Through the proxy: absolute-form, by any loopback name, and CONNECT.
    for url in [
        format!("http://{}/api/flows", ui.addr),
        format!("http://localhost:{port}/api/flows"),
        format!("http://[::1]:{port}/"),
    ] {
        let got = curl(&proxlet, &["-H", &with_cookie, &url]);
        assert_eq!(got.status, 403, "{url}: {}", got.text());
        assert!(
            got.text().contains("not reachable through the proxy"),
            "{}",
            got.text()
        );
    }
    // A name that resolves to the UI's address (here the machine's own
    // name, when /etc/hosts maps it to loopback) is refused once resolved.
    let name = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    let name = name.trim();
    let loopback = std::net::ToSocketAddrs::to_socket_addrs(&(name, 80))
        .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
    if loopback {
        let url = format!("http://{name}:{port}/api/flows");
        let got = curl(&proxlet, &["-H", &with_cookie, &url]);
        assert_ne!(got.status, 200, "{url}: {}", got.text());
        assert!(
            got.text().contains("not reachable through the proxy"),
            "{}",
            got.text()
        );
        let got = curl(&proxlet, &["-p", "-H", &with_cookie, &url]);
        assert_ne!(got.status, 200, "{url} by CONNECT: {}", got.text());
    } else {
        eprintln!("{name} does not resolve to loopback: its case is not tried");
    }
    let got = curl(&proxlet, &["-p", &format!("http://{}/api/flows", ui.addr)]);
    assert_ne!(got.status, 200, "a CONNECT tunnel to the UI: {got:?}");
    assert!(got.stderr.contains("403"), "{got:?}");

    // The token is private and the same after a restart.
    let file = proxlet.home.join("web-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let home = proxlet.home.clone();
    drop(proxlet);
    let again = Proxlet::start_with_home(&home, &["--web", "127.0.0.1:0"]).unwrap();
    assert_eq!(Ui::of(&again).token, ui.token);
}

#[test]
fn a_remote_web_address_needs_allow_remote() {
    let output = proxlet_tests::proxlet::run(&["--plugin", "none", "--web", "0.0.0.0:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

#[test]
fn intercepted_requests_are_edited_or_killed_and_responses_edited_before_the_client() {
    let origin = Recorder::start();
    let proxlet = Proxlet::start(&["--web", "127.0.0.1:0"]);
    let ui = Ui::of(&proxlet);

    // A bad filter says where it is wrong and changes nothing.
    let (status, text) = ui.call("PUT", "/api/intercept", Some(r#"{"filter": "~u /edit &"}"#));
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["position"], 10, "{text}");
    ui.json(
        "PUT",
        "/api/intercept",
        Some(r#"{"filter": "~q & ~u /edit"}"#),
    );
    assert_eq!(
        ui.json("GET", "/api/intercept", None)["filter"],
        "~q & ~u /edit"
    );

    // Paused before the origin; a flow the filter does not match goes on.
    let paused = curl_later(
        &proxlet,
        &[
            "-H",
            "X-Mine: old",
            "--data-binary",
            "original body",
            &origin.url("/edit"),
        ],
    );
    let id = ui.paused("/edit");
    let other = curl(&proxlet, &[&origin.url("/other")]);
    assert_eq!(other.status, 200, "an unmatched flow waited: {other:?}");
    assert!(
        origin.requests("/edit").is_empty(),
        "the paused request reached the origin"
    );
    let detail = ui.json("GET", &format!("/api/flows/{id}"), None);
    assert_eq!(detail["summary"]["intercepted"], "request");
    assert_eq!(detail["request"]["method"], "POST");
    let (_, body) = ui.call("GET", &format!("/api/flows/{id}/request/body"), None);
    assert_eq!(body, "original body");

    // Resumed with a header and the body edited: the origin gets those.
    let edits = r#"{"headers": [["X-Mine", "new"], ["Content-Type", "text/plain"]], "body": "edited body"}"#;
    ui.json("POST", &format!("/api/flows/{id}/resume"), Some(edits));
    let (ok, out) = finished(paused);
    assert!(ok && out.ends_with("@@200"), "{out}");
    let got = origin.requests("/edit");
    assert_eq!(got.len(), 1, "{got:?}");
    let head = got[0].0.to_ascii_lowercase();
    assert!(
        head.contains("x-mine: new\r\n") && !head.contains("x-mine: old"),
        "{head}"
    );
    assert_eq!(got[0].1, b"edited body");
    assert_eq!(
        ui.call("POST", &format!("/api/flows/{id}/resume"), Some("{}"))
            .0,
        409
    );

    // Killed: the client gets no answer, the origin nothing, and the flow
    // is kept with why.
    let doomed = curl_later(&proxlet, &[&origin.url("/edit-kill")]);
    let id = ui.paused("/edit-kill");
    ui.json("POST", &format!("/api/flows/{id}/kill"), None);
    let (ok, out) = finished(doomed);
    assert!(!ok && !out.contains("@@200"), "{out}");
    assert!(origin.requests("/edit-kill").is_empty());
    assert!(wait_until(WAIT, || ui
        .flows()
        .iter()
        .any(|f| f["id"] == id && f["error"] == "killed by the user")));

    // The response phase: status, a header and the body edited.
    ui.json(
        "PUT",
        "/api/intercept",
        Some(r#"{"filter": "~s & ~u /answer"}"#),
    );
    let waiting = curl_later(&proxlet, &["-i", &origin.url("/answer")]);
    let id = ui.paused("/answer");
    assert_eq!(
        origin.requests("/answer").len(),
        1,
        "the response phase comes after the origin"
    );
    let edits = r#"{"status": 418, "headers": [["X-Edited", "yes"], ["Content-Type", "text/plain"]], "body": "changed by hand"}"#;
    ui.json("POST", &format!("/api/flows/{id}/resume"), Some(edits));
    let (ok, out) = finished(waiting);
    assert!(ok, "{out}");
    assert!(
        out.contains("418") && out.to_ascii_lowercase().contains("x-edited: yes"),
        "{out}"
    );
    assert!(out.contains("changed by hand\n@@418"), "{out}");

    // Resume all, and off again.
    ui.json("PUT", "/api/intercept", Some(r#"{"filter": "~u /many"}"#));
    let clients: Vec<Child> = (0..3)
        .map(|i| curl_later(&proxlet, &[&origin.url(&format!("/many{i}"))]))
        .collect();
    assert!(wait_until(WAIT, || ui
        .flows()
        .iter()
        .filter(|f| !f["intercepted"].is_null())
        .count()
        == 3));
    // Each pauses again at the response phase (the filter matches both).
    assert_eq!(ui.json("POST", "/api/resume-all", None)["resumed"], 3);
    assert!(wait_until(WAIT, || ui
        .flows()
        .iter()
        .filter(|f| f["intercepted"] == "response")
        .count()
        == 3));
    ui.json("PUT", "/api/intercept", Some(r#"{"filter": ""}"#));
    assert_eq!(ui.json("POST", "/api/resume-all", None)["resumed"], 3);
    for client in clients {
        let (ok, out) = finished(client);
        assert!(ok && out.ends_with("@@200"), "{out}");
    }
}

#[test]
fn flows_stream_live_and_are_replayed_marked_exported_and_loaded() {
    let origin = Recorder::start();
    let proxlet = Proxlet::start(&["--web", "127.0.0.1:0"]);
    let ui = Ui::of(&proxlet);

    let token = format!("X-Proxlet-Token: {}", ui.token);
    let mut stream = Command::new("curl")
        .args(["-sN", "--max-time", "30", "-H", &token])
        .arg(format!("http://{}/api/events", ui.addr))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let events = Arc::new(Mutex::new(String::new()));
    let sink = events.clone();
    let out = stream.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    // The stream is subscribed once its response head is out: retry the
    // first request until its event arrives.
    let url = origin.url("/live");
    assert!(
        wait_until(WAIT, || {
            curl(&proxlet, &[&url]);
            events.lock().unwrap().contains("\"path\":\"/live\"")
        }),
        "no flow event: {}",
        events.lock().unwrap()
    );
    assert!(events.lock().unwrap().contains("event: flow\ndata: {"));

    let flows = ui.flows();
    let first = flows.iter().find(|f| f["path"] == "/live").unwrap();
    assert_eq!(first["status"], 200);
    assert_eq!(first["type"], "text/plain");
    assert_eq!(first["size"], 17);
    let id = first["id"].as_u64().unwrap();

    // Replay sends it again, as a new flow.
    let before = origin.requests("/live").len();
    let replayed = ui.json("POST", &format!("/api/flows/{id}/replay"), None);
    assert_eq!(replayed["status"], 200);
    assert_eq!(origin.requests("/live").len(), before + 1);
    // Duplicate-and-edit.
    let edited = format!(
        r#"{{"method": "PUT", "url": "{}", "headers": [["X-Dup", "1"]], "body": "dup"}}"#,
        origin.url("/dup")
    );
    assert_eq!(ui.json("POST", "/api/replay", Some(&edited))["status"], 200);
    let dup = origin.requests("/dup");
    assert!(
        dup[0].0.starts_with("PUT /dup") && dup[0].0.to_ascii_lowercase().contains("x-dup: 1"),
        "{dup:?}"
    );
    assert_eq!(dup[0].1, b"dup");

    // Filters run server-side.
    let matching = ui.json("GET", "/api/flows?filter=~m%20PUT", None);
    let listed = matching["flows"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{matching}");
    assert_eq!(listed[0]["method"], "PUT");

    // Mark and comment.
    let marked = ui.json(
        "PATCH",
        &format!("/api/flows/{id}"),
        Some(r#"{"marked": true, "comment": "look"}"#),
    );
    assert_eq!(marked["marked"], true);
    assert_eq!(marked["comment"], "look");
    let marked = ui.json("GET", "/api/flows?filter=~marked", None);
    assert_eq!(marked["flows"].as_array().unwrap().len(), 1, "{marked}");

    // Export as HAR and as a flow file; load it back as new flows.
    let har = ui.json("GET", &format!("/api/export?format=har&ids={id}"), None);
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 1);
    let saved = proxlet.home.join("saved.proxlet");
    let status = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&saved)
        .args(["-H", &token])
        .arg(format!("http://{}/api/export?format=proxlet", ui.addr))
        .status()
        .unwrap();
    assert!(status.success());
    let count = ui.flows().len();
    let loaded = Command::new("curl")
        .args(["-s", "-H", &token, "--data-binary"])
        .arg(format!("@{}", saved.display()))
        .arg(format!("http://{}/api/load", ui.addr))
        .output()
        .unwrap();
    let loaded: Value = serde_json::from_slice(&loaded.stdout).unwrap();
    assert_eq!(loaded["loaded"], count);
    assert_eq!(ui.flows().len(), count * 2);
    // Clearing empties the list (and says so on the stream).
    ui.json("DELETE", "/api/flows", None);
    assert!(ui.flows().is_empty());
    assert!(wait_until(WAIT, || events
        .lock()
        .unwrap()
        .contains("event: cleared")));
    let _ = stream.kill();
    let _ = stream.wait();
}

#[test]
fn plugins_are_listed_disabled_enabled_and_reloaded_from_the_ui() {
    let origin = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("hello.wasm");
    std::fs::copy(guest("rust_hello.wasm"), &plugin).unwrap();
    let proxlet = Proxlet::start(&["--web", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()]);
    let ui = Ui::of(&proxlet);

    let list = ui.json("GET", "/api/plugins", None);
    let hello = &list[0];
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["enabled"], true);
    assert_eq!(hello["wit"], "proxlet:plugin@0.2.1");
    assert!(
        hello["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "on-response"),
        "{hello}"
    );
    assert_eq!(hello["sha256"].as_str().unwrap().len(), 64);
    assert!(hello["limits"]["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(hello["reloads"].as_array().unwrap().len(), 1);

    let url = origin.url("/hello");
    assert!(curl(&proxlet, &["-i", &url])
        .text()
        .to_ascii_lowercase()
        .contains("x-hello:"));
    let entry = ui.json("POST", "/api/plugins/hello/disable", None);
    assert_eq!(entry["enabled"], false);
    assert!(!curl(&proxlet, &["-i", &url])
        .text()
        .to_ascii_lowercase()
        .contains("x-hello:"));
    ui.json("POST", "/api/plugins/hello/enable", None);
    assert!(curl(&proxlet, &["-i", &url])
        .text()
        .to_ascii_lowercase()
        .contains("x-hello:"));
    let calls = &ui.json("GET", "/api/plugins", None)[0]["calls"]["on-response"];
    assert_eq!(calls["count"], 2, "{calls}");

    // A new file on disk: the new sha and a second history entry.
    let old = hello["sha256"].as_str().unwrap().to_owned();
    let temp = dir.path().join("hello.wasm.tmp");
    std::fs::copy(guest("rust_hello_reloaded.wasm"), &temp).unwrap();
    std::fs::rename(&temp, &plugin).unwrap();
    assert!(wait_until(WAIT, || ui.json("GET", "/api/plugins", None)[0]
        ["sha256"]
        != old.as_str()));
    let entry = ui.json("POST", "/api/plugins/hello/reload", None);
    assert!(entry["reloads"].as_array().unwrap().len() >= 3, "{entry}");
    assert_eq!(ui.call("POST", "/api/plugins/nope/disable", None).0, 404);
}
