//! Content negotiation on `Accept` (RFC 9110 §12.5.1), pure functions.

/// The quality (0.0–1.0) `accept` gives `content_type`; the most specific
/// matching range wins (`type/sub` over `type/*` over `*/*`). No header
/// accepts everything; a type no range matches gets 0.0.
pub fn quality(accept: Option<&str>, content_type: &str) -> f32 {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return 1.0;
    };
    let wanted = media_type(content_type);
    let (kind, _) = wanted.split_once('/').unwrap_or((wanted.as_str(), ""));
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let name = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let specificity = if name == wanted {
            3
        } else if name.strip_suffix("/*") == Some(kind) {
            2
        } else if name == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// `type/subtype` of a Content-Type, lowercase, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A file-name token for a type: the subtype with `+` as `.`
/// (`application/vnd.pypi.simple.v1+json` → `vnd.pypi.simple.v1.json`).
pub fn type_token(content_type: &str) -> String {
    let media = media_type(content_type);
    let subtype = media.split_once('/').map_or(media.as_str(), |(_, s)| s);
    let token: String = subtype
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            _ => '.',
        })
        .collect();
    if token.is_empty() {
        "bin".into()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIP: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

    #[test]
    fn pip_prefers_json_and_still_takes_html() {
        assert_eq!(
            quality(Some(PIP), "application/vnd.pypi.simple.v1+json"),
            1.0
        );
        assert_eq!(quality(Some(PIP), "text/html; charset=utf-8"), 0.01);
        assert_eq!(
            quality(Some("text/html"), "application/vnd.pypi.simple.v1+json"),
            0.0
        );
    }

    #[test]
    fn wildcards_and_specificity() {
        assert_eq!(quality(None, "x/y"), 1.0);
        assert_eq!(quality(Some("*/*"), "x/y"), 1.0);
        assert_eq!(quality(Some("text/*;q=0.5, */*;q=0.1"), "text/plain"), 0.5);
        assert_eq!(
            quality(Some("application/json;q=0, */*"), "application/json"),
            0.0
        );
    }

    #[test]
    fn tokens_name_types() {
        assert_eq!(
            type_token("application/vnd.pypi.simple.v1+json"),
            "vnd.pypi.simple.v1.json"
        );
        assert_eq!(type_token("text/html; charset=utf-8"), "html");
        assert_eq!(
            type_token("application/vnd.npm.install-v1+json"),
            "vnd.npm.install-v1.json"
        );
    }
}
