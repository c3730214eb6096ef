//! Content-Encoding for plugins that ask for a body: the host decodes gzip,
//! deflate, br and zstd (in the reverse order they were applied), bounded by
//! the plugin's body limit so a small bomb cannot become a large buffer.

use std::io::Read;

/// Stacked codings decoded at most: real servers apply one; each layer
/// costs a full pass, so 1500 stacked gzip layers must not cost seconds.
pub const MAX_CODINGS: usize = 2;

/// Decodes `raw` as described by a Content-Encoding value; `None` or
/// `identity` returns it as is. The output may not exceed `limit` bytes.
/// CPU-bound: call it off the async workers.
pub fn decode(encoding: Option<&str>, raw: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let codings: Vec<String> = encoding
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.len() > MAX_CODINGS {
        return Err(format!(
            "{} stacked content codings (at most {MAX_CODINGS} are decoded)",
            codings.len()
        ));
    }
    let mut data = raw.to_vec();
    for coding in codings.iter().rev() {
        let reader: Box<dyn Read + '_> = match coding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
            // HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2).
            "deflate" => Box::new(flate2::read::ZlibDecoder::new(&data[..])),
            "br" => Box::new(brotli::Decompressor::new(&data[..], 64 * 1024)),
            "zstd" => Box::new(
                zstd::stream::read::Decoder::new(&data[..]).map_err(|e| format!("zstd: {e}"))?,
            ),
            other => return Err(format!("unsupported content-encoding {other:?}")),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot decode {coding} body: {e}"))?;
        if out.len() > limit {
            return Err(format!("decoded body exceeds the limit of {limit} bytes"));
        }
        data = out;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_deflate_br_and_zstd_decode() {
        let text = b"the quick brown fox jumps over the lazy dog".repeat(20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        assert_eq!(
            decode(Some("gzip"), &gz.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode(Some("deflate"), &z.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(&text)
            .unwrap();
        assert_eq!(decode(Some("br"), &br, 1 << 20).unwrap(), text);
        let zs = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode(Some("zstd"), &zs, 1 << 20).unwrap(), text);
        assert_eq!(decode(None, &text, 1 << 20).unwrap(), text);
        assert!(decode(Some("gzip"), b"not gzip", 1 << 20).is_err());
        assert!(decode(Some("compress"), &text, 1 << 20).is_err());
    }

    #[test]
    fn stacked_codings_are_bounded() {
        let text = b"layers".to_vec();
        let mut data = text.clone();
        for _ in 0..3 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&data).unwrap();
            data = gz.finish().unwrap();
        }
        let error = decode(Some("gzip, gzip, gzip"), &data, 1 << 20).unwrap_err();
        assert!(error.contains("3 stacked content codings"), "{error}");
        assert!(decode(Some(&"gzip,".repeat(1500)), &data, 1 << 20).is_err());
    }

    #[test]
    fn decoding_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let bomb = zstd::encode_all(&zeros[..], 3).unwrap();
        assert!(bomb.len() < 10_000);
        let error = decode(Some("zstd"), &bomb, 1 << 20).unwrap_err();
        assert!(error.contains("exceeds the limit"), "{error}");
    }
}
