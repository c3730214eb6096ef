//! The eviction thread of one limited dir: walks the tree (at start and
//! every `rescan`), hears of completed stores, and when the entries pass
//! `max_size` removes the least recently used ones, whole, down to the
//! low-water mark. Everything it opens or removes is resolved beneath the
//! dir's descriptor without following a symlink (as plugin file actions
//! are, see `proxy::grant`): a link in the tree is an entry's file (an
//! error link), never a way out of it.

use std::{
    collections::HashMap,
    ffi::OsStr,
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::Path,
    sync::{mpsc, Arc},
    time::Instant,
};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{
    entries::{self, counted, human},
    ms, now_ms,
    stamps::Stamps,
    Event, Limiter, LOW_WATER_PERCENT,
};
use crate::proxy::grant::open_beneath;

/// The files of one entry and what they count for.
#[derive(Debug, Default)]
struct Entry {
    /// Path relative to the dir, counted size.
    files: Vec<(Box<[u8]>, u64)>,
    size: u64,
    /// Last use known from the files' times or a store (ms).
    seen: u64,
}

impl Entry {
    /// Sets the counted size of `rel`; returns the change of the entry's size.
    fn put(&mut self, rel: &[u8], size: u64) -> i128 {
        let before = self.size;
        match self.files.iter_mut().find(|(known, _)| &**known == rel) {
            Some((_, known)) => *known = size,
            None => self.files.push((rel.into(), size)),
        }
        self.size = self.files.iter().map(|(_, size)| size).sum();
        i128::from(self.size) - i128::from(before)
    }
}

/// The index of one dir, owned by its thread.
struct Worker {
    limiter: Arc<Limiter>,
    /// By tag (a hash of the entry's name).
    entries: HashMap<u64, Entry>,
    total: u64,
    /// Tags the current stamp table holds.
    tagged: usize,
    scanned: bool,
}

/// The thread's body: runs until told to stop.
pub(super) fn run(limiter: Arc<Limiter>, events: mpsc::Receiver<Event>) {
    let mut worker = Worker {
        limiter,
        entries: HashMap::new(),
        total: 0,
        tagged: 0,
        scanned: false,
    };
    worker.rescan();
    let mut next_scan = Instant::now() + worker.limiter.rescan();
    loop {
        let wait = next_scan.saturating_duration_since(Instant::now());
        let mut event = match events.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if event.is_none() {
            worker.rescan();
            next_scan = Instant::now() + worker.limiter.rescan();
        }
        // Everything queued, then one eviction round for all of it.
        while let Some(next) = event {
            match next {
                Event::Stop => return,
                Event::Changed => {
                    next_scan = next_scan.min(Instant::now() + worker.limiter.rescan())
                }
                Event::Stored { files, at } => worker.stored(&files, at),
            }
            event = events.try_recv().ok();
        }
        worker.evict();
    }
}

impl Worker {
    fn dir(&self) -> &Path {
        &self.limiter.dir
    }

    /// The dir's descriptor. The dir itself may be a link (a cache on another
    /// disk): it is the user's configuration, followed as grants are.
    fn open_root(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            self.dir(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    fn stored(&mut self, files: &[(Vec<u8>, u64)], at: u64) {
        for (rel, len) in files {
            let tag = self.limiter.tag(rel);
            let entry = self.entries.entry(tag).or_default();
            entry.seen = entry.seen.max(at);
            let change = entry.put(rel, counted(*len, false));
            self.total = (i128::from(self.total) + change).max(0) as u64;
            let stamps = self.limiter.stamps.load();
            match stamps.set(tag, at) {
                Some(true) => self.tagged += 1,
                Some(false) => {}
                None => self.tagged = usize::MAX,
            }
            if self.tagged > stamps.room() {
                drop(stamps);
                self.new_stamps();
            }
        }
    }

    /// Walks the dir and replaces the index with what is there; last uses
    /// known in memory are kept, the others come from the files' times.
    fn rescan(&mut self) {
        let started = Instant::now();
        let root = match self.open_root() {
            Ok(root) => root,
            Err(e) => {
                // Not made yet (nothing stored so far), or unreadable.
                tracing::debug!("cache {}: not scanned: {e}", self.dir().display());
                self.entries.clear();
                self.total = 0;
                return;
            }
        };
        let mut entries: HashMap<u64, Entry> = HashMap::new();
        let mut files = 0usize;
        walk(&root, |rel, stat| {
            let symlink = FileType::from_raw_mode(stat.st_mode) == FileType::Symlink;
            let entry = entries.entry(self.limiter.tag(rel)).or_default();
            entry.put(
                rel,
                counted(u64::try_from(stat.st_size).unwrap_or(0), symlink),
            );
            entry.seen = entry.seen.max(last_use(stat));
            files += 1;
        });
        self.total = entries.values().map(|e| e.size).sum();
        self.entries = entries;
        self.new_stamps();
        let first = !std::mem::replace(&mut self.scanned, true);
        let max = self.limiter.max_size();
        let summary = format!(
            "cache {}: {} in {} entries ({files} files), max_size {}; scanned in {:?}",
            self.dir().display(),
            human(self.total),
            self.entries.len(),
            human(max),
            started.elapsed()
        );
        if first {
            tracing::info!("{summary}");
        } else {
            tracing::debug!("{summary}");
        }
    }

    /// A stamp table for the index as it is, keeping the last uses the old
    /// one saw, then again for hits that reached the old one meanwhile.
    fn new_stamps(&mut self) {
        let old = self.limiter.stamps.load_full();
        let new = Stamps::with_room_for(self.entries.len());
        for (&tag, entry) in &self.entries {
            let stamp = old.get(tag).unwrap_or(0).max(entry.seen);
            new.set(tag, stamp);
        }
        let new = Arc::new(new);
        self.limiter.stamps.store(new.clone());
        for &tag in self.entries.keys() {
            if let Some(stamp) = old.get(tag) {
                new.touch(tag, stamp);
            }
        }
        self.tagged = self.entries.len();
    }

    /// One eviction round: least recently used entries first, until the
    /// total is at the low-water mark.
    fn evict(&mut self) {
        let max = self.limiter.max_size();
        if self.total <= max {
            return;
        }
        let low = max / 100 * LOW_WATER_PERCENT + max % 100 * LOW_WATER_PERCENT / 100;
        let root = match self.open_root() {
            Ok(root) => root,
            Err(e) => {
                tracing::warn!(
                    "cache {}: over max_size but cannot open it: {e}",
                    self.dir().display()
                );
                return;
            }
        };
        let stamps = self.limiter.stamps.load_full();
        let mut order: Vec<(u64, u64)> = self
            .entries
            .iter()
            .map(|(&tag, entry)| (stamps.get(tag).unwrap_or(0).max(entry.seen), tag))
            .collect();
        order.sort_unstable();
        let (before, now) = (self.total, now_ms());
        let mut evicted = 0;
        for (stamp, tag) in order {
            if self.total <= low {
                break;
            }
            // Used since the order was taken: it is not the least recent now.
            if stamps.get(tag).is_some_and(|s| s > stamp) {
                continue;
            }
            let Some(entry) = self.entries.get(&tag) else {
                continue;
            };
            if remove_entry(&root, self.dir(), entry, stamp, now) {
                let size = entry.size;
                self.entries.remove(&tag);
                self.total = self.total.saturating_sub(size);
                evicted += 1;
            }
        }
        let summary = format!(
            "cache {}: over max_size {}: evicted the {evicted} least recently used {}, {} freed, {} now",
            self.dir().display(),
            human(max),
            if evicted == 1 { "entry" } else { "entries" },
            human(before - self.total),
            human(self.total)
        );
        if evicted > 0 {
            tracing::info!("{summary}");
        } else {
            tracing::debug!("{summary}");
        }
    }
}

/// When a file was last used as far as its times tell (ms): its access time
/// (with `relatime`, updated about once a day at most) or, when later, its
/// modification time.
fn last_use(stat: &rustix::fs::Stat) -> u64 {
    ms(stat.st_atime, stat.st_atime_nsec).max(last_modified(stat))
}

/// A file's modification time (ms).
fn last_modified(stat: &rustix::fs::Stat) -> u64 {
    ms(stat.st_mtime, stat.st_mtime_nsec)
}

/// Calls `found` with the path (relative to `root`) and `lstat` of every
/// regular file and symlink beneath `root`, entering real directories only.
/// Stores in progress (temp files) are skipped. A directory replaced by a
/// link while the walk goes is not entered (`RESOLVE_NO_SYMLINKS`).
fn walk(root: &OwnedFd, mut found: impl FnMut(&[u8], &rustix::fs::Stat)) {
    let mut pending: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir_rel) = pending.pop() {
        let fd = if dir_rel.is_empty() {
            rustix::fs::openat(root, ".", dir_flags() | OFlags::CLOEXEC, Mode::empty())
        } else {
            open_beneath(root, Path::new(OsStr::from_bytes(&dir_rel)), dir_flags())
        };
        // Gone since it was listed, or a link now: not entered.
        let Ok(fd) = fd else { continue };
        let Ok(mut dir) = rustix::fs::Dir::read_from(&fd) else {
            continue;
        };
        while let Some(Ok(item)) = dir.read() {
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." || entries::in_progress(name) {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&fd, item.file_name(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let mut rel = dir_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name);
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => pending.push(rel),
                FileType::RegularFile | FileType::Symlink => found(&rel, &stat),
                _ => {}
            }
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY
}

/// The directory holding `rel` (opened beneath `root`) and `rel`'s name.
fn parent_of<'a>(root: &OwnedFd, rel: &'a [u8]) -> std::io::Result<(OwnedFd, &'a OsStr)> {
    let path = Path::new(OsStr::from_bytes(rel));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => open_beneath(root, parent, dir_flags())?,
        _ => rustix::fs::openat(root, ".", dir_flags() | OFlags::CLOEXEC, Mode::empty())?,
    };
    Ok((parent, name))
}

/// Removes the files of `entry` (bodies first, metadata last) and the
/// directories this leaves empty. Nothing is removed when a file changed
/// after `stamp` (stored again since the index saw it). A file being sent
/// to a client stays readable through the descriptor the client's flow
/// holds; its room returns when that flow ends.
fn remove_entry(root: &OwnedFd, dir: &Path, entry: &Entry, stamp: u64, now: u64) -> bool {
    let changed = entry.files.iter().any(|(rel, _)| {
        parent_of(root, rel)
            .and_then(|(parent, name)| {
                Ok(rustix::fs::statat(
                    &parent,
                    name,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?)
            })
            .is_ok_and(|stat| last_modified(&stat) > stamp)
    });
    if changed {
        return false;
    }
    let mut files: Vec<&(Box<[u8]>, u64)> = entry.files.iter().collect();
    files.sort_by_key(|(rel, _)| entries::is_metadata(rel));
    for (rel, size) in files {
        let path = dir.join(OsStr::from_bytes(rel));
        let removed = parent_of(root, rel)
            .and_then(|(parent, name)| Ok(rustix::fs::unlinkat(&parent, name, AtFlags::empty())?));
        match removed {
            Ok(()) => tracing::debug!(
                "evicted {} ({}, last used {}s ago)",
                path.display(),
                human(*size),
                now.saturating_sub(stamp) / 1000
            ),
            // Gone already, or moved since the last scan (`NAME` became a
            // directory holding `NAME/#file`): the next scan sees it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) => {}
            Err(e) => tracing::warn!("cannot evict {}: {e}", path.display()),
        }
        remove_empty_parents(root, rel);
    }
    true
}

/// Removes the directories above `rel` that are empty, deepest first, up
/// to (not including) the cache dir itself.
fn remove_empty_parents(root: &OwnedFd, rel: &[u8]) {
    let mut dir = Path::new(OsStr::from_bytes(rel)).parent();
    while let Some(path) = dir.filter(|p| !p.as_os_str().is_empty()) {
        let removed = parent_of(root, path.as_os_str().as_bytes()).and_then(|(parent, name)| {
            Ok(rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)?)
        });
        if removed.is_err() {
            return;
        }
        dir = path.parent();
    }
}

/// For tests: the index a scan of `dir` makes, as (path, counted size).
#[cfg(test)]
fn scan(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let root = rustix::fs::open(dir, dir_flags(), Mode::empty()).unwrap();
    let mut found = Vec::new();
    walk(&root, |rel, stat| {
        let symlink = FileType::from_raw_mode(stat.st_mode) == FileType::Symlink;
        found.push((
            OsStr::from_bytes(rel).into(),
            counted(u64::try_from(stat.st_size).unwrap_or(0), symlink),
        ));
    });
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_limit::SizeLimit;
    use std::{os::unix::fs::symlink, path::PathBuf, time::Duration};

    fn write(root: &Path, rel: &str, len: usize) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![b'x'; len]).unwrap();
    }

    fn worker(dir: &Path, max_size: u64) -> Worker {
        let (events, _) = mpsc::channel();
        let limit = SizeLimit {
            dir: dir.to_owned(),
            max_size,
            rescan: Duration::from_secs(60),
        };
        let limiter = Arc::new(Limiter {
            dir: limit.dir,
            hasher: Default::default(),
            stamps: arc_swap::ArcSwap::from_pointee(Stamps::with_room_for(0)),
            max_size: max_size.into(),
            rescan_ms: 60_000.into(),
            events,
        });
        Worker {
            limiter,
            entries: HashMap::new(),
            total: 0,
            tagged: 0,
            scanned: false,
        }
    }

    #[test]
    fn the_scan_counts_files_and_links_and_never_leaves_the_dir() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "big", 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "h/a", 10);
        write(root, ".proxlet-meta/h/a#meta.json", 300);
        write(root, "h/.b.proxlet-1-2.tmp", 5000);
        symlink("404", root.join("h/gone")).unwrap();
        symlink(outside.path(), root.join("h/out")).unwrap();
        symlink(outside.path().join("big"), root.join("h/big")).unwrap();
        let found = scan(root);
        let out_target = outside.path().as_os_str().len() as u64;
        let big_target = out_target + 4;
        assert_eq!(
            found,
            [
                (PathBuf::from(".proxlet-meta/h/a#meta.json"), 4096),
                ("h/a".into(), 4096),
                ("h/big".into(), big_target),
                ("h/gone".into(), 3),
                ("h/out".into(), out_target),
            ]
        );
    }

    #[test]
    fn least_recently_used_entries_go_whole_down_to_the_low_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Four entries of 10 blocks each, the second with a variant, an
        // error link and metadata.
        for name in ["a", "b", "c", "d"] {
            write(root, &format!("h/{name}/x"), 10 * 4096);
        }
        write(root, ".proxlet-meta/h/b/x#meta.json", 100);
        write(root, "h/b/x#json", 4096);
        std::fs::remove_file(root.join("h/b/x")).unwrap();
        symlink("404", root.join("h/b/x")).unwrap();
        write(root, "h/.e.proxlet-9-9.tmp", 100 * 4096);
        write(root, "keep/deep/dir/y", 4096);
        let mut worker = worker(root, 31 * 4096);
        worker.rescan();
        assert_eq!(worker.entries.len(), 5, "{:?}", worker.entries);
        assert_eq!(worker.total, (3 * 10 + 1 + 1 + 1) * 4096 + 3);
        // Oldest first: b, then a; c and d used since.
        let stamps = worker.limiter.stamps.load_full();
        let at = now_ms() + 10_000;
        for (rel, when) in [
            ("h/b/x", at),
            ("h/a/x", at + 1),
            ("keep/deep/dir/y", at + 2),
        ] {
            stamps.touch(worker.limiter.tag(rel.as_bytes()), when);
        }
        for rel in ["h/c/x", "h/d/x"] {
            stamps.touch(worker.limiter.tag(rel.as_bytes()), at + 3);
        }
        worker.evict();
        // b (a variant, an error link, metadata), then a went: 21 blocks
        // left, under 95 % of 31.
        assert_eq!(worker.total, 21 * 4096);
        for gone in ["h/a", "h/b", ".proxlet-meta"] {
            assert!(
                std::fs::symlink_metadata(root.join(gone)).is_err(),
                "{gone} and the directories it left empty are removed"
            );
        }
        for kept in ["h/c/x", "h/d/x", "keep/deep/dir/y", "h/.e.proxlet-9-9.tmp"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        assert!(root.exists());
    }

    #[test]
    fn a_file_stored_again_since_the_scan_is_not_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "h/a", 8192);
        let mut worker = worker(root, 4096);
        worker.rescan();
        let tag = worker.limiter.tag(b"h/a");
        let entry = &worker.entries[&tag];
        let root_fd = worker.open_root().unwrap();
        assert!(!remove_entry(&root_fd, root, entry, 0, now_ms()));
        assert!(root.join("h/a").exists());
        assert!(remove_entry(&root_fd, root, entry, u64::MAX, now_ms()));
        assert!(!root.join("h").exists());
    }
}
