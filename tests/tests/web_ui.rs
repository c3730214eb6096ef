//! The web UI in a real browser: runs the node tests in `tests/web/`
//! (node:test, Playwright driving Debian's Chromium) against this
//! workspace's proxlet, with two versions of a plugin for the hot-reload
//! test. `./test.sh` installs Chromium and the tests' npm packages.

use std::{path::Path, process::Command};

use proxlet_tests::{guest, proxlet};

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn web_ui_passes_its_browser_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let web_tests = root.join("tests/web");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests drive Debian's chromium package; run ./test.sh to install it"
    );
    assert!(
        web_tests
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/web/node_modules is missing: run ./test.sh (it runs npm ci there)"
    );
    let (plugin_a, plugin_b) = (guest("rust_hello.wasm"), guest("rust_hello_reloaded.wasm"));
    assert_ne!(
        std::fs::read(&plugin_a).unwrap(),
        std::fs::read(&plugin_b).unwrap(),
        "the hot-reload test needs two different plugin files"
    );
    // The node runner's output goes straight to the terminal, measurements
    // included; one test file at a time so the timings are not shared with
    // another browser.
    let status = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .arg("tests/web/")
        .current_dir(root)
        .env("PROXLET_BIN", proxlet::binary())
        .env("PROXLET_TEST_PLUGIN_A", &plugin_a)
        .env("PROXLET_TEST_PLUGIN_B", &plugin_b)
        .status()
        .expect("run node (./test.sh installs it)");
    assert!(
        status.success(),
        "the browser tests failed ({status}); their output is above"
    );
}
