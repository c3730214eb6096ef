//! URL ↔ cache path mapping: never panics, never maps a URL outside its host
//! directory, and every path it makes maps back to a URL that maps to the
//! same path.
#![no_main]

#[path = "../../plugins/sdk/src/cachepath.rs"]
#[allow(dead_code)]
mod cachepath;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for url in [
        text.to_owned(),
        format!("https://example.test/{text}"),
        format!("http://example.test/{text}"),
    ] {
        let Ok(path) = cachepath::url_to_path(&url) else {
            continue;
        };
        assert!(!path.starts_with('/'), "{url:?} → absolute {path:?}");
        assert!(
            !path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".."),
            "{url:?} → {path:?} leaves its directory"
        );
        assert!(!path.contains('\0'), "{url:?} → {path:?} has NUL");
        // http and https never share a host directory.
        let plain = url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        assert_eq!(
            path.starts_with(cachepath::HTTP_MARKER),
            plain,
            "{url:?} → {path:?}"
        );
        let back = cachepath::path_to_url(&path)
            .unwrap_or_else(|e| panic!("{url:?} → {path:?} has no URL: {e}"));
        assert_eq!(
            cachepath::url_to_path(&back).as_deref(),
            Ok(path.as_str()),
            "{url:?} → {path:?} → {back:?}"
        );
    }
    // Any relative path: mapping to a URL and back is the identity.
    if let Ok(url) = cachepath::path_to_url(text) {
        if let Ok(path) = cachepath::url_to_path(&url) {
            assert_eq!(path, text, "{text:?} → {url:?} → {path:?}");
        }
    }
});
