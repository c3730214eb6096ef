//! Interoperability of flow files with the tools people use: dumps written
//! by real `mitmdump -w` convert to proxlet flows intact; the HAR and `.mitm`
//! files `proxlet convert` writes load in real mitmproxy and pass a HAR 1.2
//! schema validator; round trips keep what both formats carry; flows
//! captured with `--save` export the same way.
//!
//! mitmproxy (a venv from PyPI) and har-validator (npm) are installed by
//! `./test.sh` under `$PROXLET_TEST_TOOLS` (default `~/.cache/proxlet-test`).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use proxlet_tests::{
    client::curl_with, curl, origin::GZIP_TEXT, pattern, proxlet::command, wait_until, Origin,
    Proxlet, TestCa,
};

/// Where test.sh installed mitmproxy and har-validator.
fn tools() -> PathBuf {
    proxlet_tests::test_tools()
}

fn mitm_bin(name: &str) -> PathBuf {
    let path = tools().join("mitmproxy/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./test.sh to install mitmproxy",
        path.display()
    );
    path
}

/// Reads a flow source and prints one line per flow:
/// `METHOD URL STATUS req=HEX raw=HEX plain=HEX` (request body decoded,
/// response body as on the wire and decoded). `proxlet` reads a proxlet flow
/// file by docs/flow-file.md, independently of proxlet's code; `mitmproxy`
/// reads a dump or HAR with mitmproxy's own FlowReader.
const INSPECT: &str = r#"
import gzip, json, struct, sys, zlib

def plain(headers, data):
    coding = ",".join(v for n, v in headers if n.lower() == "content-encoding").strip()
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "deflate":
        return zlib.decompress(data)
    return data

def line(method, url, status, req, raw, dec):
    print(f"{method} {url} {status} req={req.hex()} raw={raw.hex()} plain={dec.hex()}")

kind, path = sys.argv[1], sys.argv[2]
if kind == "proxlet":
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PXFLW\r\n", "not a proxlet flow file"
    at = 16
    while at + 16 <= len(data):
        head_len, req_len, resp_len, crc = struct.unpack_from("<IIII", data, at)
        at += 16
        head = json.loads(data[at:at + head_len])
        assert zlib.crc32(data[at:at + head_len]) == crc, "checksum"
        at += head_len
        req_body = data[at:at + req_len]; at += req_len
        resp_body = data[at:at + resp_len]; at += resp_len
        def fields(h):
            return [(n, v if isinstance(v, str) else "") for n, v in h]
        request = head["request"]
        response = head.get("response")
        req = plain(fields(request["headers"]), req_body)
        if response:
            line(request["method"], request["url"], response["status"], req, resp_body,
                 plain(fields(response["headers"]), resp_body))
        else:
            line(request["method"], request["url"], "-", req, b"", b"")
else:
    from mitmproxy.io import FlowReader
    with open(path, "rb") as f:
        for flow in FlowReader(f).stream():
            r = flow.response
            req = flow.request.get_content(strict=False) or b""
            if r is None:
                line(flow.request.method, flow.request.url, "-", req, b"", b"")
            else:
                line(flow.request.method, flow.request.url, r.status_code, req,
                     r.raw_content or b"", r.get_content(strict=False) or b"")
"#;

/// Checks the HAR 1.2 rules a schema cannot state; prints each violation.
const HAR_RULES: &str = r#"
import json, sys
from datetime import datetime
har = json.load(open(sys.argv[1]))
bad = []
entries = har["log"]["entries"]
for i, e in enumerate(entries):
    t = e["timings"]
    for k in ("send", "wait", "receive"):
        if not t[k] >= 0: bad.append(f"entry {i}: {k} = {t[k]}")
    for k in ("blocked", "dns", "connect", "ssl"):
        if k in t and not (t[k] == -1 or t[k] >= 0): bad.append(f"entry {i}: {k} = {t[k]}")
    if t.get("ssl", -1) >= 0 and not t["ssl"] <= t["connect"]:
        bad.append(f"entry {i}: ssl {t['ssl']} > connect {t['connect']}")
    total = sum(v for k, v in t.items() if k != "ssl" and k != "comment" and v >= 0)
    if abs(total - e["time"]) > 0.002: bad.append(f"entry {i}: time {e['time']} != {total}")
    datetime.fromisoformat(e["startedDateTime"].replace("Z", "+00:00"))
    if "text" not in e["request"].get("postData", {}): bad.append(f"entry {i}: no postData.text")
    c = e["response"]["content"]
    if not (isinstance(c["size"], int) and c["size"] >= 0): bad.append(f"entry {i}: content.size")
    for k in ("_proxlet_id", "_plugins"):
        if k not in e: bad.append(f"entry {i}: no {k}")
    if e["response"]["status"] and "serverIPAddress" not in e: bad.append(f"entry {i}: no serverIPAddress")
for b in bad: print(b)
print(f"{len(entries)} entries, {len(bad)} violations")
sys.exit(1 if bad else 0)
"#;

fn run(mut command: Command, what: &str) -> String {
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One line per flow of `path` (see [`INSPECT`]), read as `kind`.
fn inspect(kind: &str, path: &Path) -> Vec<String> {
    let mut python = Command::new(mitm_bin("python"));
    python.arg("-c").arg(INSPECT).arg(kind).arg(path);
    run(python, &format!("reading {} as {kind}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `proxlet convert ARGS`; returns its summary line.
fn convert(args: &[&Path]) -> String {
    let output = command().arg("convert").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "proxlet convert {args:?}: {stderr}"
    );
    stderr
}

/// What `mitmdump -nr FILE` printed: one `<<` line per response it loaded.
fn mitmdump_read(path: &Path) -> String {
    let mut mitmdump = Command::new(mitm_bin("mitmdump"));
    mitmdump.arg("-nr").arg(path);
    run(mitmdump, &format!("mitmdump -nr {}", path.display()))
}

fn responses_listed(output: &str) -> usize {
    output
        .lines()
        .filter(|l| l.trim_start().starts_with("<< "))
        .count()
}

/// Validates `har` against the HAR 1.2 JSON schema (har-validator) and the
/// timing rules.
fn assert_valid_har(har: &Path) {
    let mut node = Command::new("node");
    node.env("NODE_PATH", tools().join("har/node_modules"))
        .arg("-e")
        .arg(
            "const v = require('har-validator');\
             const h = JSON.parse(require('fs').readFileSync(process.argv[1]));\
             v.har(h).then(() => console.log('valid'))\
              .catch(e => { console.error(JSON.stringify(e.errors || e.message)); process.exit(1); });",
        )
        .arg(har);
    assert_eq!(run(node, "har-validator").trim(), "valid");
    let mut python = Command::new(mitm_bin("python"));
    python.arg("-c").arg(HAR_RULES).arg(har);
    run(python, "HAR timing rules");
}

/// The hex of `bytes`, as [`INSPECT`] prints bodies.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A field (`req`, `raw`, `plain`) of an [`INSPECT`] line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// An [`INSPECT`] line without the raw response body (HAR holds bodies decoded).
fn decoded_view(line: &str) -> String {
    line.split_whitespace()
        .filter(|w| !w.starts_with("raw="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Real mitmdump as a proxy on loopback, writing what it sees to a dump.
struct Mitmdump {
    child: Child,
    addr: SocketAddr,
    confdir: tempfile::TempDir,
}

impl Mitmdump {
    fn start(dump: &Path) -> Self {
        // mitmdump takes a fixed port: pick a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let confdir = tempfile::tempdir().unwrap();
        let mut child = Command::new(mitm_bin("mitmdump"))
            .args(["--listen-host", "127.0.0.1", "-p", &port.to_string()])
            .arg("--set")
            .arg(format!("confdir={}", confdir.path().display()))
            .args(["--ssl-insecure", "-q", "-w"])
            .arg(dump)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_until(Duration::from_secs(60), || {
            TcpStream::connect(addr).is_ok()
                && confdir.path().join("mitmproxy-ca-cert.pem").exists()
        });
        if !up {
            let _ = child.kill();
            panic!("mitmdump did not start listening on {addr}");
        }
        Self {
            child,
            addr,
            confdir,
        }
    }

    /// `curl ARGS` through mitmdump, trusting its CA.
    fn curl(&self, args: &[&str]) -> proxlet_tests::Curl {
        let proxy = format!("http://{}", self.addr);
        let mut all = vec!["-x", &proxy];
        all.extend_from_slice(args);
        let result = curl_with(
            None,
            &self.confdir.path().join("mitmproxy-ca-cert.pem"),
            &all,
        );
        assert!(result.success, "curl {args:?}: {}", result.stderr);
        result
    }

    /// Stops mitmdump (SIGTERM: it closes the dump) and waits for it.
    fn stop(mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let exited = wait_until(Duration::from_secs(30), || {
            self.child.try_wait().unwrap().is_some()
        });
        assert!(exited, "mitmdump did not exit after SIGTERM");
    }
}

impl Drop for Mitmdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the tests send and what it got.
struct Exchange {
    method: &'static str,
    url: String,
    status: u16,
    request: Vec<u8>,
    /// The response body decoded.
    response: Vec<u8>,
}

impl Exchange {
    fn new(method: &'static str, url: String, request: Vec<u8>, response: Vec<u8>) -> Self {
        Self {
            method,
            url,
            status: 200,
            request,
            response,
        }
    }
}

/// What the test requests sent and got, in order.
struct Sent {
    exchanges: Vec<Exchange>,
}

/// Sends GET, a binary POST and a gzip response through `send` (curl
/// through some proxy) to `origin`.
fn exchanges(origin: &Origin, work: &Path, send: &dyn Fn(&[&str]) -> Vec<u8>) -> Sent {
    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
    let upload = work.join("upload.bin");
    std::fs::write(&upload, &binary).unwrap();
    let upload_arg = format!("@{}", upload.display());
    let get = send(&[&origin.url("/bytes/5000")]);
    assert_eq!(get, pattern(5000));
    let post = send(&[
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &upload_arg,
        &origin.url("/count"),
    ]);
    assert_eq!(post, b"3000");
    // Without --compressed curl hands over the gzip bytes as they came.
    let gz = send(&[&origin.url("/gzip")]);
    assert_eq!(&gz[..2], b"\x1f\x8b", "origin sent gzip");
    Sent {
        exchanges: vec![
            Exchange::new("GET", origin.url("/bytes/5000"), vec![], pattern(5000)),
            Exchange::new("POST", origin.url("/count"), binary, b"3000".to_vec()),
            Exchange::new(
                "GET",
                origin.url("/gzip"),
                vec![],
                GZIP_TEXT.repeat(100).into_bytes(),
            ),
        ],
    }
}

/// Asserts that `lines` (from [`inspect`]) hold exactly the `sent` exchanges.
fn assert_exchanges(lines: &[String], sent: &Sent, source: &str) {
    assert_eq!(lines.len(), sent.exchanges.len(), "{source}: {lines:#?}");
    for (line, e) in lines.iter().zip(&sent.exchanges) {
        let prefix = format!("{} {} {} ", e.method, e.url, e.status);
        assert!(
            line.starts_with(&prefix),
            "{source}: {line} is not {prefix}"
        );
        let url = &e.url;
        assert_eq!(
            field(line, "req"),
            hex(&e.request),
            "{source}: request body of {url}"
        );
        assert_eq!(
            field(line, "plain"),
            hex(&e.response),
            "{source}: response body of {url}"
        );
    }
}

#[test]
fn a_dump_written_by_mitmdump_converts_to_intact_flows_and_back() {
    let origin = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("mitmdump.out");
    let mitmdump = Mitmdump::start(&dump);
    let sent = exchanges(&origin, work.path(), &|args| mitmdump.curl(args).body);
    mitmdump.stop();

    // Named without an extension: proxlet recognises the dump by content.
    let flows = work.path().join("from-mitmdump.flows");
    let summary = convert(&[&dump, &flows]);
    assert!(
        summary.contains("converted 3 flows") && summary.contains("(mitmproxy dump)"),
        "{summary}"
    );
    let original = inspect("mitmproxy", &dump);
    assert_exchanges(&original, &sent, "mitmdump's own reading");
    let converted = inspect("proxlet", &flows);
    assert_exchanges(&converted, &sent, "the converted flow file");
    // The raw bodies (the gzip bytes too) are byte-identical to the dump's.
    assert_eq!(converted, original);
    let gzip_line = &converted[2];
    assert!(field(gzip_line, "raw").starts_with("1f8b"), "{gzip_line}");

    // flows → mitm → flows keeps everything the dump held; mitmproxy loads it.
    let mitm = work.path().join("again.mitm");
    convert(&[&flows, &mitm]);
    assert_eq!(responses_listed(&mitmdump_read(&mitm)), 3);
    assert_eq!(inspect("mitmproxy", &mitm), original);
    let back = work.path().join("back.flows");
    convert(&[&mitm, &back]);
    assert_eq!(inspect("proxlet", &back), converted);

    // flows → HAR → flows keeps methods, URLs, statuses and decoded bodies.
    let har = work.path().join("out.har");
    let summary = convert(&[&flows, &har]);
    assert!(
        summary.contains("to ") && summary.contains("(HAR 1.2)"),
        "{summary}"
    );
    assert_valid_har(&har);
    assert_eq!(responses_listed(&mitmdump_read(&har)), 3);
    let from_har = work.path().join("from-har.flows");
    convert(&[&har, &from_har]);
    let decoded: Vec<String> = converted.iter().map(|l| decoded_view(l)).collect();
    let round: Vec<String> = inspect("proxlet", &from_har)
        .iter()
        .map(|l| decoded_view(l))
        .collect();
    assert_eq!(round, decoded);
}

#[test]
fn flows_captured_by_proxlet_export_to_har_and_mitm_that_the_real_tools_accept() {
    let ca = Arc::new(TestCa::new("interop origin"));
    let https = Origin::https(ca.clone());
    let plain = Origin::http();
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("captured.flows");
    let proxy = Proxlet::start(&[
        "--plugin",
        "none",
        "--save",
        saved.to_str().unwrap(),
        "--upstream-ca",
        ca.path().to_str().unwrap(),
    ]);
    let send = |args: &[&str]| {
        let result = curl(&proxy, args);
        assert!(result.success, "curl {args:?}: {}", result.stderr);
        result.body
    };
    let mut sent = exchanges(&plain, work.path(), &send);
    let secure = exchanges(&https, work.path(), &send);
    sent.exchanges.extend(secure.exchanges);
    // The save thread writes flows as they finish: wait for all six.
    let complete = wait_until(Duration::from_secs(30), || {
        saved.exists() && inspect("proxlet", &saved).len() == 6
    });
    assert!(complete, "six flows saved:\n{}", proxy.log());
    assert_exchanges(&inspect("proxlet", &saved), &sent, "the capture");

    let har = work.path().join("captured.har");
    let summary = convert(&[&saved, &har]);
    assert!(summary.contains("converted 6 flows"), "{summary}");
    assert_valid_har(&har);
    let text = std::fs::read_to_string(&har).unwrap();
    // The HTTPS flows went over a new upstream TLS connection: connect and
    // ssl are known; the POST's binary body is base64.
    assert!(text.contains("\"_encoding\":\"base64\""), "{text}");
    assert!(text.contains("\"_server_tls\""), "{text}");
    assert!(text.contains("\"serverIPAddress\":\"127.0.0.1\""), "{text}");
    let listed = mitmdump_read(&har);
    assert_eq!(responses_listed(&listed), 6, "{listed}");
    let through_mitmproxy: Vec<String> = inspect("mitmproxy", &har)
        .iter()
        .map(|l| format!("{} {}", &l[..l.find(" req=").unwrap()], field(l, "plain")))
        .collect();
    let expected: Vec<String> = sent
        .exchanges
        .iter()
        .map(|e| format!("{} {} {} {}", e.method, e.url, e.status, hex(&e.response)))
        .collect();
    assert_eq!(
        through_mitmproxy, expected,
        "mitmproxy reading proxlet's HAR"
    );

    let mitm = work.path().join("captured.mitm");
    convert(&[&saved, &mitm]);
    assert_eq!(responses_listed(&mitmdump_read(&mitm)), 6);
    assert_exchanges(
        &inspect("mitmproxy", &mitm),
        &sent,
        "mitmproxy reading proxlet's dump",
    );
    // Raw bodies (the gzip bytes) are what proxlet captured.
    assert_eq!(inspect("mitmproxy", &mitm), inspect("proxlet", &saved));

    // A filter selects, and its mistakes are reported with the position.
    let only_posts = work.path().join("posts.mitm");
    let summary = convert_with_filter(&saved, &only_posts, "~m POST");
    assert!(summary.contains("converted 2 flows"), "{summary}");
    let output = command()
        .arg("convert")
        .arg(&saved)
        .arg(&only_posts)
        .args(["--filter", "~m POST & ("])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("position"), "{stderr}");
}

fn convert_with_filter(input: &Path, output: &Path, filter: &str) -> String {
    let out = command()
        .arg("convert")
        .arg(input)
        .arg(output)
        .args(["--filter", filter])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}
