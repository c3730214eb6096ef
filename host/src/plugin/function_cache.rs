//! Machine code of single functions, reused when a component is compiled
//! again with most of its functions unchanged: an edited Python or
//! JavaScript plugin carries the same interpreter and a new script.
//!
//! Cranelift looks each function up by a hash of its IR and the target
//! (`wasmtime::CacheStore`). Entries live in memory, and in pack files in a
//! `functions/` dir under the compiled-code cache when that dir is ours
//! alone; the packs are bounded in total size, the least recently used
//! dropped first.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    fs,
    io::Read,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::SystemTime,
};

use sha2::{Digest, Sha256};

/// The most bytes of function code kept, in memory and on disk.
pub const FUNCTION_CACHE_MAX: u64 = 256 << 20;

/// Start of every pack file; the version changes with the layout.
const MAGIC: &[u8; 16] = b"proxlet-fncode1\n";

/// The sub dir of the compiled-code cache holding the packs.
pub const FUNCTIONS_DIR: &str = "functions";

/// One entry: cranelift's key and the function's code.
type Keyed = (Box<[u8]>, Arc<[u8]>);

/// A file holding the entries one compile added.
struct Pack {
    /// `None` for entries kept in memory only (the cache dir is not ours).
    path: Option<PathBuf>,
    bytes: u64,
    last_used: SystemTime,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Box<[u8]>, Entry>,
    packs: HashMap<u64, Pack>,
    next_pack: u64,
    /// Keys inserted since the last `save`.
    fresh: Vec<Box<[u8]>>,
    /// Packs that served a lookup since the last `save`.
    used: HashSet<u64>,
    /// The packs on disk have been read.
    loaded: bool,
}

struct Entry {
    code: Arc<[u8]>,
    /// The pack holding it; `None` until saved.
    pack: Option<u64>,
}

/// The per-function cache handed to wasmtime, shared by all compiles of the
/// process.
pub struct FunctionCache {
    inner: Mutex<Inner>,
    /// Bytes of packs kept (default [`FUNCTION_CACHE_MAX`]).
    max: u64,
    /// Disk work (reading, writing, evicting packs) one at a time.
    disk: Mutex<()>,
    /// The WARN about an unsafe `functions/` dir or pack has been logged.
    warned: AtomicBool,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FunctionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCache").finish_non_exhaustive()
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let code = {
            let mut inner = self.lock();
            let Inner { entries, used, .. } = &mut *inner;
            let entry = entries.get(key);
            if let Some(pack) = entry.and_then(|e| e.pack) {
                used.insert(pack);
            }
            entry.map(|e| e.code.clone())
        };
        let counter = if code.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        code.map(|code| Cow::Owned(code.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut inner = self.lock();
        if !inner.entries.contains_key(key) {
            let key: Box<[u8]> = key.into();
            inner.fresh.push(key.clone());
            inner.entries.insert(
                key,
                Entry {
                    code: value.into(),
                    pack: None,
                },
            );
        }
        true
    }
}

/// Lookups of one compile: how many functions were reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    pub hits: u64,
    pub misses: u64,
}

impl Default for FunctionCache {
    fn default() -> Self {
        Self::with_max(FUNCTION_CACHE_MAX)
    }
}

impl FunctionCache {
    fn with_max(max: u64) -> Self {
        Self {
            inner: Mutex::default(),
            max,
            disk: Mutex::default(),
            warned: AtomicBool::new(false),
            hits: 0.into(),
            misses: 0.into(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lookup counts since the last call.
    pub fn take_reuse(&self) -> Reuse {
        Reuse {
            hits: self.hits.swap(0, Ordering::Relaxed),
            misses: self.misses.swap(0, Ordering::Relaxed),
        }
    }

    /// Entries held in memory: (count, bytes of code).
    pub fn held(&self) -> (usize, u64) {
        let inner = self.lock();
        let bytes = inner.entries.values().map(|e| e.code.len() as u64).sum();
        (inner.entries.len(), bytes)
    }

    /// Before a compile: reads the packs under `cache_dir` (once per
    /// process), if its `functions/` dir is ours alone. `cache_dir` is the
    /// compiled-code cache already found trusted, or `None`.
    pub fn load(&self, cache_dir: Option<&Path>) {
        if self.lock().loaded {
            return;
        }
        let Some(dir) = cache_dir.and_then(|d| self.trusted_dir(d)) else {
            return;
        };
        let _disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if self.lock().loaded {
            return;
        }
        let mut read = Vec::new();
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pack") {
                match self.read_pack(&path) {
                    Ok(Some(pack)) => read.push((path, pack)),
                    Ok(None) => {}
                    Err(why) => {
                        tracing::debug!("dropping function code pack {path:?}: {why}");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        let mut inner = self.lock();
        for (path, (entries, bytes, last_used)) in read {
            let id = inner.next_pack;
            inner.next_pack += 1;
            for (key, code) in entries {
                inner.entries.entry(key).or_insert(Entry {
                    code,
                    pack: Some(id),
                });
            }
            inner.packs.insert(
                id,
                Pack {
                    path: Some(path),
                    bytes,
                    last_used,
                },
            );
        }
        inner.loaded = true;
    }

    /// After a compile: writes the entries it added as one pack (or keeps
    /// them in memory only when the dir is not ours), marks the packs it
    /// reused as recently used, and drops the least recently used packs
    /// beyond the bound.
    pub fn save(&self, cache_dir: Option<&Path>) {
        let dir = cache_dir.and_then(|d| self.trusted_dir(d));
        let _disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        let (fresh, used) = {
            let mut inner = self.lock();
            let fresh: Vec<Keyed> = std::mem::take(&mut inner.fresh)
                .into_iter()
                .filter_map(|key| {
                    let code = inner.entries.get(&key)?.code.clone();
                    Some((key, code))
                })
                .collect();
            let used: Vec<(u64, Option<PathBuf>)> = std::mem::take(&mut inner.used)
                .into_iter()
                .filter_map(|id| {
                    let pack = inner.packs.get_mut(&id)?;
                    pack.last_used = now;
                    Some((id, pack.path.clone()))
                })
                .collect();
            (fresh, used)
        };
        for (_, path) in &used {
            // The mtime orders packs for eviction across restarts.
            if let Some(path) = path {
                let _ = fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(now));
            }
        }
        if !fresh.is_empty() {
            let pack = encode_pack(&fresh);
            let name = format!("{}.pack", super::engine::hex(&Sha256::digest(&pack)[..16]));
            let path = dir.map(|d| d.join(name)).filter(|path| {
                crate::proxy::files::write_atomically(path, &pack, 0o600)
                    .inspect_err(|e| tracing::debug!("cannot write function code {path:?}: {e}"))
                    .is_ok()
            });
            let mut inner = self.lock();
            let id = inner.next_pack;
            inner.next_pack += 1;
            for (key, _) in &fresh {
                if let Some(entry) = inner.entries.get_mut(key) {
                    entry.pack.get_or_insert(id);
                }
            }
            inner.packs.insert(
                id,
                Pack {
                    path,
                    bytes: pack.len() as u64,
                    last_used: now,
                },
            );
        }
        self.evict();
    }

    /// Drops the least recently used packs until the rest fit the bound.
    fn evict(&self) {
        let mut inner = self.lock();
        let mut total: u64 = inner.packs.values().map(|p| p.bytes).sum();
        if total <= self.max {
            return;
        }
        let mut order: Vec<(SystemTime, u64)> = inner
            .packs
            .iter()
            .map(|(id, p)| (p.last_used, *id))
            .collect();
        order.sort();
        let mut dropped = HashSet::new();
        // The most recently used pack stays, whatever its size.
        for (_, id) in order.iter().take(order.len().saturating_sub(1)) {
            if total <= self.max {
                break;
            }
            if let Some(pack) = inner.packs.remove(id) {
                total -= pack.bytes;
                if let Some(path) = &pack.path {
                    let _ = fs::remove_file(path);
                }
                dropped.insert(*id);
            }
        }
        inner
            .entries
            .retain(|_, e| e.pack.is_none_or(|p| !dropped.contains(&p)));
    }

    /// `cache_dir/functions`, created private if missing, if it is ours
    /// and no other user can write it; else WARN once and `None`.
    fn trusted_dir(&self, cache_dir: &Path) -> Option<PathBuf> {
        let dir = cache_dir.join(FUNCTIONS_DIR);
        let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
        let meta = fs::symlink_metadata(&dir).ok()?;
        if meta.is_dir() && super::engine::private_to_us(&meta) {
            return Some(dir);
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "not using the function code in {dir:?}: it has mode {:04o} and owner uid {}, so \
                 another user could plant code in it; functions are compiled instead \
                 (fix: remove {})",
                meta.mode() & 0o7777,
                meta.uid(),
                dir.display(),
            );
        }
        None
    }

    /// A pack's entries, its size and mtime; `Ok(None)` for a file we must
    /// not trust (WARN once), `Err` for one that is damaged.
    fn read_pack(&self, path: &Path) -> Result<Option<(Vec<Keyed>, u64, SystemTime)>, String> {
        let mut file = fs::File::open(path).map_err(|e| e.to_string())?;
        // Checked on the open file, so a swap after the check is not read.
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() || !super::engine::private_to_us(&meta) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "ignoring function code {path:?}: it has mode {:04o} and owner uid {}, so \
                     another user could have written it",
                    meta.mode() & 0o7777,
                    meta.uid(),
                );
            }
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let entries = decode_pack(&bytes).ok_or("damaged (bad layout or checksum)")?;
        let last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some((entries, bytes.len() as u64, last_used)))
    }
}

/// `MAGIC`, then per entry: key length (u16 LE), key, code length (u32 LE),
/// code; then the sha256 of all that. Cranelift trusts the code it is
/// handed (its only check is a version marker), so a pack damaged on disk
/// must not reach it: the checksum catches that. It does not stop a writer
/// who could recompute it; the dir and file owner and mode checks do.
fn encode_pack(entries: &[Keyed]) -> Vec<u8> {
    let size: usize = entries.iter().map(|(k, c)| 6 + k.len() + c.len()).sum();
    let mut pack = Vec::with_capacity(MAGIC.len() + size + 32);
    pack.extend_from_slice(MAGIC);
    for (key, code) in entries {
        // Cranelift's keys are 32 bytes and one function's code is far
        // below 4 GiB; anything else is skipped.
        let (Ok(key_len), Ok(code_len)) = (u16::try_from(key.len()), u32::try_from(code.len()))
        else {
            continue;
        };
        pack.extend_from_slice(&key_len.to_le_bytes());
        pack.extend_from_slice(key);
        pack.extend_from_slice(&code_len.to_le_bytes());
        pack.extend_from_slice(code);
    }
    let sum = Sha256::digest(&pack);
    pack.extend_from_slice(&sum);
    pack
}

fn decode_pack(pack: &[u8]) -> Option<Vec<Keyed>> {
    let body_len = pack.len().checked_sub(32)?;
    let (body, sum) = pack.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut rest = body.strip_prefix(MAGIC.as_slice())?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let (key, tail) = tail.split_at_checked(u16::from_le_bytes(*len) as usize)?;
        let (len, tail) = tail.split_first_chunk::<4>()?;
        let (code, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        entries.push((key.into(), code.into()));
        rest = tail;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use wasmtime::CacheStore;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn packs(dir: &Path) -> Vec<PathBuf> {
        let mut packs: Vec<_> = fs::read_dir(dir.join(FUNCTIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        packs.sort();
        packs
    }

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        dir
    }

    #[test]
    fn entries_saved_by_one_process_serve_the_next() {
        let dir = private_dir();
        let first = FunctionCache::default();
        first.load(Some(dir.path()));
        assert!(first.get(b"key").is_none());
        first.insert(b"key", b"code".to_vec());
        first.save(Some(dir.path()));
        assert_eq!(packs(dir.path()).len(), 1);
        let pack = &packs(dir.path())[0];
        assert_eq!(fs::metadata(pack).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(dir.path().join(FUNCTIONS_DIR)).unwrap().mode() & 0o777,
            0o700
        );

        let second = FunctionCache::default();
        second.load(Some(dir.path()));
        assert_eq!(second.get(b"key").as_deref(), Some(&b"code"[..]));
        assert_eq!(second.take_reuse(), Reuse { hits: 1, misses: 0 });
        // Nothing new: no second pack.
        second.save(Some(dir.path()));
        assert_eq!(packs(dir.path()).len(), 1);
    }

    #[test]
    fn a_damaged_pack_is_dropped_not_handed_to_the_compiler() {
        let dir = private_dir();
        let first = FunctionCache::default();
        first.insert(b"key", b"machine code".to_vec());
        first.save(Some(dir.path()));
        let pack = packs(dir.path()).remove(0);
        let mut bytes = fs::read(&pack).unwrap();
        let at = bytes.len() - 40;
        bytes[at] ^= 0x55;
        fs::write(&pack, &bytes).unwrap();

        let second = FunctionCache::default();
        second.load(Some(dir.path()));
        assert!(second.get(b"key").is_none());
        assert!(!pack.exists());
    }

    #[test]
    fn packs_others_could_write_are_not_read_and_then_not_written() {
        let dir = private_dir();
        let first = FunctionCache::default();
        first.insert(b"key", b"code".to_vec());
        first.save(Some(dir.path()));
        let pack = packs(dir.path()).remove(0);
        chmod(&pack, 0o666);
        let second = FunctionCache::default();
        second.load(Some(dir.path()));
        assert!(second.get(b"key").is_none());

        // A functions/ dir others can write: neither read nor written, but
        // entries still serve this process from memory.
        chmod(&pack, 0o600);
        chmod(&dir.path().join(FUNCTIONS_DIR), 0o777);
        let third = FunctionCache::default();
        third.load(Some(dir.path()));
        assert!(third.get(b"key").is_none());
        third.insert(b"other", b"code".to_vec());
        third.save(Some(dir.path()));
        assert_eq!(packs(dir.path()), vec![pack]);
        assert_eq!(third.get(b"other").as_deref(), Some(&b"code"[..]));
    }

    #[test]
    fn least_recently_used_packs_go_first_beyond_the_bound() {
        let dir = private_dir();
        let max = 4000;
        let cache = FunctionCache::with_max(max);
        let big = vec![7u8; 1000];
        cache.insert(b"a", big.clone());
        cache.save(Some(dir.path()));
        cache.insert(b"b", big.clone());
        cache.save(Some(dir.path()));
        // "a" is reused, so "b" is now the least recently used.
        assert!(cache.get(b"a").is_some());
        cache.insert(b"c", big.clone());
        cache.save(Some(dir.path()));
        cache.insert(b"d", big);
        cache.save(Some(dir.path()));
        assert_eq!(packs(dir.path()).len(), 3);
        assert!(cache.get(b"b").is_none());
        for key in [&b"a"[..], b"c", b"d"] {
            assert!(cache.get(key).is_some());
        }
        let (count, bytes) = cache.held();
        assert_eq!(count, 3);
        assert!(bytes <= max);
    }

    #[test]
    fn pack_layout_round_trips_and_rejects_truncation() {
        let entries: Vec<Keyed> = vec![
            ((*b"k1").into(), (*b"").into()),
            ((*b"key two").into(), (*b"code").into()),
        ];
        let pack = encode_pack(&entries);
        let back = decode_pack(&pack).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&*back[1].0, b"key two");
        assert_eq!(&*back[1].1, b"code");
        assert!(decode_pack(&pack[..pack.len() - 1]).is_none());
        assert!(decode_pack(&pack[..10]).is_none());
    }
}
