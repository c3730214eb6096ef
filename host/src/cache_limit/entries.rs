//! What one cache entry is made of and what it counts for: pure functions
//! over paths relative to the cache dir, shared by the hot path (which names
//! the entry of a served file) and the scan (which groups every file).
//!
//! An entry is everything the cache dir holds for one URL path `NAME`: the
//! body `NAME`, its type variants `NAME#json` (the cache plugin's negotiated
//! copies), `NAME/#file` once `NAME` became a directory, the metadata
//! `.proxlet-meta/NAME#meta.json`, and an error link `NAME -> 404` (which the
//! error-links plugin makes only where no body is, so beside variants at
//! most). The URL mapping never produces a `#` in a name otherwise, so the
//! part of a file's name before its first `#` names its entry.

/// The cache plugin's metadata tree (`proxlet_plugin::cachepath::META_DIR`).
pub const META_DIR: &[u8] = b".proxlet-meta/";

/// What a regular file's size is rounded up to: the block most file systems
/// allocate, so that many small files (metadata above all) count for the
/// room they take, as Squid rounds object sizes to its file system's blocks.
pub const BLOCK: u64 = 4096;

/// The entry `rel` (a file's path relative to the cache dir) belongs to.
pub fn entry_key(rel: &[u8]) -> &[u8] {
    let rel = rel.strip_prefix(META_DIR).unwrap_or(rel);
    let name_start = rel
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |slash| slash + 1);
    match rel[name_start..].iter().position(|&b| b == b'#') {
        // `NAME/#file`: the file of the URL that names the directory.
        Some(0) if name_start > 0 => &rel[..name_start - 1],
        Some(0) | None => rel,
        // `NAME#variant`, `NAME#meta.json`.
        Some(hash) => &rel[..name_start + hash],
    }
}

/// Whether `rel` belongs to the metadata tree; an entry's metadata goes
/// after its bodies, so an entry half removed is never a body without it.
pub fn is_metadata(rel: &[u8]) -> bool {
    rel.starts_with(META_DIR)
}

/// Whether the file name is one proxlet writes before renaming it into
/// place (`.NAME.proxlet-PID-N.tmp`, the cache plugin's
/// `NAME.proxlet-moving`): a store in progress, neither counted nor evicted.
pub fn in_progress(name: &[u8]) -> bool {
    let temp = name.starts_with(b".")
        && name.ends_with(b".tmp")
        && name.windows(9).any(|w| w == b".proxlet-");
    temp || name.ends_with(b".proxlet-moving")
}

/// What a file counts toward the limit: a regular file its length rounded
/// up to [`BLOCK`], a symlink (an error link) the length of its target.
pub fn counted(len: u64, symlink: bool) -> u64 {
    if symlink {
        len
    } else {
        len.div_ceil(BLOCK).saturating_mul(BLOCK)
    }
}

/// Parses a size: a number with an optional fraction and unit, `K`, `M`,
/// `G` or `T` (powers of 1024, as `--flow-body-max`; a trailing `B` or `iB`
/// is allowed): `500M`, `20G`, `1.5G`, `1048576`. Zero is no size.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && (!digits(fraction) || shift == 0)) {
        return None;
    }
    let unit = 1u128 << shift;
    let mut bytes = whole.parse::<u128>().ok()?.checked_mul(unit)?;
    if !fraction.is_empty() {
        let fraction = fraction.get(..18).unwrap_or(fraction);
        let scale = 10u128.pow(fraction.len() as u32);
        bytes = bytes.checked_add(fraction.parse::<u128>().ok()? * unit / scale)?;
    }
    u64::try_from(bytes).ok().filter(|&n| n > 0)
}

/// `1.5 GiB`, `300.0 KiB`, `512 B`: sizes in log lines.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rel: &str) -> &str {
        std::str::from_utf8(entry_key(rel.as_bytes())).unwrap()
    }

    #[test]
    fn bodies_variants_directory_files_metadata_and_links_share_their_entry() {
        let name = "pypi.org/simple/requests/index.html";
        assert_eq!(key(name), name);
        assert_eq!(key(&format!("{name}#vnd.pypi.simple.v1.json")), name);
        assert_eq!(key(&format!(".proxlet-meta/{name}#meta.json")), name);
        assert_eq!(
            key("registry.npmjs.org/left-pad/#file"),
            "registry.npmjs.org/left-pad"
        );
        assert_eq!(
            key(".proxlet-meta/registry.npmjs.org/left-pad#meta.json"),
            "registry.npmjs.org/left-pad"
        );
        assert_eq!(
            key("registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"),
            "registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"
        );
        // A `#` only in a directory's name does not move the file's entry.
        assert_eq!(key("h/a#b/c"), "h/a#b/c");
        assert_eq!(key("#top"), "#top");
        assert_eq!(
            key("example.com_8443/api/list?page=2"),
            "example.com_8443/api/list?page=2"
        );
    }

    #[test]
    fn stores_in_progress_are_recognised_by_name() {
        assert!(in_progress(b".index.html.proxlet-41-7.tmp"));
        assert!(in_progress(b"pkg.proxlet-moving"));
        assert!(!in_progress(b"index.html"));
        assert!(!in_progress(b".hidden.tmp"));
        assert!(!in_progress(b"proxlet-1-2.tmp"));
    }

    #[test]
    fn files_count_whole_blocks_and_links_their_target() {
        assert_eq!(counted(0, false), 0);
        assert_eq!(counted(1, false), 4096);
        assert_eq!(counted(4096, false), 4096);
        assert_eq!(counted(4097, false), 8192);
        assert_eq!(counted(3, true), 3);
    }

    #[test]
    fn sizes_parse_with_units_and_fractions() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("20G"), Some(20 << 30));
        assert_eq!(parse_size("20 GiB"), Some(20 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("0.5k"), Some(512));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("100B"), Some(100));
        for bad in [
            "",
            "0",
            "0G",
            "G",
            "-1G",
            "+1G",
            "20X",
            "20 G B",
            "1.5",
            "1.5.5G",
            ".5G",
            "5.G",
            "1e9",
            "99999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_well_in_logs() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(300 << 10), "300.0 KiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
