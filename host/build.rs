//! Builds the first-party plugins of `plugins/` for wasm32-wasip2 and writes
//! `builtin.rs` into OUT_DIR, which `include_bytes!`s them into the binary.

#[path = "build/guest.rs"]
mod guest;

use std::{env, fmt::Write, path::PathBuf};

const PLUGINS: [&str; 4] = ["cache", "error-links", "pypi-slash", "replace"];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_owned();
    println!("cargo:rerun-if-changed=build");
    for watched in [
        "wit",
        "plugins/sdk",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    guest::ensure_target();
    let mut table = String::from("pub static COMPONENTS: [(&str, &[u8]); 4] = [\n");
    for name in PLUGINS {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("plugins").join(name).display()
        );
        let dest = out.join(format!("{name}.wasm"));
        guest::build(
            &root.join("plugins"),
            &format!("proxlet-{name}"),
            &[],
            &dest,
        );
        writeln!(table, "    ({name:?}, include_bytes!({dest:?})),").unwrap();
    }
    table.push_str("];\n");
    std::fs::write(out.join("builtin.rs"), table).unwrap();
}
