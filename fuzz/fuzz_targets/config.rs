//! The config file: any text either resolves to settings or is refused with
//! a line number inside the file; nothing panics.
#![no_main]

use std::io::Write;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use proxlet::{cli::Cli, config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err((line, message)) = config::FileConfig::parse(text) {
        assert!(
            line >= 1 && line <= text.lines().count().max(1) + 1,
            "{line}: {message}"
        );
        return;
    }
    // Parsed: resolving it (paths, durations, plugin entries, limits) must
    // give settings or an error, from a file on disk as `--config` reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxlet.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(data)
        .unwrap();
    let cli = Cli::try_parse_from(["proxlet", "--config", path.to_str().unwrap()]).unwrap();
    let _ = config::Settings::resolve(&cli.run, dir.path().join("home"));
});
