//! The per-flow pipeline: the steps one request goes through, and the
//! carrying out of what plugins decide: on-request (`request.rs`),
//! on-response and on-error (`response.rs`), a plugin's own response or its
//! failure (`answer.rs`), bodies for body hooks (`buffer.rs`), single flight
//! (`fill.rs`), on-websocket-open (`websocket.rs`) and the notes a flow's
//! plugins leave (`notes.rs`).

mod answer;
mod buffer;
mod fill;
mod notes;
mod request;
mod response;
mod websocket;

pub use fill::FillLease;
pub use notes::Notes;
pub use request::{on_request, RequestDecision};
pub use response::{on_error, on_response};
pub(crate) use websocket::on_websocket_open;
