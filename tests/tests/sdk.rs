//! The pure parts of the guest SDK (URL ↔ path mapping, content
//! negotiation, flow filters), compiled natively so their unit tests and
//! the property tests below run with the rest of the suite.

#[path = "../../plugins/sdk/src/accept.rs"]
#[allow(dead_code)]
mod accept;
#[path = "../../plugins/sdk/src/cachepath.rs"]
#[allow(dead_code)]
mod cachepath;
#[path = "../../plugins/sdk/src/filter.rs"]
#[allow(dead_code)]
mod filter;

use proptest::prelude::*;

/// Characters URLs are made of, hostile ones included.
fn url_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just("%".to_owned()),
            Just("%2f".to_owned()),
            Just("%2e".to_owned()),
            Just("%00".to_owned()),
            Just("%25".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("?".to_owned()),
            Just("#".to_owned()),
            Just("@".to_owned()),
            Just("index.html".to_owned()),
            Just("é".to_owned()),
            "[a-zA-Z0-9_~!$&'()*+,;=:-]{1,4}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Any URL that maps maps back to a URL with the same scheme and path,
    /// the path never escapes the host directory, and http and https never
    /// share one.
    #[test]
    fn every_mapped_url_round_trips(
        scheme in prop_oneof![Just("http"), Just("https"), Just("HTTP")],
        path in url_text(),
        port in prop::option::of(1u16..65535),
    ) {
        let authority = match port {
            Some(port) => format!("host.example:{port}"),
            None => "host.example".to_owned(),
        };
        let url = format!("{scheme}://{authority}/{path}");
        if let Ok(rel) = cachepath::url_to_path(&url) {
            prop_assert!(!rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()), "{rel}");
            prop_assert!(!rel.contains('\0'));
            prop_assert!(!rel.contains('#'), "{rel}");
            let plain = scheme.eq_ignore_ascii_case("http");
            prop_assert_eq!(rel.starts_with(cachepath::HTTP_MARKER), plain, "{}", rel);
            let back = cachepath::path_to_url(&rel).unwrap();
            let want = if plain { "http://" } else { "https://" };
            prop_assert!(back.starts_with(want), "{} -> {}", rel, back);
            prop_assert_eq!(cachepath::url_to_path(&back), Ok(rel.clone()), "{} -> {} -> {}", url, rel, back);
            let other = url.replacen(scheme, if plain { "https" } else { "http" }, 1);
            prop_assert_ne!(cachepath::url_to_path(&other), Ok(rel.clone()), "{} and {}", url, other);
        }
    }

    /// The filter parser never panics and reports positions inside the text.
    #[test]
    fn filter_parser_is_total(text in "[~!&|() a-z0-9\"'\\\\.*]{0,24}") {
        if let Err(e) = filter::Filter::parse(&text) {
            prop_assert!(e.position <= text.len());
        }
    }
}
