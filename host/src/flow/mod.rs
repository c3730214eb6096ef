//! The per-flow pipeline: the steps one request goes through, and the
//! carrying out of what plugins decide.

mod fill;

pub use fill::FillLease;
pub(crate) use fill::{acquire, Fill};
