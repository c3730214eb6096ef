//! Adds `x-hello: <greeting>` to every response; `greeting` comes from the
//! plugin config (`config = { greeting = "hi" }`), default "world".

use proxlet_plugin::{
    serde::Deserialize, Edit, FlowInfo, Hooks, Plugin, RequestHead, ResponseAction, ResponseHead,
};

struct Hello {
    /// The edit every response gets, built once.
    edit: Edit,
}

#[derive(Deserialize)]
#[serde(crate = "proxlet_plugin::serde")]
struct Config {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    GREETING.to_owned()
}

impl Plugin for Hello {
    const HOOKS: Hooks = Hooks::ON_RESPONSE;

    fn new(config: &str) -> Result<Self, String> {
        let config: Config = proxlet_plugin::config(config)?;
        Ok(Hello {
            edit: Edit::set_header("x-hello", config.greeting),
        })
    }

    fn on_response(&mut self, _: &FlowInfo, _: &RequestHead, _: &ResponseHead) -> ResponseAction {
        ResponseAction::Continue(vec![self.edit.clone()])
    }
}

/// The default greeting; tests build variants with another value.
const GREETING: &str = match option_env!("PROXLET_HELLO_GREETING") {
    Some(g) => g,
    None => "world",
};

proxlet_plugin::export!(Hello);
