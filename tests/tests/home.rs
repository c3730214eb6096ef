//! The proxlet home is treated like `~/.ssh`: a CA key or a home that other
//! users could read or change stops the start with the `chmod` that fixes it,
//! and compiled code is only loaded from a cache dir private to us.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use proxlet_tests::{guest, Proxlet};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The function code packs under a compiled-code cache dir, with mtimes.
fn packs(cache: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut packs: Vec<_> = fs::read_dir(cache.join("functions"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let modified = fs::metadata(&path).unwrap().modified().unwrap();
            (path, modified)
        })
        .collect();
    packs.sort();
    packs
}

/// Starts proxlet, expecting it to exit; returns what it printed.
fn refused(home: &Path) -> String {
    match Proxlet::start_with_home(home, &[]) {
        Ok(proxy) => panic!("proxlet started with home {home:?}:\n{}", proxy.log()),
        Err(output) => output,
    }
}

#[test]
fn a_fresh_home_and_its_cache_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let hello = guest("rust_hello.wasm");
    let _proxy = Proxlet::start_with_home(&home, &["--plugin", hello.to_str().unwrap()]).unwrap();
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("cache")), 0o700);
    assert_eq!(mode(&home.join("ca-key.pem")), 0o600);
    for entry in fs::read_dir(home.join("cache")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{path:?} is open to others");
    }
}

#[test]
fn a_ca_key_readable_by_others_stops_the_start_with_the_chmod_that_fixes_it() {
    let home = tempfile::tempdir().unwrap();
    drop(Proxlet::start_with_home(home.path(), &[]).unwrap());
    let key = home.path().join("ca-key.pem");
    chmod(&key, 0o644);

    let output = refused(home.path());
    assert!(output.contains("exit status: 1"), "{output}");
    let expected = format!(
        "proxlet: error: {key:?} has mode 0644 (open to group or others), so other users could \
         use the CA key to impersonate any site to clients that trust it (fix: chmod 600 {})",
        key.display()
    );
    assert!(output.contains(&expected), "{output}");
    assert!(!output.contains("listening"), "{output}");

    // The suggested fix is enough.
    chmod(&key, 0o600);
    Proxlet::start_with_home(home.path(), &[]).unwrap();
}

#[test]
fn a_home_writable_by_others_is_refused_even_before_the_ca_exists() {
    let home = tempfile::tempdir().unwrap();
    chmod(home.path(), 0o777);

    let output = refused(home.path());
    assert!(output.contains("exit status: 1"), "{output}");
    let expected = format!(
        "proxlet: error: {:?} has mode 0777 (writable by group or others), so other users \
         could replace the CA key or the compiled plugin code in it (fix: chmod 700 {})",
        home.path(),
        home.path().display()
    );
    assert!(output.contains(&expected), "{output}");
    // Refused, not quietly repaired: no CA was written into it.
    assert!(!home.path().join("ca-key.pem").exists());
    assert_eq!(mode(home.path()), 0o777);
}

#[test]
fn a_home_readable_by_others_or_sticky_like_tmp_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    // mkdir with the common umask 022.
    chmod(home.path(), 0o755);
    drop(Proxlet::start_with_home(home.path(), &[]).unwrap());
    // World-writable but sticky and ours, like /tmp: others cannot replace
    // our files, and the key's own mode and owner are still checked.
    chmod(home.path(), 0o1777);
    Proxlet::start_with_home(home.path(), &[]).unwrap();
    assert_eq!(mode(&home.path().join("ca-key.pem")), 0o600);
}

#[test]
fn a_cache_dir_writable_by_others_is_ignored_and_plugins_are_compiled() {
    let home = tempfile::tempdir().unwrap();
    let hello = guest("rust_hello.wasm");
    let args = ["--plugin", hello.to_str().unwrap()];
    drop(Proxlet::start_with_home(home.path(), &args).unwrap());
    // While the cache is private, the restart loads from it...
    let cached = Proxlet::start_with_home(home.path(), &args).unwrap();
    assert!(
        cached.log().contains("compiled code from cache"),
        "{}",
        cached.log()
    );
    drop(cached);

    // ...once another user could plant code in it, it is not trusted.
    let cache = home.path().join("cache");
    let packs_before = packs(&cache);
    assert!(!packs_before.is_empty());
    chmod(&cache, 0o777);
    let env = [("RUST_LOG", "info,proxlet::plugin::engine=debug".to_owned())];
    let proxy = Proxlet::start_with_env(home.path(), &env, &args).unwrap();
    let log = proxy.log();
    assert!(log.contains("loaded plugin rust_hello"), "{log}");
    // Nor is the function code below it read or written.
    assert!(log.contains("reusing the code of "), "{log}");
    assert_eq!(packs(&cache), packs_before);
    assert!(log.contains(", compiled)"), "{log}");
    assert!(!log.contains("compiled code from cache"), "{log}");
    let warning =
        format!("not using the compiled-code cache {cache:?}: it has mode 0777 and owner uid");
    let warn_line = log
        .lines()
        .find(|line| line.contains(&warning))
        .unwrap_or_else(|| panic!("no cache warning:\n{log}"));
    assert!(warn_line.contains("WARN"), "{warn_line}");
    assert!(
        warn_line.contains(&format!("(fix: chmod 700 {})", cache.display())),
        "{warn_line}"
    );
    assert_eq!(log.matches(&warning).count(), 1, "{log}");
}

#[test]
fn a_cached_file_writable_by_others_is_not_loaded() {
    let home = tempfile::tempdir().unwrap();
    let hello = guest("rust_hello.wasm");
    let args = ["--plugin", hello.to_str().unwrap()];
    drop(Proxlet::start_with_home(home.path(), &args).unwrap());
    let files: Vec<_> = fs::read_dir(home.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    chmod(&files[0], 0o666);

    let proxy = Proxlet::start_with_home(home.path(), &args).unwrap();
    let log = proxy.log();
    assert!(log.contains(", compiled)"), "{log}");
    assert!(
        log.contains(&format!("ignoring compiled code {:?}", files[0])),
        "{log}"
    );
    drop(proxy);
    // It was replaced by a private copy, which the next start trusts.
    assert_eq!(mode(&files[0]), 0o600);
    let again = Proxlet::start_with_home(home.path(), &args).unwrap();
    assert!(
        again.log().contains("compiled code from cache"),
        "{}",
        again.log()
    );
}
