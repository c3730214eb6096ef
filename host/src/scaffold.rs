//! `proxlet new NAME --lang rust|python|js|c`: a ready-to-build plugin
//! directory made from the examples, with the WIT files (and, for Rust, the
//! SDK) copied in, so it builds anywhere without this repository.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// The languages `proxlet new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

const WIT: [(&str, &str); 8] = [
    ("types.wit", include_str!("../../wit/types.wit")),
    ("host.wit", include_str!("../../wit/host.wit")),
    ("lifecycle.wit", include_str!("../../wit/lifecycle.wit")),
    ("request.wit", include_str!("../../wit/request.wit")),
    ("response.wit", include_str!("../../wit/response.wit")),
    ("error.wit", include_str!("../../wit/error.wit")),
    ("websocket.wit", include_str!("../../wit/websocket.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

const SDK: [(&str, &str); 5] = [
    ("lib.rs", include_str!("../../plugins/sdk/src/lib.rs")),
    ("accept.rs", include_str!("../../plugins/sdk/src/accept.rs")),
    (
        "cachepath.rs",
        include_str!("../../plugins/sdk/src/cachepath.rs"),
    ),
    ("filter.rs", include_str!("../../plugins/sdk/src/filter.rs")),
    ("tree.rs", include_str!("../../plugins/sdk/src/tree.rs")),
];

/// The JavaScript example with the kit it imports and its build script.
const JS_SOURCES: [(&str, &str); 3] = [
    ("app.js", include_str!("../../plugins/examples/js/app.js")),
    (
        "proxlet.js",
        include_str!("../../plugins/examples/js/proxlet.js"),
    ),
    (
        "build.mjs",
        include_str!("../../plugins/examples/js/build.mjs"),
    ),
];

/// The C example with the kit header it includes (build.sh is adapted below).
const C_SOURCES: [(&str, &str); 2] = [
    ("app.c", include_str!("../../plugins/examples/c/app.c")),
    (
        "proxlet.h",
        include_str!("../../plugins/examples/c/proxlet.h"),
    ),
];

const SDK_MANIFEST: &str = r#"[package]
name = "proxlet-plugin"
version = "0.1.0"
edition = "2021"
license = "MIT OR Apache-2.0"

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "bitflags"] }
regex-lite = { version = "0.1", optional = true }
serde = { version = "1", features = ["derive"], optional = true }
serde_json = { version = "1", optional = true }

[features]
default = ["config"]
# `config::<T>()`: the plugin config parsed with serde.
config = ["dep:serde", "dep:serde_json"]
# mitmproxy-style flow filters (`~u`, `~d`, …); pulls in regex-lite.
filter = ["dep:regex-lite"]
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds this plugin: ./build.sh → NAME.wasm (needs `rustup target add wasm32-wasip2`).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/CRATE.wasm" NAME.wasm
echo "built $(pwd)/NAME.wasm"
"#;

const PYTHON_BUILD: &str = r#"#!/usr/bin/env bash
# Builds this plugin: ./build.sh → NAME.wasm (needs: pip install componentize-py==0.25.1).
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d wit -w plugin componentize app -o NAME.wasm
echo "built $(pwd)/NAME.wasm"
"#;

const JS_BUILD: &str = r#"#!/usr/bin/env bash
# Builds this plugin: ./build.sh → NAME.wasm (installs componentize-js with npm on first use).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --loglevel=error
node build.mjs app.js wit NAME.wasm
"#;

/// Writes the plugin directory `dir` (named `name`) and returns what to run
/// next.
pub fn create(dir: &Path, lang: Lang) -> Result<String, String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .ok_or_else(|| {
            format!("{dir:?}: the plugin name must be letters, digits, - and _ (it names the .wasm file)")
        })?;
    if dir.exists() {
        return Err(format!(
            "{} already exists; pick another name",
            dir.display()
        ));
    }
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| text.replace("CRATE", &crate_name).replace("NAME", name);
    let mut files: Vec<(PathBuf, String)> = WIT
        .iter()
        .map(|(file, text)| (Path::new("wit").join(file), (*text).to_owned()))
        .collect();
    match lang {
        Lang::Rust => {
            let sdk = Path::new("sdk/proxlet-plugin");
            files.push((sdk.join("Cargo.toml"), SDK_MANIFEST.to_owned()));
            for (file, text) in SDK {
                files.push((sdk.join("src").join(file), text.to_owned()));
            }
            files.push((
                "Cargo.toml".into(),
                format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nproxlet-plugin = {{ path = \"sdk/proxlet-plugin\" }}\n\n[profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\npanic = \"abort\"\n\n# Not part of any enclosing workspace.\n[workspace]\n"
                ),
            ));
            files.push((
                "src/lib.rs".into(),
                include_str!("../../plugins/examples/rust-hello/src/lib.rs").to_owned(),
            ));
            files.push(("build.sh".into(), fill(RUST_BUILD)));
            files.push((".gitignore".into(), "target/\n*.wasm\n".into()));
        }
        Lang::Python => {
            files.push((
                "app.py".into(),
                include_str!("../../plugins/examples/python/app.py").to_owned(),
            ));
            files.push((
                "proxlet_addon.py".into(),
                include_str!("../../plugins/examples/python/proxlet_addon.py").to_owned(),
            ));
            files.push(("build.sh".into(), fill(PYTHON_BUILD)));
            files.push((".gitignore".into(), "*.wasm\n__pycache__/\n".into()));
        }
        Lang::Js => {
            for (file, text) in JS_SOURCES {
                files.push((file.into(), text.to_owned()));
            }
            let package = include_str!("../../plugins/examples/js/package.json")
                .replace("proxlet-js-plugin-example", name)
                .replace("../../../wit json-field.wasm", &format!("wit {name}.wasm"));
            files.push(("package.json".into(), package));
            files.push(("build.sh".into(), fill(JS_BUILD)));
            files.push((".gitignore".into(), "node_modules/\n*.wasm\n".into()));
        }
        Lang::C => {
            for (file, text) in C_SOURCES {
                files.push((file.into(), text.to_owned()));
            }
            let build = include_str!("../../plugins/examples/c/build.sh")
                .replace("$here/../../../wit", "$here/wit")
                .replace("inject-error.wasm", &format!("{name}.wasm"));
            files.push(("build.sh".into(), build));
            files.push((".gitignore".into(), "gen/\n*.wasm\n".into()));
        }
    }
    for (relative, text) in &files {
        let path = dir.join(relative);
        let written = std::fs::create_dir_all(path.parent().unwrap_or(dir))
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if relative == Path::new("build.sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
        }
    }
    let shown = dir.display();
    let language = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
        Lang::C => "C",
    };
    Ok(format!(
        "created {language} plugin {name} in {shown}\nnext:\n  {shown}/build.sh\n  proxlet --plugin {shown}/{name}.wasm      # or copy it into a --plugin-dir\n"
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The names of the files in `dir` (relative to the repository) ending
    /// in one of `extensions`, sorted.
    fn on_disk(dir: &str, extensions: &[&str]) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| extensions.iter().any(|x| n.ends_with(x)))
            .collect();
        names.sort();
        names
    }

    fn names(files: &[(&str, &str)]) -> Vec<String> {
        let mut names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        names
    }

    /// A WIT file added must be copied into scaffolded plugins too.
    #[test]
    fn every_wit_file_is_scaffolded() {
        assert_eq!(names(&super::WIT), on_disk("wit", &[".wit"]));
    }

    /// A module added to the SDK must be copied into scaffolded plugins too.
    #[test]
    fn every_sdk_module_is_scaffolded() {
        assert_eq!(names(&super::SDK), on_disk("plugins/sdk/src", &[".rs"]));
    }

    /// So must a file added to the JavaScript or C example (a kit module, a
    /// header), or the scaffolded plugin would not build.
    #[test]
    fn every_example_source_is_scaffolded() {
        assert_eq!(
            names(&super::JS_SOURCES),
            on_disk("plugins/examples/js", &[".js", ".mjs"])
        );
        assert_eq!(
            names(&super::C_SOURCES),
            on_disk("plugins/examples/c", &[".c", ".h"])
        );
    }

    /// The SDK's manifest is rewritten without the workspace; it must keep
    /// the SDK's dependencies and features, or plugins using them break.
    #[test]
    fn sdk_manifest_matches_the_sdk() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/Cargo.toml");
        let sdk: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        let scaffolded: toml::Table = super::SDK_MANIFEST.parse().unwrap();
        let dependencies = |t: &toml::Table| {
            t["dependencies"]
                .as_table()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(dependencies(&scaffolded), dependencies(&sdk));
        assert_eq!(scaffolded["features"], sdk["features"]);
    }
}
