//! mitmproxy-style flow filters: `~u REGEX` (URL), `~d REGEX` (host),
//! `~m REGEX` (method), `~h`/`~hq`/`~hs REGEX` (a header line, either /
//! request / response), `~t`/`~tq`/`~ts REGEX` (Content-Type), `~c CODE`
//! (status), `~q` (no response yet), `~s` (has a response), `~all`,
//! `~b`/`~bq`/`~bs REGEX` (decoded body), `~e` (failed), `~a` (asset:
//! script, style, image, font), `~src`/`~dst REGEX` (client / server
//! address), `~marked`, `~comment REGEX`, `~http`, `~websocket`; combined with `!`, `&`
//! (or just a space), `|` and parentheses. A bare word or quoted string is
//! `~u`. Regexes are case-insensitive. Tests of what a flow does not carry
//! (a guest sees no bodies or addresses) are false.
//!
//! ```text
//! ~d example.com & ~u "/app\.js$"
//! !(~m GET | ~m HEAD) | ~c 404
//! ```

use std::fmt;

use regex_lite::Regex;

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Filter {
    All,
    Url(Regex),
    Domain(Regex),
    Method(Regex),
    Header(Side, Regex),
    ContentType(Side, Regex),
    Code(u16),
    Request,
    Response,
    Body(Side, Regex),
    Error,
    Asset,
    Source(Regex),
    Destination(Regex),
    Marked,
    /// mitmproxy's `~websocket`: the flow switched to WebSocket.
    WebSocket,
    Comment(Regex),
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

/// Which message a header test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Either,
    Request,
    Response,
}

/// A filter that does not parse: where (0-based byte offset) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for FilterError {}

/// Header fields a filter can look through.
pub trait Fields {
    /// Whether `test` holds for any field (name, value).
    fn any_field(&self, test: &mut dyn FnMut(&str, &[u8]) -> bool) -> bool;
}

/// Header fields as the WIT `headers` type holds them.
impl Fields for Vec<(String, Vec<u8>)> {
    fn any_field(&self, test: &mut dyn FnMut(&str, &[u8]) -> bool) -> bool {
        self.iter().any(|(n, v)| test(n, v))
    }
}

static NO_FIELDS: Vec<(String, Vec<u8>)> = Vec::new();

/// What a filter is evaluated on: a request and, later, its response.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub host: &'a str,
    pub request_headers: &'a dyn Fields,
    /// Status and headers once there is a response.
    pub response: Option<(u16, &'a dyn Fields)>,
    /// Decoded bodies, where known.
    pub request_body: Option<&'a [u8]>,
    pub response_body: Option<&'a [u8]>,
    /// Whether the exchange failed.
    pub error: bool,
    /// Client and server addresses (`ip:port`), where known.
    pub client: &'a str,
    pub server: &'a str,
    pub marked: bool,
    pub comment: &'a str,
    /// The exchange switched to WebSocket.
    pub websocket: bool,
}

impl Default for Flow<'_> {
    fn default() -> Self {
        Self {
            method: "",
            url: "",
            host: "",
            request_headers: &NO_FIELDS,
            response: None,
            request_body: None,
            response_body: None,
            error: false,
            client: "",
            server: "",
            marked: false,
            comment: "",
            websocket: false,
        }
    }
}

impl Filter {
    /// Parses `text`; the error names the position.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser { text, pos: 0 };
        parser.skip_space();
        if parser.at_end() {
            return Err(parser.error("empty filter"));
        }
        let filter = parser.or()?;
        parser.skip_space();
        if !parser.at_end() {
            return Err(parser.error("unexpected text (a missing & or | ?)"));
        }
        Ok(filter)
    }

    /// Whether evaluating needs the flow's bodies (`~b`, `~bq`, `~bs`).
    pub fn uses_bodies(&self) -> bool {
        match self {
            Self::Body(..) => true,
            Self::Not(inner) => inner.uses_bodies(),
            Self::And(a, b) | Self::Or(a, b) => a.uses_bodies() || b.uses_bodies(),
            _ => false,
        }
    }

    pub fn matches(&self, flow: &Flow<'_>) -> bool {
        let lines = |headers: &dyn Fields, re: &Regex| {
            headers
                .any_field(&mut |n, v| re.is_match(&format!("{n}: {}", String::from_utf8_lossy(v))))
        };
        let content_type = |headers: &dyn Fields, re: &Regex| {
            headers.any_field(&mut |n, v| {
                n.eq_ignore_ascii_case("content-type") && re.is_match(&String::from_utf8_lossy(v))
            })
        };
        let body = |side: Side, re: &Regex| {
            let test =
                |b: Option<&[u8]>| b.is_some_and(|b| re.is_match(&String::from_utf8_lossy(b)));
            matches!(side, Side::Either | Side::Request) && test(flow.request_body)
                || matches!(side, Side::Either | Side::Response) && test(flow.response_body)
        };
        let sides = |side: Side, test: &dyn Fn(&dyn Fields) -> bool| {
            let request =
                matches!(side, Side::Either | Side::Request) && test(flow.request_headers);
            let response = matches!(side, Side::Either | Side::Response)
                && flow.response.is_some_and(|(_, h)| test(h));
            request || response
        };
        match self {
            Self::All => true,
            Self::Url(re) => re.is_match(flow.url),
            Self::Domain(re) => re.is_match(flow.host),
            Self::Method(re) => re.is_match(flow.method),
            Self::Header(side, re) => sides(*side, &|h| lines(h, re)),
            Self::ContentType(side, re) => sides(*side, &|h| content_type(h, re)),
            Self::Code(code) => flow.response.is_some_and(|(status, _)| status == *code),
            Self::Request => flow.response.is_none(),
            Self::Response => flow.response.is_some(),
            Self::Body(side, re) => body(*side, re),
            Self::Error => flow.error,
            // mitmproxy's ~a: the response is a script, style sheet, image or font.
            Self::Asset => flow.response.is_some_and(|(_, h)| {
                h.any_field(&mut |n, v| {
                    n.eq_ignore_ascii_case("content-type")
                        && ASSET
                            .iter()
                            .any(|a| String::from_utf8_lossy(v).to_ascii_lowercase().contains(a))
                })
            }),
            Self::Source(re) => !flow.client.is_empty() && re.is_match(flow.client),
            Self::Destination(re) => !flow.server.is_empty() && re.is_match(flow.server),
            Self::Marked => flow.marked,
            Self::WebSocket => flow.websocket,
            Self::Comment(re) => re.is_match(flow.comment),
            Self::Not(inner) => !inner.matches(flow),
            Self::And(a, b) => a.matches(flow) && b.matches(flow),
            Self::Or(a, b) => a.matches(flow) || b.matches(flow),
        }
    }
}

/// Content types `~a` counts as assets.
const ASSET: [&str; 6] = [
    "javascript",
    "ecmascript",
    "text/css",
    "image/",
    "font/",
    "woff",
];

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> FilterError {
        FilterError {
            position: self.pos,
            message: message.to_owned(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        loop {
            self.skip_space();
            if self.peek() != Some('|') {
                return Ok(left);
            }
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.not()?;
        loop {
            self.skip_space();
            match self.peek() {
                Some('&') => self.pos += 1,
                // Juxtaposition is "and", as in mitmproxy.
                Some(c) if c != '|' && c != ')' => {}
                _ => return Ok(left),
            }
            let right = self.not()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn not(&mut self) -> Result<Filter, FilterError> {
        self.skip_space();
        if self.peek() == Some('!') {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Filter, FilterError> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("expected a filter")),
            Some('(') => {
                let open = self.pos;
                self.pos += 1;
                let inner = self.or()?;
                self.skip_space();
                if self.peek() != Some(')') {
                    return Err(FilterError {
                        position: open,
                        message: "unclosed (".into(),
                    });
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(')') => Err(self.error("unexpected )")),
            Some('&') | Some('|') => Err(self.error("expected a filter before the operator")),
            Some('~') => self.test(),
            Some(_) => {
                let start = self.pos;
                let word = self.argument()?;
                Ok(Filter::Url(regex(&word, start)?))
            }
        }
    }

    fn test(&mut self) -> Result<Filter, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let name_len = self.text[self.pos..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(self.text.len() - self.pos);
        let name = &self.text[self.pos..self.pos + name_len];
        self.pos += name_len;
        let mut with_regex = |make: fn(Regex) -> Filter| -> Result<Filter, FilterError> {
            self.skip_space();
            let at = self.pos;
            let arg = self.argument()?;
            Ok(make(regex(&arg, at)?))
        };
        match name {
            "all" | "http" => Ok(Filter::All),
            "e" => Ok(Filter::Error),
            "a" => Ok(Filter::Asset),
            "marked" => Ok(Filter::Marked),
            "websocket" => Ok(Filter::WebSocket),
            "b" => with_regex(|r| Filter::Body(Side::Either, r)),
            "bq" => with_regex(|r| Filter::Body(Side::Request, r)),
            "bs" => with_regex(|r| Filter::Body(Side::Response, r)),
            "src" => with_regex(Filter::Source),
            "dst" => with_regex(Filter::Destination),
            "comment" => with_regex(Filter::Comment),
            "q" => Ok(Filter::Request),
            "s" => Ok(Filter::Response),
            "u" => with_regex(Filter::Url),
            "d" => with_regex(Filter::Domain),
            "m" => with_regex(Filter::Method),
            "h" => with_regex(|r| Filter::Header(Side::Either, r)),
            "hq" => with_regex(|r| Filter::Header(Side::Request, r)),
            "hs" => with_regex(|r| Filter::Header(Side::Response, r)),
            "t" => with_regex(|r| Filter::ContentType(Side::Either, r)),
            "tq" => with_regex(|r| Filter::ContentType(Side::Request, r)),
            "ts" => with_regex(|r| Filter::ContentType(Side::Response, r)),
            "c" => {
                self.skip_space();
                let at = self.pos;
                let arg = self.argument()?;
                arg.parse().map(Filter::Code).map_err(|_| FilterError {
                    position: at,
                    message: format!("~c needs a status code, not {arg:?}"),
                })
            }
            _ => Err(FilterError {
                position: start,
                message: format!("unknown filter ~{name}"),
            }),
        }
    }

    /// A quoted string (with `\` escapes) or a word up to space or `)`.
    fn argument(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        match self.peek() {
            None => Err(self.error("missing argument")),
            Some(quote @ ('"' | '\'')) => {
                self.pos += 1;
                let mut out = String::new();
                let mut chars = self.text[self.pos..].char_indices();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, next)) if next == quote => out.push(next),
                            Some((_, next)) => {
                                out.push('\\');
                                out.push(next);
                            }
                            None => break,
                        },
                        c if c == quote => {
                            self.pos += i + 1;
                            return Ok(out);
                        }
                        c => out.push(c),
                    }
                }
                Err(FilterError {
                    position: start,
                    message: "unterminated string".into(),
                })
            }
            Some(_) => {
                let len = self.text[self.pos..]
                    .find(|c: char| c.is_whitespace() || c == ')')
                    .unwrap_or(self.text.len() - self.pos);
                self.pos += len;
                if len == 0 {
                    return Err(self.error("missing argument"));
                }
                Ok(self.text[start..self.pos].to_owned())
            }
        }
    }
}

fn regex(pattern: &str, position: usize) -> Result<Regex, FilterError> {
    Regex::new(&format!("(?i){pattern}")).map_err(|e| FilterError {
        position,
        message: format!("bad regex {pattern:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(response: Option<(u16, &dyn Fields)>) -> Flow<'_> {
        Flow {
            method: "GET",
            url: "https://example.com/static/app.js?v=2",
            host: "example.com",
            response,
            ..Flow::default()
        }
    }

    #[test]
    fn combinators_follow_precedence() {
        let f = Filter::parse("~d example.com & ~u app\\.js | ~m POST").unwrap();
        assert!(f.matches(&flow(None)));
        let f = Filter::parse("!(~m GET | ~m HEAD)").unwrap();
        assert!(!f.matches(&flow(None)));
        let f = Filter::parse("~d example.com ~u nomatch").unwrap();
        assert!(!f.matches(&flow(None)));
        assert!(Filter::parse("app.js").unwrap().matches(&flow(None)));
    }

    #[test]
    fn response_tests_need_a_response() {
        let headers = vec![("content-type".to_owned(), b"text/html".to_vec())];
        let f = Filter::parse("~c 404").unwrap();
        assert!(!f.matches(&flow(None)));
        assert!(f.matches(&flow(Some((404, &headers)))));
        assert!(Filter::parse("~ts html")
            .unwrap()
            .matches(&flow(Some((200, &headers)))));
        assert!(Filter::parse("~q").unwrap().matches(&flow(None)));
        let script = vec![(
            "Content-Type".to_owned(),
            b"application/javascript".to_vec(),
        )];
        assert!(Filter::parse("~a")
            .unwrap()
            .matches(&flow(Some((200, &script)))));
        assert!(!Filter::parse("~a")
            .unwrap()
            .matches(&flow(Some((200, &headers)))));
    }

    #[test]
    fn body_address_and_mark_tests_see_what_the_flow_carries() {
        let f = Filter::parse("~bs needle").unwrap();
        assert!(f.uses_bodies() && !Filter::parse("~u x").unwrap().uses_bodies());
        let headers: Vec<(String, Vec<u8>)> = Vec::new();
        let with_body = Flow {
            response: Some((200, &headers)),
            response_body: Some(b"a NEEDLE here"),
            ..flow(None)
        };
        assert!(f.matches(&with_body));
        assert!(!Filter::parse("~bq needle").unwrap().matches(&with_body));
        assert!(!f.matches(&flow(None)));
        let addressed = Flow {
            client: "127.0.0.1:5000",
            server: "10.0.0.1:443",
            marked: true,
            error: true,
            ..flow(None)
        };
        assert!(Filter::parse("~src ^127\\. & ~dst :443$ & ~marked & ~e")
            .unwrap()
            .matches(&addressed));
        assert!(!Filter::parse("~dst 127").unwrap().matches(&addressed));
        let websocket = Flow {
            websocket: true,
            ..flow(None)
        };
        assert!(Filter::parse("~websocket").unwrap().matches(&websocket));
        assert!(!Filter::parse("~websocket").unwrap().matches(&addressed));
    }

    #[test]
    fn errors_name_the_position() {
        let e = Filter::parse("~u a & ~zz b").unwrap_err();
        assert_eq!(e.position, 7, "{e}");
        let e = Filter::parse("(~u a").unwrap_err();
        assert_eq!(e.position, 0);
        let e = Filter::parse("~c abc").unwrap_err();
        assert_eq!(e.position, 3);
        let e = Filter::parse("~u \"open").unwrap_err();
        assert_eq!(e.position, 3);
        assert!(Filter::parse("~u (").is_err());
        assert!(Filter::parse("").is_err());
        assert!(Filter::parse("~u a |").is_err());
        // Non-ASCII white space (a pasted no-break space) is white space.
        assert!(Filter::parse("\u{a0}~u a\u{a0}").is_ok());
        assert_eq!(Filter::parse(" \u{a0}(").unwrap_err().position, 4);
    }
}
