//! Builds the guest plugins the tests load, for wasm32-wasip2, with their own
//! target directory inside OUT_DIR, so `cargo test` is all it takes.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_owned();
    for watched in [
        "wit",
        "plugins/sdk",
        "plugins/examples",
        "plugins/Cargo.toml",
        "tests/guests",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let plugins = root.join("plugins");
    let guests = root.join("tests/guests");

    build(
        &plugins,
        "rust-hello",
        &[],
        &out.join("rust_hello.wasm"),
        &out,
    );
    // The same plugin saying something else: a "new version" for reload tests.
    build(
        &plugins,
        "rust-hello",
        &[("PROXLET_HELLO_GREETING", "reloaded")],
        &out.join("rust_hello_reloaded.wasm"),
        &out,
    );
    build(&guests, "sandbox", &[], &out.join("sandbox.wasm"), &out);
    build(
        &guests,
        "wrong-world",
        &[],
        &out.join("wrong_world.wasm"),
        &out,
    );
}

fn build(workspace: &Path, package: &str, envs: &[(&str, &str)], dest: &Path, out: &Path) {
    let target_dir = out.join("guest-target");
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
