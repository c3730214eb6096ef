//! Building guest components for wasm32-wasip2 from a build script (shared
//! by `host/build.rs` and `tests/build.rs`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// The guest target directory: one beside the outer build's profiles
/// (`target/wasm-guests`), so every build script and profile shares it.
pub fn target_dir() -> PathBuf {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    out.ancestors()
        .nth(4)
        .map(|target| target.join("wasm-guests"))
        .unwrap_or_else(|| out.join("wasm-guests"))
}

/// Builds `package` of the workspace at `workspace` (release, wasm32-wasip2)
/// with extra environment `envs`, and copies the component to `dest`.
pub fn build(workspace: &Path, package: &str, envs: &[(&str, &str)], dest: &Path) {
    let target_dir = target_dir();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not reach the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // `cargo clippy` of the host must not lint (and re-fingerprint) guests.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("PROXLET_HELLO_GREETING");
    for (key, value) in envs {
        command.env(key, value);
    }
    let status = command.status().expect("run cargo for the guest plugins");
    assert!(
        status.success(),
        "building guest {package} failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(&built, dest).expect("copy the built guest");
}
