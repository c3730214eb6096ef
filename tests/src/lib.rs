//! The end-to-end harness: loopback origins with a throwaway CA, the real
//! `proxlet` binary on a free port, and clients (curl, hyper) that go through it.

pub mod client;
pub mod origin;
pub mod packages;
pub mod proxlet;
pub mod raw;
pub mod test_ca;

pub use client::{curl, Curl};
pub use origin::{pattern, Origin};
pub use proxlet::Proxlet;
pub use test_ca::TestCa;

/// A guest plugin built by `tests/build.rs`: `rust_hello.wasm`,
/// `rust_hello_reloaded.wasm`, `sandbox.wasm`.
pub fn guest(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("OUT_DIR")).join(file)
}

/// A `proxlet.toml` holding `body` in a fresh temporary dir (kept alive by
/// the returned guard), for `--config`.
pub fn config_file(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxlet.toml");
    std::fs::write(&path, body).unwrap();
    (dir, path)
}
