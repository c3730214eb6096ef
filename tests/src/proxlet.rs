//! Runs the real `proxlet` binary on `127.0.0.1:0` with a temporary home and
//! reads its `proxlet listening on` line; its log is kept for assertions.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::Duration,
};

pub struct Proxlet {
    pub addr: SocketAddr,
    pub home: PathBuf,
    child: Child,
    log: Arc<Mutex<String>>,
    _home_dir: Option<tempfile::TempDir>,
}

/// The `proxlet` binary of this workspace, built once per test process so
/// the tests always run the current code; `PROXLET_TEST_BINARY` names
/// another build instead (e.g. an older release, to see a test fail on it).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("PROXLET_TEST_BINARY") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<test> → target/<profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        // What cargo sets for this test process is not the environment
        // `cargo test` itself ran in: a build script that watches one of
        // these (ring watches CARGO_MANIFEST_DIR and OUT_DIR) would rebuild
        // ring, rustls and proxlet here, minutes while every test waits.
        without_env(&mut command, |key| {
            ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|p| key.starts_with(p))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "CARGO_BIN_NAME",
                    "OUT_DIR",
                ]
                .contains(&key)
        });
        let status = command
            // The same targets as `cargo test --workspace` (its tests bring
            // the dev-dependencies, whose features change shared crates),
            // so the libraries are reused; ./test.sh runs this very build
            // first, and then nothing is left to do here.
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
                "--tests",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("run cargo to build proxlet");
        assert!(status.success(), "building proxlet failed");
        profile_dir.join("proxlet")
    })
}

/// A `proxlet` command with a clean environment: no `PROXLET_*` or proxy
/// variables leak in from the machine running the tests.
/// `proxlet ARGS` run to completion: a command such as `flows` or `convert`.
pub fn run(args: &[&str]) -> std::process::Output {
    command().args(args).output().expect("proxlet runs")
}

pub fn command() -> Command {
    clean(Command::new(binary()))
}

fn clean(mut command: Command) -> Command {
    // AWS_*: the shared cache store's endpoint and credentials.
    without_env(&mut command, |key| {
        key.starts_with("PROXLET_")
            || key.starts_with("AWS_")
            || key.to_ascii_lowercase().ends_with("_proxy")
    });
    command.env("RUST_LOG", "info");
    command
}

/// Removes from `command` the variables of this process that `drop` names.
fn without_env(command: &mut Command, drop: impl Fn(&str) -> bool) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if drop(&key) {
            command.env_remove(&*key);
        }
    }
}

impl Proxlet {
    /// Starts proxlet with `args` and a fresh temporary home.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut proxlet = Self::start_with_home(dir.path(), args).unwrap_or_else(|e| panic!("{e}"));
        proxlet._home_dir = Some(dir);
        proxlet
    }

    /// Starts proxlet with `args` and `home`; on failure returns what it printed.
    /// Unless `args` choose plugins (`--plugin`, `--config`), none run; the
    /// cache dir of built-in plugins defaults to `<home>/proxlet-cache`.
    pub fn start_with_home(home: &Path, args: &[&str]) -> Result<Self, String> {
        Self::start_with_env(home, &[], args)
    }

    /// [`Proxlet::start_with_home`] with the variables `env` set, e.g. the
    /// shared cache store's `AWS_*`.
    pub fn start_with_env(
        home: &Path,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Result<Self, String> {
        let mut command = command();
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.env("PROXLET_CACHE_DIR", home.join("proxlet-cache"));
        if !args.iter().any(|a| *a == "--plugin" || *a == "--config") {
            command.arg("--plugin").arg("none");
        }
        Self::spawn(command, home, args)
    }

    /// Starts proxlet with `args` and `home` under `wrapper` (a command
    /// that runs the program it is given, e.g. `ip netns exec NS`).
    pub fn start_wrapped(wrapper: &[&str], home: &Path, args: &[&str]) -> Result<Self, String> {
        let mut command = clean(Command::new(wrapper[0]));
        command.args(&wrapper[1..]).arg(binary());
        command.env("PROXLET_CACHE_DIR", home.join("proxlet-cache"));
        if !args.iter().any(|a| *a == "--plugin" || *a == "--config") {
            command.arg("--plugin").arg("none");
        }
        Self::spawn(command, home, args)
    }

    /// Starts proxlet (no plugins) with its open-file limit lowered to
    /// `nofile` by `prlimit`, to run it out of file descriptors.
    pub fn start_with_open_file_limit(nofile: u32, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(binary());
        let mut command = clean(command);
        command.arg("--plugin").arg("none");
        let mut proxlet = Self::spawn(command, dir.path(), args).unwrap_or_else(|e| panic!("{e}"));
        proxlet._home_dir = Some(dir);
        proxlet
    }

    /// Starts proxlet in `dir` with only `--listen` and `--home` added: the
    /// defaults a user gets (the default plugin chain, `./proxlet-cache`).
    /// proxlet with `config` as its `proxlet.toml` in `dir`, its home in
    /// `dir/home` and its cache dir `dir/cache`, plus `args`.
    pub fn start_configured(dir: &Path, config: &str, args: &[&str]) -> Result<Self, String> {
        let file = dir.join("proxlet.toml");
        std::fs::write(&file, config).unwrap();
        let (file, cache) = (file.to_str().unwrap(), dir.join("cache"));
        let mut all = vec!["--config", file, "--cache-dir", cache.to_str().unwrap()];
        all.extend_from_slice(args);
        Self::start_with_home(&dir.join("home"), &all)
    }

    pub fn start_in(dir: &Path, args: &[&str]) -> Self {
        let home = dir.join("home");
        let mut command = command();
        command.current_dir(dir);
        Self::spawn(command, &home, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn(mut command: Command, home: &Path, args: &[&str]) -> Result<Self, String> {
        let mut child = command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--home")
            .arg(home)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxlet");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // The regular listener's line (other modes print theirs
                // with a suffix, or another scheme).
                if let Some(addr) = line.strip_prefix("proxlet listening on http://") {
                    if let Ok(addr) = addr.parse::<SocketAddr>() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Ok(Self {
                addr,
                home: home.to_owned(),
                child,
                log,
                _home_dir: None,
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "proxlet did not start ({status}):\n{}",
                    log.lock().unwrap()
                ))
            }
        }
    }

    /// `http://127.0.0.1:PORT`, for `curl -x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.home.join("ca.pem")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything proxlet logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, || self.log().contains(needle))
    }

    /// Peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit status.
    pub fn signal_and_wait(
        mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        let mut status = None;
        crate::wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Proxlet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
