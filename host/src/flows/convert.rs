//! `proxlet convert IN OUT`, and reading any flow source (proxlet flow
//! file, HAR, mitmproxy dump) recognised by its content, not its name.
//!
//! A proxlet flow file starts with [`file::MAGIC`]; a HAR file is a JSON
//! object (after an optional byte order mark, which Fiddler writes); a
//! mitmproxy dump is a stream of tnetstrings, so it starts with a length
//! prefix (digits). Flow files and dumps are streamed; a HAR is parsed whole.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt,
    fs::File,
    io::{BufReader, BufWriter, Read},
    path::{Path, PathBuf},
    rc::Rc,
};

use super::{
    file::{self, FlowReader, FlowWriter},
    filter::{self, Filter},
    har, mitm, Flow,
};
use crate::error::{Error, Result};

/// The flows of a source, each read as it is needed.
pub type Flows = Box<dyn Iterator<Item = Result<Flow>>>;

/// The formats flows are read from and written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Proxlet,
    Har,
    Mitmproxy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Proxlet => "proxlet flow file",
            Format::Har => "HAR 1.2",
            Format::Mitmproxy => "mitmproxy dump",
        })
    }
}

impl Format {
    /// The format `convert` writes to `path`: by its extension.
    pub fn for_output(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("har") => Format::Har,
            Some(e) if e.eq_ignore_ascii_case("mitm") => Format::Mitmproxy,
            _ => Format::Proxlet,
        }
    }
}

/// An opened source: its format, its flows, and the flows of other kinds a
/// mitmproxy dump held (TCP, UDP, DNS), counted by type once read.
pub struct Source {
    pub format: Format,
    pub flows: Flows,
    pub skipped: Rc<RefCell<BTreeMap<String, usize>>>,
}

/// Opens `path` as whichever flow source its content says it is.
pub fn open_any(path: &Path) -> Result<Flows> {
    let source = open(path)?;
    let skipped = source.skipped.clone();
    let name = path.display().to_string();
    let mut flows = source.flows;
    let mut warned = false;
    // Other commands learn of skipped flows from the log when reading ends.
    Ok(Box::new(std::iter::from_fn(move || {
        let next = flows.next();
        if next.is_none() && !warned {
            warned = true;
            if let Some(summary) = skipped_summary(&skipped.borrow()) {
                tracing::warn!("{name}: skipped {summary}");
            }
        }
        next
    })))
}

/// "2 non-HTTP flows (1 dns, 1 tcp)", or `None` when none were skipped.
fn skipped_summary(skipped: &BTreeMap<String, usize>) -> Option<String> {
    let total: usize = skipped.values().sum();
    (total > 0).then(|| {
        let kinds: Vec<String> = skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!(
            "{total} non-HTTP flow{} ({})",
            if total == 1 { "" } else { "s" },
            kinds.join(", ")
        )
    })
}

/// Opens `path` and tells its format by its first bytes.
pub fn open(path: &Path) -> Result<Source> {
    let failed = |what: &str, e: &dyn fmt::Display| {
        Error::Flows(format!("cannot read {}: {what}{e}", path.display()))
    };
    let mut file = File::open(path).map_err(|e| failed("", &e))?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed("", &e)),
        }
    }
    let head = &head[..filled];
    let skipped = Rc::new(RefCell::new(BTreeMap::new()));
    if head.starts_with(&file::MAGIC) {
        let reader = FlowReader::open(path).map_err(|e| Error::Flows(e.to_string()))?;
        let name = path.display().to_string();
        let flows = reader
            .flows(true)
            .map(move |r| r.map_err(|e| Error::Flows(format!("{name}: {e}"))));
        return Ok(Source {
            format: Format::Proxlet,
            flows: Box::new(flows),
            skipped,
        });
    }
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| failed("", &e))?;
            let flows = har::read(&bytes)
                .map_err(|e| failed("not a valid HAR file: ", &e))?
                .into_iter()
                .map(Ok);
            Ok(Source {
                format: Format::Har,
                flows: Box::new(flows),
                skipped,
            })
        }
        Some(b'0'..=b'9') => mitm_source(path, skipped),
        // A dump with no flows is an empty file (`mitmdump -w` of nothing).
        None if head.is_empty() => mitm_source(path, skipped),
        _ => Err(Error::Flows(format!(
            "{} is not a proxlet flow file, a HAR file or a mitmproxy dump (it starts with {:?})",
            path.display(),
            String::from_utf8_lossy(&head[..head.len().min(16)])
        ))),
    }
}

/// A mitmproxy dump, streamed; the skipped counts fill in at its end.
fn mitm_source(path: &Path, skipped: Rc<RefCell<BTreeMap<String, usize>>>) -> Result<Source> {
    let file = File::open(path)
        .map_err(|e| Error::Flows(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = mitm::Reader::new(BufReader::with_capacity(256 * 1024, file));
    let name = path.display().to_string();
    let counts = skipped.clone();
    let flows = std::iter::from_fn(move || {
        let next = reader.next();
        if next.is_none() {
            counts.replace(reader.skipped.clone());
        }
        next.map(|r| {
            r.map_err(|e| Error::Flows(format!("{name}: not a valid mitmproxy dump: {e}")))
        })
    });
    Ok(Source {
        format: Format::Mitmproxy,
        flows: Box::new(flows),
        skipped,
    })
}

/// `proxlet convert IN OUT [--filter EXPR]`.
pub fn convert(input: &Path, output: &Path, filter: Option<&str>) -> Result<()> {
    let filter = super::cli::parse_filter(filter)?;
    let source = open(input)?;
    let format = Format::for_output(output);
    // Written beside OUT and renamed at the end: a failed conversion leaves
    // no half-written file behind, nor clobbers an existing one.
    let partial = partial_path(output);
    let result = write_all(source.flows, filter.as_ref(), format, &partial);
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, output).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Error::Flows(format!("cannot write {}: {e}", output.display()))
    })?;
    let skipped = skipped_summary(&source.skipped.borrow())
        .map(|s| format!(", skipped {s}"))
        .unwrap_or_default();
    eprintln!(
        "converted {written} flow{} from {} ({}{skipped}) to {} ({format})",
        if written == 1 { "" } else { "s" },
        input.display(),
        source.format,
        output.display(),
    );
    Ok(())
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Writes the flows that pass `filter` to `path` in `format`; returns how
/// many. The first read error ends the writing and is returned.
fn write_all(flows: Flows, filter: Option<&Filter>, format: Format, path: &Path) -> Result<usize> {
    let write_error =
        |e: std::io::Error| Error::Flows(format!("cannot write {}: {e}", path.display()));
    let mut read_error = None;
    let passing = flows
        .map_while(|r| match r {
            Ok(flow) => Some(flow),
            Err(e) => {
                read_error = Some(e);
                None
            }
        })
        .filter(|flow| filter.is_none_or(|f| filter::matches(f, flow)));
    let written = match format {
        Format::Har => {
            let out = file::create_private(path).map_err(write_error)?;
            har::write(passing, out).map_err(write_error)?
        }
        Format::Mitmproxy => {
            let out = BufWriter::with_capacity(
                256 * 1024,
                file::create_private(path).map_err(write_error)?,
            );
            mitm::write(passing, out).map_err(write_error)?
        }
        Format::Proxlet => {
            let mut writer =
                FlowWriter::create(path, false).map_err(|e| Error::Flows(e.to_string()))?;
            let mut count = 0;
            for flow in passing {
                writer.write(&flow).map_err(write_error)?;
                count += 1;
            }
            writer.flush().map_err(write_error)?;
            count
        }
    };
    match read_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{Body, Request, Response};

    fn flow(id: u64, url: &str, status: u16) -> Flow {
        Flow {
            id,
            request: Request {
                method: "GET".into(),
                url: url.into(),
                version: "HTTP/1.1".into(),
                headers: vec![],
                body: Body::default(),
            },
            response: Some(Response {
                status,
                version: "HTTP/1.1".into(),
                headers: vec![],
                body: Body::whole(&b"\x00\x01body"[..]),
            }),
            ..Flow::default()
        }
    }

    fn ids(path: &Path) -> Vec<u64> {
        open_any(path).unwrap().map(|f| f.unwrap().id).collect()
    }

    #[test]
    fn every_format_converts_to_every_other_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let start = dir.path().join("start.flows");
        let mut writer = FlowWriter::create(&start, false).unwrap();
        for (id, status) in [(1, 200), (2, 404), (3, 200)] {
            writer
                .write(&flow(id, &format!("http://a.example/{id}"), status))
                .unwrap();
        }
        writer.flush().unwrap();
        // Names that lie about the content: recognition is by content.
        let har = dir.path().join("out.har");
        let mitm = dir.path().join("out.mitm");
        let back = dir.path().join("back.har.flows");
        convert(&start, &har, None).unwrap();
        std::fs::rename(&har, dir.path().join("har.mitm")).unwrap();
        convert(&dir.path().join("har.mitm"), &mitm, Some("~c 200")).unwrap();
        convert(&mitm, &back, None).unwrap();
        assert_eq!(ids(&back), [1, 3]);
        let first = open_any(&back).unwrap().next().unwrap().unwrap();
        assert_eq!(first.response.unwrap().body.data, &b"\x00\x01body"[..]);
        assert!(!partial_path(&back).exists());
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.har");
        std::fs::write(&junk, "<html>").unwrap();
        let err = open_any(&junk).err().unwrap().to_string();
        assert!(
            err.contains("junk.har is not a proxlet flow file, a HAR file or a mitmproxy dump"),
            "{err}"
        );
        std::fs::write(&junk, "{\"log\": 1}").unwrap();
        let err = open_any(&junk).err().unwrap().to_string();
        assert!(
            err.contains("junk.har") && err.contains("not a valid HAR"),
            "{err}"
        );
        std::fs::write(&junk, "12:abc").unwrap();
        let err = open_any(&junk)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("junk.har: not a valid mitmproxy dump: flow 1"),
            "{err}"
        );
        let out = dir.path().join("out.flows");
        let err = convert(&junk, &out, None).unwrap_err().to_string();
        assert!(err.contains("mitmproxy dump"), "{err}");
        assert!(!out.exists() && !partial_path(&out).exists());
        let err = convert(&junk, &out, Some("~c 200 & ("))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at position"), "{err}");
        std::fs::write(&junk, "").unwrap();
        assert_eq!(open_any(&junk).unwrap().count(), 0);
    }
}
