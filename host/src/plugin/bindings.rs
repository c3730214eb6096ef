//! Host bindings generated from `wit/` (world `plugin`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Calls into guests are async so WASI host calls and epoch deadlines
    // work inside tokio; the `log` import stays a plain function.
    exports: { default: async },
});

pub use self::proxlet::plugin::types;
pub use exports::proxlet::plugin::{error_hooks, lifecycle, request_hooks, response_hooks};
