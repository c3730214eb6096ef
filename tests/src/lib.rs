//! The end-to-end harness: loopback origins with a throwaway CA, the real
//! `proxlet` binary on a free port, and clients (curl, hyper) that go through it.

pub mod client;
pub mod origin;
pub mod packages;
pub mod proxlet;
pub mod raw;
pub mod s3;
pub mod test_ca;

pub use client::{curl, Curl};
pub use origin::{pattern, Origin};
pub use proxlet::Proxlet;
pub use s3::S3Server;
pub use test_ca::TestCa;

/// A guest plugin built by `tests/build.rs`: `rust_hello.wasm`,
/// `rust_hello_reloaded.wasm`, `sandbox.wasm`.
pub fn guest(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("OUT_DIR")).join(file)
}

/// Where `./test.sh` installs the tools tests run (mitmproxy, the HAR
/// validator, a Python venv): `$PROXLET_TEST_TOOLS`, by default
/// `~/.cache/proxlet-test`.
pub fn test_tools() -> std::path::PathBuf {
    std::env::var_os("PROXLET_TEST_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            std::path::PathBuf::from(home).join(".cache/proxlet-test")
        })
}

/// A one-worker runtime for a loopback server and its listener, bound with
/// std to `addr` (port 0: a free one) so servers start inside async tests
/// too; hand the listener to `tokio::net::TcpListener::from_std` in it.
pub fn loopback_server(
    addr: std::net::SocketAddr,
) -> (tokio::runtime::Runtime, std::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    (runtime, listener)
}

/// Checks `condition` until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `proxlet.toml` holding `body` in a fresh temporary dir (kept alive by
/// the returned guard), for `--config`.
pub fn config_file(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxlet.toml");
    std::fs::write(&path, body).unwrap();
    (dir, path)
}
