//! Bodies read into memory for a plugin's body hook (`need-body`): bounded
//! by the plugin's `max_body_bytes` and by a budget all flows share,
//! decoded per Content-Encoding off the async workers, and replaced when the
//! plugin returns new bytes.

use bytes::Bytes;
use http::HeaderMap;

use crate::{
    plugin::LoadedPlugin,
    proxy::{
        body::{collect_limited, full, Body, Collected},
        encoding,
    },
};

/// How much of a refused request body is read and discarded.
pub(super) const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads and discards up to `limit` bytes of `body` (for at most 30 s), so
/// a client still sending reads the answer instead of a reset stream.
pub(super) async fn drain(mut body: Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    while seen < limit {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => return,
            },
            () = &mut deadline => return,
        }
    }
}

/// A body read into memory for a body hook.
pub(super) enum Buffered {
    /// The decoded body; the message keeps the raw bytes as its body.
    Decoded(Vec<u8>),
    /// Over the plugin's limit: the body as it was.
    TooLarge(Body),
    /// The body failed while being read.
    Failed(String),
    /// Read, but its Content-Encoding could not be decoded within the limit.
    Undecodable(String),
    /// Too many bodies are buffered for plugins right now: not read.
    Busy,
}

/// Bytes all flows together may hold buffered for body hooks; a flow
/// reserves its plugin's whole limit before reading, and waits for room at
/// most `BODY_BUDGET_WAIT`.
const BODY_BUDGET_KIB: usize = 512 << 10;
const BODY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
static BODY_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_BUDGET_KIB);

/// Reads `body` up to the plugin's `max_body_bytes`, puts the raw bytes back
/// as the message body, and decodes them per `headers`' Content-Encoding on
/// the blocking pool (decoding is CPU work; the async workers serve others).
pub(super) async fn buffer(
    plugin: &LoadedPlugin,
    body: &mut Body,
    headers: &HeaderMap,
) -> Buffered {
    let limit = plugin.spec.limits.max_body_bytes;
    let kib = u32::try_from(limit.div_ceil(1024).clamp(1, BODY_BUDGET_KIB)).unwrap_or(u32::MAX);
    let Ok(Ok(_reserved)) =
        tokio::time::timeout(BODY_BUDGET_WAIT, BODY_BUDGET.acquire_many(kib)).await
    else {
        return Buffered::Busy;
    };
    match collect_limited(std::mem::replace(body, full(Bytes::new())), limit).await {
        Collected::Complete(raw) => {
            *body = full(raw.clone());
            let decoded = match content_encoding(headers) {
                None => Ok(raw.to_vec()),
                Some(coding) => {
                    let coding = coding.to_owned();
                    tokio::task::spawn_blocking(move || {
                        encoding::decode(Some(&coding), &raw, limit)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("decoding failed: {e}")))
                }
            };
            match decoded {
                Ok(decoded) => Buffered::Decoded(decoded),
                Err(e) => Buffered::Undecodable(e),
            }
        }
        Collected::TooLarge(rest) => Buffered::TooLarge(rest),
        Collected::Failed(e) => Buffered::Failed(e),
    }
}

/// Why plugin `name` got no body: the shared budget is held by others.
pub(super) fn busy(name: &str) -> String {
    format!(
        "plugin {name}: no room to buffer the body ({} MiB are held for body hooks)",
        BODY_BUDGET_KIB >> 10
    )
}

fn content_encoding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
}

/// A plugin's new body is sent decoded: Content-Encoding goes, the length is new.
pub(super) fn replaced_body(headers: &mut HeaderMap, new: Vec<u8>) -> Body {
    headers.remove(http::header::CONTENT_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, new.len().into());
    full(new)
}
