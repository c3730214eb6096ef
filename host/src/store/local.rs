//! Files the shared store brings into the cache dir, written beneath it as
//! the plugins' are (no symlink followed, see `proxy::grant`): into a temp
//! file beside the place, renamed there only if nothing is there by then.

use std::{ffi::OsString, io::Write, os::fd::OwnedFd};

use rustix::fs::{AtFlags, RenameFlags};

use crate::proxy::grant::{self, GrantError, GrantedPath};

/// A file being written; dropped unfinished, it leaves nothing.
pub struct NewFile {
    dir: OwnedFd,
    temp: OsString,
    name: OsString,
    file: Option<std::fs::File>,
}

impl NewFile {
    /// Starts the file at `path`, making the directories above it.
    pub fn create(path: &GrantedPath) -> Result<Self, GrantError> {
        let (dir, name) = path.create_parent()?;
        let temp = grant::temp_name(&name);
        let file = grant::create_new(&dir, &temp, false)
            .map_err(|e| GrantError::Io(path.display(), e.into()))?;
        Ok(Self {
            dir,
            temp,
            name,
            file: Some(file),
        })
    }

    /// Appends `bytes` (page-cache writes of one chunk, as the tee does).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Puts the file in place; `false` when something took the place
    /// meanwhile (it is kept, this file goes).
    pub fn finish(mut self) -> std::io::Result<bool> {
        drop(self.file.take());
        let placed = rustix::fs::renameat_with(
            &self.dir,
            &self.temp,
            &self.dir,
            &self.name,
            RenameFlags::NOREPLACE,
        );
        match placed {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            // A file system without RENAME_NOREPLACE: look, then rename.
            Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        match rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::renameat(&self.dir, &self.temp, &self.dir, &self.name)?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(false),
        }
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // After a rename the temp name is gone and this does nothing.
        let _ = rustix::fs::unlinkat(&self.dir, &self.temp, AtFlags::empty());
    }
}

/// Removes the file at `path` (one this module put there).
pub fn remove(path: &GrantedPath) {
    if let Ok((dir, name)) = path.create_parent() {
        let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
    }
}
