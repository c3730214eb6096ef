//! Building guest components for wasm32-wasip2 from a build script (shared
//! by `host/build.rs` and `tests/build.rs`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// The target guests are built for; rust-toolchain.toml names it too.
pub const TARGET: &str = "wasm32-wasip2";

/// Makes sure the standard library for [`TARGET`] is installed for the
/// toolchain running this build, adding it with rustup when it is missing.
/// rustup installs a toolchain file's `targets` only when it installs the
/// toolchain itself, so an existing stable lacks it on a fresh clone.
pub fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = match Command::new(&rustc).args(["--print", "sysroot"]).output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => fail(&format!(
            "cannot run `{rustc} --print sysroot` to find the {TARGET} standard library"
        )),
    };
    let installed = || {
        sysroot
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    };
    if installed() {
        return;
    }
    // The toolchain this build runs on: rustup's proxy names it in
    // RUSTUP_TOOLCHAIN; otherwise a rustup sysroot is named after it.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok().or_else(|| {
        let in_rustup = sysroot.parent()?.file_name()? == "toolchains";
        in_rustup.then(|| sysroot.file_name()?.to_str().map(str::to_owned))?
    });
    let manual = format!("`rustup target add {TARGET}`");
    let Some(toolchain) = toolchain else {
        fail(&format!(
            "the {TARGET} standard library is not installed in {sysroot:?} and this toolchain is not \
             managed by rustup: install it ({manual} with rustup) and build again"
        ));
    };
    println!(
        "cargo:warning=the {TARGET} target was missing from toolchain {toolchain}: \
         running `rustup target add {TARGET} --toolchain {toolchain}` (plugins are built for it)"
    );
    let added = Command::new("rustup")
        .args(["target", "add", TARGET, "--toolchain", &toolchain])
        .status();
    match added {
        Ok(status) if status.success() && installed() => {}
        Ok(_) => fail(&format!(
            "`rustup target add {TARGET} --toolchain {toolchain}` did not install the {TARGET} \
             standard library into {sysroot:?}: run it yourself to see why, then build again"
        )),
        Err(e) => fail(&format!(
            "the {TARGET} standard library is not installed and rustup cannot be run ({e}): \
             run {manual} (install rustup from https://rustup.rs if needed), then build again"
        )),
    }
}

/// Stops the build script with one clear line (no panic backtrace).
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

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
            TARGET,
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
        "building guest {package} for {TARGET} failed (see the errors above)"
    );
    let built = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(&built, dest).expect("copy the built guest");
}
