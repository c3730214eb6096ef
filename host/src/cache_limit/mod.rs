//! The cache dir's size limit (`max_size` in the built-in `cache` plugin's
//! config): a thread per limited dir keeps an index of its entries and,
//! when they pass the limit, removes the least recently used whole entries
//! down to 95 % of it, as Squid's `cache_dir` evicts to its low-water mark.
//!
//! Plugins have no threads, so the host does this. A cache hit tells it
//! with one atomic store (and nothing at all when no limit is set), a
//! completed store with one message; a periodic scan sees what people add,
//! change or delete by hand.

mod entries;
mod stamps;
mod worker;

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, LazyLock, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use serde_json::Value;

pub use entries::parse_size;

use crate::{
    plugin::{builtin, PluginSpec},
    proxy::grant::GrantedPath,
};

/// How often the whole dir is walked when the config does not say.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(60);
/// Eviction brings the total down to this share of `max_size` (per cent).
pub const LOW_WATER_PERCENT: u64 = 95;

/// What the `cache` plugin's config asks of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeLimit {
    /// The cache dir (host path, as granted to the plugin).
    pub dir: PathBuf,
    pub max_size: u64,
    /// Period of the walk that finds files changed by hand.
    pub rescan: Duration,
}

/// The size limit a plugin entry sets: only the built-in `cache` has one.
/// `Err` is a sentence for the config error (a bad `max_size` or `rescan`).
pub fn limit_of(spec: &PluginSpec) -> Result<Option<SizeLimit>, String> {
    if spec.builtin.is_none() || spec.path != Path::new("builtin:cache") {
        return Ok(None);
    }
    let name = &spec.name;
    let config: Value = serde_json::from_str(&spec.config_json).map_err(|e| e.to_string())?;
    let Some(max_size) = config.get("max_size") else {
        return match config.get("rescan") {
            Some(_) => Err(format!(
                "[[plugin]] \"{name}\": rescan applies only with max_size (add max_size = \"20G\" or remove rescan)"
            )),
            None => Ok(None),
        };
    };
    let max_size = match max_size {
        Value::String(text) => parse_size(text),
        Value::Number(n) => n.as_u64().filter(|&n| n > 0),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "[[plugin]] \"{name}\": max_size = {max_size} is not a size (expected e.g. \"500M\", \"20G\", \"1.5G\" or a number of bytes; K, M, G and T are powers of 1024)"
        )
    })?;
    let rescan = match config.get("rescan") {
        None => DEFAULT_RESCAN,
        Some(value) => value
            .as_str()
            .and_then(crate::config::parse_duration)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "[[plugin]] \"{name}\": rescan = {value} is not a duration (expected e.g. \"30s\", \"5m\" or \"500ms\")"
                )
            })?,
    };
    let guest = config
        .get("dir")
        .and_then(Value::as_str)
        .unwrap_or(builtin::CACHE_GUEST_DIR);
    let dir = spec
        .dirs
        .iter()
        .find(|(granted, _)| granted == guest)
        .map(|(_, host)| host.clone())
        .ok_or_else(|| {
            format!("[[plugin]] \"{name}\": max_size needs its dir {guest:?} granted (dirs = {{ {guest:?} = \"…\" }})")
        })?;
    Ok(Some(SizeLimit {
        dir,
        max_size,
        rescan,
    }))
}

/// Whether any dir is limited: the hot path's only cost when none is.
static LIMITED: AtomicBool = AtomicBool::new(false);
static LIMITERS: LazyLock<ArcSwap<Vec<Arc<Limiter>>>> = LazyLock::new(Default::default);
/// Serialises [`configure`] (start and config reloads).
static CONFIGURING: Mutex<()> = Mutex::new(());

/// Starts, updates or stops the eviction thread of each dir `plugins` limit.
/// Called at start and whenever the config is read again.
pub fn configure(plugins: &[PluginSpec]) {
    let mut wanted: Vec<SizeLimit> = Vec::new();
    for limit in plugins
        .iter()
        .filter_map(|spec| limit_of(spec).ok().flatten())
    {
        // Two entries on one dir: the smaller limit and the shorter rescan.
        match wanted.iter_mut().find(|w| w.dir == limit.dir) {
            Some(known) => {
                known.max_size = known.max_size.min(limit.max_size);
                known.rescan = known.rescan.min(limit.rescan);
            }
            None => wanted.push(limit),
        }
    }
    let _configuring = CONFIGURING.lock().unwrap_or_else(|e| e.into_inner());
    let running = LIMITERS.load_full();
    let mut next = Vec::new();
    for limit in wanted {
        match running.iter().find(|l| l.dir == limit.dir) {
            Some(limiter) => {
                limiter.update(&limit);
                next.push(limiter.clone());
            }
            None => match Limiter::start(limit) {
                Ok(limiter) => next.push(limiter),
                Err(e) => tracing::error!("cannot start the cache size limit: {e}"),
            },
        }
    }
    for gone in running
        .iter()
        .filter(|l| !next.iter().any(|n| n.dir == l.dir))
    {
        tracing::info!("cache {}: no max_size any more", gone.dir.display());
        let _ = gone.events.send(Event::Stop);
    }
    let limited = !next.is_empty();
    LIMITERS.store(Arc::new(next));
    LIMITED.store(limited, Ordering::Relaxed);
}

/// The hot path: the host is serving `file` (a cache hit when it lies in a
/// limited dir). No lock, no system call, no allocation.
pub fn served(file: &GrantedPath) {
    if !LIMITED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(limiter) = LIMITERS.load().iter().find(|l| l.owns(file.grant_dir())) {
        limiter.touch(file.rel().as_os_str().as_bytes());
    }
}

/// A store into a limited dir, reported when its file is in place.
pub struct Storing {
    limiter: Arc<Limiter>,
    body: Vec<u8>,
    sidecar: Option<(Vec<u8>, u64)>,
}

/// For a store starting at `dest` (with its sidecar and the sidecar's
/// length): what to report when the file is in place, if `dest` is in a
/// limited dir.
pub fn storing(dest: &GrantedPath, sidecar: Option<(&GrantedPath, usize)>) -> Option<Storing> {
    if !LIMITED.load(Ordering::Relaxed) {
        return None;
    }
    let root = dest.grant_dir();
    let limiter = LIMITERS.load().iter().find(|l| l.owns(root)).cloned()?;
    let sidecar = sidecar
        .filter(|(path, _)| path.grant_dir() == root)
        .map(|(path, len)| (path.rel().as_os_str().as_bytes().to_vec(), len as u64));
    Some(Storing {
        limiter,
        body: dest.rel().as_os_str().as_bytes().to_vec(),
        sidecar,
    })
}

impl Storing {
    /// The body (`bytes` long) was renamed into place and its sidecar written.
    pub fn done(self, bytes: u64) {
        let mut files = vec![(self.body, bytes)];
        files.extend(self.sidecar);
        let event = Event::Stored {
            files,
            at: now_ms(),
        };
        let _ = self.limiter.events.send(event);
    }
}

/// What the eviction thread hears of.
enum Event {
    /// Files (path relative to the dir, length) stored at `at` (ms).
    Stored {
        files: Vec<(Vec<u8>, u64)>,
        at: u64,
    },
    /// The limit or rescan period changed.
    Changed,
    Stop,
}

/// One limited dir: shared by the hot path and its eviction thread.
struct Limiter {
    dir: PathBuf,
    /// Hashes entry names into tags; keyed per process so that names
    /// chosen by clients cannot be made to collide.
    hasher: RandomState,
    stamps: ArcSwap<stamps::Stamps>,
    max_size: AtomicU64,
    rescan_ms: AtomicU64,
    events: mpsc::Sender<Event>,
}

impl Limiter {
    fn start(limit: SizeLimit) -> std::io::Result<Arc<Self>> {
        let (events, receiver) = mpsc::channel();
        let limiter = Arc::new(Self {
            dir: limit.dir.clone(),
            hasher: RandomState::new(),
            stamps: ArcSwap::from_pointee(stamps::Stamps::with_room_for(0)),
            max_size: AtomicU64::new(limit.max_size),
            rescan_ms: AtomicU64::new(limit.rescan.as_millis() as u64),
            events,
        });
        let shared = limiter.clone();
        std::thread::Builder::new()
            .name("proxlet-cache-limit".into())
            .spawn(move || worker::run(shared, receiver))?;
        Ok(limiter)
    }

    fn update(&self, limit: &SizeLimit) {
        let old = self.max_size.swap(limit.max_size, Ordering::Relaxed);
        self.rescan_ms
            .store(limit.rescan.as_millis() as u64, Ordering::Relaxed);
        if old != limit.max_size {
            tracing::info!(
                "cache {}: max_size now {}",
                self.dir.display(),
                entries::human(limit.max_size)
            );
        }
        let _ = self.events.send(Event::Changed);
    }

    fn owns(&self, root: &Path) -> bool {
        self.dir.as_os_str() == root.as_os_str()
    }

    fn tag(&self, rel: &[u8]) -> u64 {
        stamps::tag(self.hasher.hash_one(entries::entry_key(rel)))
    }

    fn touch(&self, rel: &[u8]) {
        self.stamps.load().touch(self.tag(rel), coarse_now_ms());
    }

    fn max_size(&self) -> u64 {
        self.max_size.load(Ordering::Relaxed)
    }

    fn rescan(&self) -> Duration {
        Duration::from_millis(self.rescan_ms.load(Ordering::Relaxed))
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`now_ms`] from the coarse clock, for the hot path: read in a few
/// nanoseconds (the precise one takes several times that), in ticks of a few
/// milliseconds, finer than least-recently-used order needs.
fn coarse_now_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes `now`.
    match unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } {
        0 => ms(now.tv_sec, now.tv_nsec),
        _ => now_ms(),
    }
}

/// Seconds and nanoseconds (whose types differ between targets) as ms
/// since the epoch; a time before it is 0.
fn ms(secs: impl TryInto<u64>, nanos: impl TryInto<u64>) -> u64 {
    let (secs, nanos) = (secs.try_into().unwrap_or(0), nanos.try_into().unwrap_or(0));
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_spec(config: &str) -> Result<Option<SizeLimit>, String> {
        let entry: crate::config::FileConfig =
            crate::config::FileConfig::parse(&format!("[[plugin]]\nname = \"cache\"\n{config}\n"))
                .unwrap();
        let spec = builtin::spec(
            "cache",
            entry.plugins.first(),
            Path::new("/etc/proxlet"),
            Path::new("/srv/cache"),
        )?;
        limit_of(&spec)
    }

    #[test]
    fn the_cache_config_sets_the_limit_of_its_granted_dir() {
        let limit = cache_spec("config = { max_size = \"1.5G\" }")
            .unwrap()
            .unwrap();
        assert_eq!(
            limit,
            SizeLimit {
                dir: "/srv/cache".into(),
                max_size: 3 << 29,
                rescan: DEFAULT_RESCAN,
            }
        );
        let limit = cache_spec("config = { max_size = 1000000, rescan = \"500ms\" }")
            .unwrap()
            .unwrap();
        assert_eq!(
            (limit.max_size, limit.rescan),
            (1_000_000, Duration::from_millis(500))
        );
        let limit = cache_spec(
            "dirs = { \"/big\" = \"big\" }\nconfig = { dir = \"/big\", max_size = \"20G\" }",
        )
        .unwrap()
        .unwrap();
        assert_eq!(limit.dir, Path::new("/etc/proxlet/big"));
        assert_eq!(cache_spec("config = { offline = true }"), Ok(None));
        assert_eq!(cache_spec(""), Ok(None));
    }

    #[test]
    fn bad_limits_are_config_errors_that_say_what_is_expected() {
        for (config, named) in [
            ("config = { max_size = \"20X\" }", "max_size = \"20X\""),
            ("config = { max_size = \"0\" }", "max_size = \"0\""),
            ("config = { max_size = -5 }", "max_size = -5"),
            ("config = { max_size = true }", "max_size = true"),
            (
                "config = { max_size = \"1G\", rescan = \"soon\" }",
                "rescan = \"soon\"",
            ),
            (
                "config = { rescan = \"1m\" }",
                "rescan applies only with max_size",
            ),
            (
                "config = { dir = \"/elsewhere\", max_size = \"1G\" }",
                "\"/elsewhere\" granted",
            ),
        ] {
            let error = cache_spec(config).expect_err(config);
            assert!(error.contains(named), "{config}: {error}");
            assert!(error.starts_with("[[plugin]] \"cache\""), "{error}");
        }
        let error = cache_spec("config = { max_size = \"20X\" }").unwrap_err();
        assert!(error.contains("\"20G\", \"1.5G\""), "{error}");
    }

    #[test]
    fn the_coarse_clock_tells_the_same_time() {
        let (coarse, precise) = (coarse_now_ms(), now_ms());
        assert!(precise.abs_diff(coarse) < 1000, "{coarse} {precise}");
        assert_eq!(ms(-1i64, 0u32), 0);
        assert_eq!(ms(2i64, 5_000_000u64), 2005);
    }

    #[test]
    fn other_plugins_have_no_limit() {
        let mut spec = PluginSpec::from_path("cache.wasm".into());
        spec.config_json = r#"{"max_size":"bad"}"#.into();
        assert_eq!(limit_of(&spec), Ok(None));
    }
}
