//! Files a plugin names, opened beneath the directory it was granted. Every
//! host-side open, mkdir, create and rename on a plugin's behalf resolves its
//! path relative to the grant's directory descriptor with no symlink in any
//! component (Linux `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! or a component-by-component `O_NOFOLLOW` walk where openat2 is missing).
//!
//! Why no symlinks at all: through WASI a guest can create *relative* links
//! such as `/data/x -> ../../../etc/passwd`, and whatever lies in a cache dir
//! is untrusted. The host serves the file it opened (no check-then-open race)
//! and never follows a link, inside the grant or out; plugins that keep
//! links as data (error-links) read them through WASI themselves.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Component, Path, PathBuf},
    sync::{Arc, LazyLock, RwLock},
};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// Grant directories by host path, opened once (and again at each store).
/// Bounded by the dirs the configuration ever named.
static ROOTS: LazyLock<RwLock<HashMap<PathBuf, Arc<OwnedFd>>>> = LazyLock::new(Default::default);

/// A guest path mapped into one of the plugin's grants: the grant's host
/// directory and the path beneath it (only normal components, never empty).
#[derive(Debug, Clone)]
pub struct GrantedPath {
    root: PathBuf,
    rel: PathBuf,
}

/// What a file is and its state: device, inode, type, size, modification
/// and change times. Any write, rename, replacement or `touch` changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Signature {
    /// The signature of an opened file.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Why a file action on a plugin's behalf did not happen.
#[derive(Debug)]
pub enum GrantError {
    /// The path crosses a symlink or would leave the grant: refused.
    Refused(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for GrantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantError::Refused(path) => write!(
                f,
                "refused {}: it crosses a symlink or leaves the granted directory",
                path.display()
            ),
            GrantError::Io(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl GrantError {
    pub fn is_refusal(&self) -> bool {
        matches!(self, GrantError::Refused(_))
    }
}

impl GrantedPath {
    /// Maps `guest` under the plugin's granted dirs (`(guest, host)` pairs;
    /// the longest guest prefix wins). Relative paths, `..`, NUL and the
    /// grant's root itself are refused.
    pub fn locate(dirs: &[(String, PathBuf)], guest: &str) -> Option<Self> {
        if guest.contains('\0') {
            return None;
        }
        let path = Path::new(guest);
        if !path.is_absolute() {
            return None;
        }
        let (_, root, rest) = dirs
            .iter()
            .filter_map(|(guest_dir, host_dir)| {
                let rest = path.strip_prefix(guest_dir).ok()?;
                Some((guest_dir.len(), host_dir, rest))
            })
            .max_by_key(|(len, _, _)| *len)?;
        let mut rel = PathBuf::new();
        for component in rest.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                _ => return None,
            }
        }
        if rel.as_os_str().is_empty() {
            return None;
        }
        Some(Self {
            root: root.clone(),
            rel,
        })
    }

    /// `rel` beneath the host directory `root`, for files proxlet itself
    /// puts in a grant (the shared cache store's): only normal components,
    /// no NUL, never empty or absolute.
    pub fn beneath(root: &Path, rel: &str) -> Option<Self> {
        let path = Path::new(rel);
        let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
        (!rel.is_empty() && !rel.contains('\0') && normal).then(|| Self {
            root: root.to_owned(),
            rel: path.to_owned(),
        })
    }

    /// The grant's host directory.
    pub fn grant_dir(&self) -> &Path {
        &self.root
    }

    /// The path beneath the grant's directory.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The host path, for messages and content types only: never opened by name.
    pub fn display(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// The signature of what the path names now (`None`: nothing), found
    /// beneath the grant without following a final symlink; `Err` when it
    /// cannot be told.
    // `stat` field types differ between targets: the casts are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    pub fn signature(&self) -> Result<Option<Signature>, ()> {
        let root = self.root().map_err(|_| ())?;
        match rustix::fs::statat(&*root, &self.rel, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Signature {
                dev: stat.st_dev as u64,
                ino: stat.st_ino as u64,
                size: stat.st_size as u64,
                mode: stat.st_mode as u32,
                mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
                ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
            })),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Whether anything (a file, a directory, a link) is at the path or a
    /// link lies on the way to it; only a plain "no such file" is free.
    pub fn occupied(&self) -> bool {
        let root = match self.root() {
            Ok(root) => root,
            Err(GrantError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => return false,
            Err(_) => return true,
        };
        !matches!(
            open_beneath(&root, &self.rel, OFlags::PATH),
            Err(rustix::io::Errno::NOENT)
        )
    }

    fn error(&self, e: rustix::io::Errno) -> GrantError {
        // ELOOP: a symlink on the way (RESOLVE_NO_SYMLINKS, O_NOFOLLOW);
        // EXDEV: the resolution would leave the grant (RESOLVE_BENEATH).
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::XDEV {
            GrantError::Refused(self.display())
        } else {
            GrantError::Io(self.display(), e.into())
        }
    }

    /// Opens the grant's directory by path and keeps the descriptor for
    /// reads. The grant's own path is the user's configuration and may be a
    /// link (a cache dir on another disk): it is followed, nothing below it is.
    fn open_root(&self) -> Result<Arc<OwnedFd>, GrantError> {
        let fd = rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| GrantError::Io(self.root.clone(), e.into()))?;
        let fd = Arc::new(fd);
        ROOTS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.root.clone(), fd.clone());
        Ok(fd)
    }

    /// The grant's directory as last opened: a read (a cache hit) costs no
    /// extra open. Writes reopen it, so a grant dir deleted and made again
    /// is picked up at the next store.
    fn root(&self) -> Result<Arc<OwnedFd>, GrantError> {
        let known = ROOTS
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.root)
            .cloned();
        match known {
            Some(fd) => Ok(fd),
            None => self.open_root(),
        }
    }

    /// Opens the file for reading; a symlink anywhere on the way is refused.
    pub fn open_read(&self) -> Result<std::fs::File, GrantError> {
        let root = self.root()?;
        let fd = open_beneath(&root, &self.rel, OFlags::RDONLY).map_err(|e| self.error(e))?;
        Ok(std::fs::File::from(fd))
    }

    /// Creates the missing directories above the path (each opened with
    /// `O_NOFOLLOW`, so a planted link is never entered) and returns the
    /// parent directory's descriptor and the file name.
    pub fn create_parent(&self) -> Result<(OwnedFd, OsString), GrantError> {
        let root = self.open_root()?;
        let name = self
            .rel
            .file_name()
            .map(OsStr::to_owned)
            .ok_or_else(|| GrantError::Refused(self.display()))?;
        let mut dir = root
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| GrantError::Io(self.root.clone(), e))?;
        if let Some(parent) = self.rel.parent() {
            for part in parent.components() {
                match rustix::fs::mkdirat(&dir, part.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(self.error(e)),
                }
                dir = rustix::fs::openat(
                    &dir,
                    part.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                // O_DIRECTORY | O_NOFOLLOW on a link fails with ENOTDIR or
                // ELOOP: either way it is a link where a directory must be.
                .map_err(|e| match e {
                    rustix::io::Errno::NOTDIR if is_symlink(&dir, part.as_os_str()) => {
                        GrantError::Refused(self.display())
                    }
                    e => self.error(e),
                })?;
            }
        }
        Ok((dir, name))
    }

    /// Writes `contents` to a temp file beside the path and renames it over
    /// the path, all beneath the grant. `private` files are 0600, others 0644.
    pub fn write_atomically(&self, contents: &[u8], private: bool) -> Result<(), GrantError> {
        use std::io::Write;
        let (dir, name) = self.create_parent()?;
        let temp = temp_name(&name);
        let mut file = create_new(&dir, &temp, private).map_err(|e| self.error(e))?;
        let written = file
            .write_all(contents)
            .map_err(|e| GrantError::Io(self.display(), e))
            .and_then(|()| {
                rustix::fs::renameat(&dir, &temp, &dir, &name).map_err(|e| self.error(e))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &temp, AtFlags::empty());
        }
        written
    }
}

fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    })
}

/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it
/// (Linux 5.6+), else the same rule walked one component at a time.
pub(crate) fn open_beneath(
    root: &OwnedFd,
    rel: &Path,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
        Err(rustix::io::Errno::NOSYS) => {}
        other => return other,
    }
    let mut dir: Option<OwnedFd> = None;
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        let at = dir.as_ref().map_or(root.as_fd(), AsFd::as_fd);
        if parts.peek().is_none() {
            return rustix::fs::openat(at, part.as_os_str(), flags, Mode::empty());
        }
        let next = rustix::fs::openat(
            at,
            part.as_os_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        dir = Some(next);
    }
    Err(rustix::io::Errno::INVAL)
}

/// Creates `name` in `dir`, failing if anything (a link included) is there.
pub(crate) fn create_new(
    dir: &OwnedFd,
    name: &OsStr,
    private: bool,
) -> rustix::io::Result<std::fs::File> {
    let mode = if private { 0o600 } else { 0o644 };
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map(std::fs::File::from)
}

/// A hidden temp name beside `name`, unique in this process, so renaming it
/// over `name` is atomic and never races another writer.
pub(crate) fn temp_name(name: &OsStr) -> OsString {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".proxlet-{}-{n}.tmp", std::process::id()));
    temp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> Vec<(String, PathBuf)> {
        vec![("/data".to_owned(), root.to_owned())]
    }

    #[test]
    fn guest_paths_map_under_granted_dirs_only() {
        let dirs = vec![
            ("/cache".to_owned(), PathBuf::from("/srv/c")),
            ("/cache/deep".to_owned(), PathBuf::from("/srv/d")),
        ];
        let at = |p: &str| GrantedPath::locate(&dirs, p).map(|g| g.display());
        assert_eq!(at("/cache/a/b"), Some(PathBuf::from("/srv/c/a/b")));
        assert_eq!(at("/cache/deep/x"), Some(PathBuf::from("/srv/d/x")));
        assert_eq!(at("/cache/../etc/passwd"), None);
        assert_eq!(at("/etc/passwd"), None);
        assert_eq!(at("cache/a"), None);
        assert_eq!(at("/cache/a\0b"), None);
        assert_eq!(at("/cachex/a"), None);
        assert_eq!(at("/cache"), None);
        assert_eq!(at("/cache/"), None);
    }

    #[test]
    fn links_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let grant = tempfile::tempdir().unwrap();
        let root = grant.path();
        std::fs::write(root.join("plain"), b"plain").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../tmp", root.join("up")).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("inside")).unwrap();
        std::fs::write(root.join("real/f"), b"f").unwrap();
        let dirs = dirs(root);
        let open = |p: &str| GrantedPath::locate(&dirs, p).unwrap().open_read();

        assert!(open("/data/plain").is_ok());
        assert!(open("/data/real/f").is_ok());
        for refused in ["/data/abs", "/data/up/x", "/data/inside/f"] {
            let err = open(refused).expect_err(refused);
            assert!(err.is_refusal(), "{refused}: {err}");
        }
        let store = |p: &str| {
            GrantedPath::locate(&dirs, p)
                .unwrap()
                .write_atomically(b"x", false)
        };
        assert!(store("/data/new/dir/file").is_ok());
        assert_eq!(std::fs::read(root.join("new/dir/file")).unwrap(), b"x");
        let err = store("/data/up/planted").expect_err("store through a link");
        assert!(err.is_refusal(), "{err}");
        assert!(store("/data/inside/g").unwrap_err().is_refusal());
        assert!(!root.join("real/g").exists());
        // Renaming over a link replaces the link, never its target.
        store("/data/abs").unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"secret"
        );
    }

    #[test]
    fn a_grant_dir_made_again_is_picked_up_at_the_next_store() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let dirs = dirs(&root);
        let at = |p: &str| GrantedPath::locate(&dirs, p).unwrap();
        at("/data/a").write_atomically(b"1", false).unwrap();
        assert!(at("/data/a").open_read().is_ok());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        at("/data/b").write_atomically(b"2", false).unwrap();
        assert_eq!(std::fs::read(root.join("b")).unwrap(), b"2");
        assert!(at("/data/b").open_read().is_ok(), "reads use the new dir");
    }
}
