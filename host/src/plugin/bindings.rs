//! Host bindings generated from `wit/` (world `plugin-websocket`: every
//! hook; a component of world `plugin` lacks the WebSocket ones).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin-websocket",
    // Calls into guests are async so WASI host calls and epoch deadlines
    // work inside tokio; the imports (`log`, the heads' accessors) stay
    // plain functions.
    exports: { default: async },
    // The heads a call lends the guest (`heads::Lent`); a handle names
    // no data of its own.
    with: {
        "proxlet:plugin/types.request-head": super::heads::RequestHandle,
        "proxlet:plugin/types.response-head": super::heads::ResponseHandle,
    },
});

pub use self::proxlet::plugin::types;
pub use exports::proxlet::plugin::{
    error_hooks, lifecycle, request_hooks, response_hooks, websocket_hooks,
};

/// The hot hooks (`on-request`, `on-response`) generated once more as plain
/// functions, for instances whose imports never wait (`instance.rs`): they
/// are called without a fiber. Types and imports are those above.
pub mod direct {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        with: {
            "proxlet:plugin/types": super::types,
            "proxlet:plugin/host": super::proxlet::plugin::host,
        },
    });

    pub use self::exports::proxlet::plugin::{request_hooks, response_hooks};
}
