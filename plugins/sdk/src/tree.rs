//! Checks on the cache tree that need the file system (the pure mapping is
//! in [`crate::cachepath`]). Error links (`name -> 404`) are symlinks in the
//! same tree, so a path *through* one would alias another directory
//! (`t/bob/x` would be `t/404/x`); the host refuses every file action through
//! a symlink, and plugins check first so that refusal stays a sign of attack.

/// The first ancestor directory of `rel` (relative to `dir`, the host
/// directory included, `rel` itself not) that is a symlink, or `None` when
/// every existing ancestor is a real directory. One `lstat` per existing
/// ancestor: meant for the miss and store paths, where a fetch costs more.
pub fn symlinked_ancestor(dir: &str, rel: &str) -> Option<String> {
    let mut end = 0;
    while let Some(i) = rel[end..].find('/') {
        end += i;
        let ancestor = &rel[..end];
        end += 1;
        match std::fs::symlink_metadata(format!("{dir}/{ancestor}")) {
            Ok(m) if m.file_type().is_symlink() => return Some(ancestor.to_owned()),
            Ok(_) => {}
            // Missing (nothing deeper exists either) or unreadable (the
            // host's own check decides).
            Err(_) => return None,
        }
    }
    None
}
