//! Plugins in Python (componentize-py), JavaScript (componentize-js) and C
//! (wit-bindgen + clang + wasm-tools), built from `plugins/examples/` sources: the rule acts on traffic, an
//! edited and rebuilt plugin is swapped in while requests keep succeeding,
//! and an exception in a hook is logged and handled per `on_error`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use proxlet_tests::{curl, Origin, Proxlet};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `componentize-py` from PATH or from python3's scripts directory.
fn componentize_py() -> PathBuf {
    if let Ok(path) = which("componentize-py") {
        return path;
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path =
        PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("componentize-py");
    assert!(
        path.is_file(),
        "componentize-py is not installed: pip install componentize-py==0.25.1 (./test.sh does)"
    );
    path
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[derive(Clone, Copy)]
enum Lang {
    Python,
    Js,
    C,
}

impl Lang {
    fn example(self) -> PathBuf {
        repo().join(match self {
            Lang::Python => "plugins/examples/python",
            Lang::Js => "plugins/examples/js",
            Lang::C => "plugins/examples/c",
        })
    }

    fn source(self) -> &'static str {
        match self {
            Lang::Python => "app.py",
            Lang::Js => "app.js",
            Lang::C => "app.c",
        }
    }

    /// Builds the plugin source in `dir` into `out`.
    fn build(self, dir: &Path, out: &Path) {
        let wit = repo().join("wit");
        let output = match self {
            Lang::Python => Command::new(componentize_py())
                .current_dir(dir)
                .arg("-d")
                .arg(&wit)
                .args(["-w", "plugin", "componentize", "app", "-o"])
                .arg(out)
                .output(),
            Lang::Js => {
                let example = self.example();
                assert!(
                    example.join("node_modules/@bytecodealliance/componentize-js").is_dir(),
                    "componentize-js is not installed: npm ci --prefix plugins/examples/js (./test.sh does)"
                );
                Command::new("node")
                    .arg(example.join("build.mjs"))
                    .arg(dir.join("app.js"))
                    .arg(&wit)
                    .arg(out)
                    .output()
            }
            Lang::C => Command::new("bash")
                .arg(dir.join("build.sh"))
                .arg(out)
                .env("PROXLET_WIT", &wit)
                .output(),
        }
        .expect("run the plugin build");
        assert!(
            output.status.success(),
            "building {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Edits the source in `dir`: `from` → `to`.
    fn edit(self, dir: &Path, from: &str, to: &str) {
        let path = dir.join(self.source());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} is not in {}", path.display());
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

/// Copies the example's sources (not its build outputs) into a fresh dir.
fn copy_example(lang: Lang) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(lang.example()).unwrap() {
        let path = entry.unwrap().path();
        let is_source = path
            .extension()
            .is_some_and(|e| ["py", "js", "mjs", "c", "h", "sh"].iter().any(|x| e == *x));
        if is_source {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// One language's example: what `/data.json` looks like through it, and the
/// source edit that makes it fail for `/boom.json`.
struct Case {
    lang: Lang,
    /// The `config` table of the plugin.
    config: &'static str,
    /// Status and a body part of `/data.json` through the plugin.
    status: u16,
    default_value: &'static str,
    /// Source `from` → `to` making the hook fail for URLs with "boom".
    raise: (&'static str, &'static str),
    /// What the log then says.
    message: &'static str,
}

fn edit_rebuild_and_raise(case: Case) {
    let Case {
        lang,
        config: plugin_config,
        status,
        default_value,
        raise,
        message,
    } = case;
    let origin = Origin::http();
    for path in ["/data.json", "/boom.json", "/other.json"] {
        origin.put(path, vec![("application/json", b"{\"a\": 1}".to_vec())]);
    }
    let src = copy_example(lang);
    let out = tempfile::tempdir().unwrap();
    let plugin = out.path().join("plugin.wasm");
    let started = Instant::now();
    lang.build(src.path(), &plugin);
    eprintln!("built in {:?}", started.elapsed());

    let config = out.path().join("proxlet.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\nname = \"example\"\npath = {plugin:?}\nconfig = {plugin_config}\nlimits = {{ call_ms = 2000 }}\n"
        ),
    )
    .unwrap();
    let proxy = Proxlet::start(&["--config", config.to_str().unwrap()]);
    let url = origin.url("/data.json");
    let first = curl(&proxy, &[&url]);
    assert_eq!(first.status, status, "{first:?}\n{}", proxy.log());
    assert!(
        first.text().contains(default_value),
        "{}\n{}",
        first.text(),
        proxy.log()
    );

    // Requests keep flowing while the source is edited, rebuilt and saved.
    // The new version also fails for URLs containing "boom".
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let load = std::thread::spawn({
        let (stop, failures) = (stop.clone(), failures.clone());
        let url = origin.url("/other.json");
        let proxy_url = proxy.url();
        move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let ok = Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-x",
                        &proxy_url,
                        &url,
                    ])
                    .output()
                    .is_ok_and(|o| o.stdout == b"200");
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    lang.edit(src.path(), default_value, "edited value");
    lang.edit(src.path(), raise.0, raise.1);
    let next = out.path().join("next.wasm");
    lang.build(src.path(), &next);
    std::fs::rename(&next, &plugin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !curl(&proxy, &[&url]).text().contains("edited value") {
        assert!(
            Instant::now() < deadline,
            "the new version never served:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{}", proxy.log());
    assert!(
        proxy.log().contains("reloaded plugin example"),
        "{}",
        proxy.log()
    );

    // An exception in the hook: logged with its message, and fail-open
    // passes the response on unchanged.
    let boom = curl(&proxy, &[&origin.url("/boom.json")]);
    assert_eq!(
        (boom.status, boom.text().as_str()),
        (200, "{\"a\": 1}"),
        "{}",
        proxy.log()
    );
    assert!(
        proxy.wait_for_log(message, Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("fail-open"), "{}", proxy.log());
    // The plugin keeps working for other flows.
    assert!(curl(&proxy, &[&url]).text().contains("edited value"));
}

#[test]
fn python_plugin_acts_reloads_and_reports_exceptions() {
    edit_rebuild_and_raise(Case {
        lang: Lang::Python,
        config: "{}",
        status: 200,
        default_value: "was here",
        raise: (
            "data = flow.response.json()",
            "if \"boom\" in flow.request.url:\n            raise ValueError(\"boom from python\")\n        data = flow.response.json()",
        ),
        message: "boom from python",
    });
}

#[test]
fn javascript_plugin_acts_reloads_and_reports_exceptions() {
    edit_rebuild_and_raise(Case {
        lang: Lang::Js,
        config: "{}",
        status: 200,
        default_value: "js was here",
        raise: (
            "const data = JSON.parse",
            "if (request.url.includes('boom')) throw new Error('boom from js');\n    const data = JSON.parse",
        ),
        message: "boom from js",
    });
}

#[test]
fn c_plugin_acts_reloads_and_reports_traps() {
    // C has no exceptions: the edited version traps (as a failed assert or
    // a wild pointer would), which the host reports the same way.
    edit_rebuild_and_raise(Case {
        lang: Lang::C,
        config: "{ match = \"/data.json\", status = 503 }",
        status: 503,
        default_value: "by the c example",
        raise: (
            "  if (!strstr(url, match)) {",
            "  if (strstr(url, \"boom\")) __builtin_trap();\n  if (!strstr(url, match)) {",
        ),
        message: "unreachable",
    });
}

/// The version `wit/` declares (`package proxlet:plugin@X;`).
fn wit_version() -> String {
    let world = std::fs::read_to_string(repo().join("wit/world.wit")).unwrap();
    let start = world.find("proxlet:plugin@").unwrap() + "proxlet:plugin@".len();
    world[start..].split(';').next().unwrap().to_owned()
}

/// The Python example built against `wit/` labelled `version`, and what
/// `proxlet check` says of it: (accepted, stderr).
fn check_python_built_for(version: &str) -> (bool, String) {
    let current = wit_version();
    let wit = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("wit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wit") {
            let text = std::fs::read_to_string(&path).unwrap();
            let labelled = text.replace(
                &format!("proxlet:plugin@{current}"),
                &format!("proxlet:plugin@{version}"),
            );
            std::fs::write(wit.path().join(path.file_name().unwrap()), labelled).unwrap();
        }
    }
    let src = copy_example(Lang::Python);
    let out = src.path().join("labelled.wasm");
    let built = Command::new(componentize_py())
        .current_dir(src.path())
        .arg("-d")
        .arg(wit.path())
        .args(["-w", "plugin", "componentize", "app", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let checked = proxlet_tests::proxlet::command()
        .arg("check")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr).into_owned();
    (checked.status.success(), stderr)
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused_naming_both() {
    // As a plugin built before 0.2 says of itself.
    let (accepted, stderr) = check_python_built_for("0.1.0");
    assert!(!accepted);
    assert!(
        stderr.contains("built for proxlet:plugin@0.1.0"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("implements proxlet:plugin@{}", wit_version())),
        "{stderr}"
    );
    // A plugin built for 0.2.0 (before the WebSocket hooks) still loads.
    let (accepted, stderr) = check_python_built_for("0.2.0");
    assert!(accepted, "{stderr}");
}

/// `proxlet new` for `lang`, built with its own build.sh, then loaded.
fn scaffold_builds_and_loads(lang: &str, envs: &[(&str, &std::ffi::OsStr)]) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}");
    let created = proxlet_tests::proxlet::command()
        .current_dir(dir.path())
        .args(["new", &name, "--lang", lang])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let build = format!("{name}/build.sh");
    assert!(printed.contains(&build), "{printed}");
    assert!(
        printed.contains(&format!("--plugin {name}/{name}.wasm")),
        "{printed}"
    );

    let mut command = Command::new("bash");
    command.current_dir(dir.path()).arg(&build);
    if lang == "python" {
        let bin = componentize_py();
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command.env("PATH", path);
    }
    let built = command.envs(envs.iter().copied()).output().unwrap();
    assert!(
        built.status.success(),
        "{build} failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = dir.path().join(&name).join(format!("{name}.wasm"));
    let checked = proxlet_tests::proxlet::command()
        .arg("check")
        .arg(&wasm)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(report.contains("a proxlet plugin"), "{report}");
    assert!(report.contains("hooks: on-"), "{report}");
}

#[test]
fn proxlet_new_scaffolds_plugins_that_build_and_load() {
    // The Rust scaffold shares the guests' target dir, so its dependencies
    // are already built.
    let guests = repo().join("target/wasm-guests");
    scaffold_builds_and_loads("rust", &[("CARGO_TARGET_DIR", guests.as_os_str())]);
    scaffold_builds_and_loads("python", &[]);
    // npm reuses what ./test.sh's `npm ci` put in its cache.
    scaffold_builds_and_loads("js", &[("npm_config_prefer_offline", "true".as_ref())]);
    scaffold_builds_and_loads("c", &[]);
}

/// The Python kit gives borrowed heads no `weakref.finalize` (the cost of
/// making and detaching one per head per call): a head still dies with its
/// call, and a plugin's own `weakref.finalize` still runs.
#[test]
fn python_heads_end_with_their_call_and_plugin_finalizers_still_run() {
    let origin = Origin::http();
    for path in ["/page", "/stale"] {
        origin.put(path, vec![("text/plain", b"hello".to_vec())]);
    }
    let src = copy_example(Lang::Python);
    std::fs::write(
        src.path().join("app.py"),
        r#"import weakref

from proxlet_addon import Addon, export


class Thing:
    pass


class Probe(Addon):
    kept = None

    def responseheaders(self, flow):
        if flow.request.path == "/stale" and self.kept is not None:
            self.kept.status()  # a head from an earlier call
        ran = []
        thing = Thing()
        weakref.finalize(thing, ran.append, "ran")
        del thing
        flow.response.headers["x-finalizer"] = ",".join(ran) or "did not run"
        self.kept = flow.response._head


Lifecycle, RequestHooks, ResponseHooks, ErrorHooks = export(Probe)
"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let plugin = out.path().join("probe.wasm");
    Lang::Python.build(src.path(), &plugin);
    let proxy = Proxlet::start(&["--plugin", plugin.to_str().unwrap()]);
    let fetch = |path: &str| {
        curl(&proxy, &["-D", "-", &origin.url(path)])
            .text()
            .to_ascii_lowercase()
    };
    for _ in 0..3 {
        let head = fetch("/page");
        assert!(head.contains("x-finalizer: ran"), "{head}\n{}", proxy.log());
        assert!(head.ends_with("hello"), "{head}");
    }
    // Reaching for a head kept from an earlier call fails the hook (the
    // handle is gone), fail-open serves the response, and the next flow is
    // edited again.
    let stale = fetch("/stale");
    assert!(!stale.contains("x-finalizer"), "{stale}\n{}", proxy.log());
    assert!(stale.ends_with("hello"), "{stale}");
    assert!(
        proxy.wait_for_log("object has no attribute 'handle'", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(
        fetch("/page").contains("x-finalizer: ran"),
        "{}",
        proxy.log()
    );
}
