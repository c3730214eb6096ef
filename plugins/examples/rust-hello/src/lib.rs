//! Adds `x-hello: <greeting>` to every response; `greeting` comes from the
//! plugin config (`config = { greeting = "hi" }`), default "world".

use proxlet_plugin::{FlowInfo, Hooks, Plugin, RequestHead, ResponseAction, ResponseHead};

struct Hello {
    greeting: String,
}

impl Plugin for Hello {
    const HOOKS: Hooks = Hooks::ON_RESPONSE;

    fn new(config: &str) -> Result<Self, String> {
        // Tiny config: {"greeting": "..."}; anything else keeps the default.
        let greeting = config
            .split_once("\"greeting\"")
            .and_then(|(_, rest)| rest.split('"').nth(1))
            .unwrap_or(GREETING)
            .to_owned();
        Ok(Hello { greeting })
    }

    fn on_response(
        &mut self,
        _: &FlowInfo,
        _: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseAction {
        let mut head = response.clone();
        proxlet_plugin::set_header(&mut head.headers, "x-hello", &self.greeting);
        ResponseAction::Continue(Some(head))
    }
}

/// The default greeting; tests build variants with another value.
const GREETING: &str = match option_env!("PROXLET_HELLO_GREETING") {
    Some(g) => g,
    None => "world",
};

proxlet_plugin::export!(Hello);
