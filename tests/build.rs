//! Builds the guest plugins the tests load, for wasm32-wasip2, into OUT_DIR
//! (sharing the guest target dir with `host/build.rs`), so `cargo test` is
//! all it takes.

#[path = "../host/build/guest.rs"]
mod guest;

use std::{env, path::PathBuf};

use guest::build;

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
    guest::ensure_target();
    let plugins = root.join("plugins");
    let guests = root.join("tests/guests");

    build(&plugins, "rust-hello", &[], &out.join("rust_hello.wasm"));
    // The same plugin saying something else: a "new version" for reload tests.
    build(
        &plugins,
        "rust-hello",
        &[("PROXLET_HELLO_GREETING", "reloaded")],
        &out.join("rust_hello_reloaded.wasm"),
    );
    build(&guests, "sandbox", &[], &out.join("sandbox.wasm"));
    build(&guests, "stdio", &[], &out.join("stdio.wasm"));
    build(&guests, "wrong-world", &[], &out.join("wrong_world.wasm"));
}
