//! The flow filter language: parsing never panics and errors point inside
//! the text; a parsed filter evaluates on a flow without panicking.
#![no_main]

#[path = "../../plugins/sdk/src/filter.rs"]
#[allow(dead_code)]
mod filter;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match filter::Filter::parse(text) {
        Err(e) => assert!(e.position <= text.len(), "{text:?}: {e:?}"),
        Ok(f) => {
            let request = [("content-type".to_owned(), b"text/html".to_vec())];
            let response = [("x-a".to_owned(), vec![0xff, b'\n', 0])];
            let flow = filter::Flow {
                method: "GET",
                url: "https://example.test/a?b=c",
                host: "example.test",
                request_headers: &request,
                response: Some((404, &response)),
            };
            f.matches(&flow);
            f.matches(&filter::Flow {
                response: None,
                ..flow
            });
        }
    }
});
