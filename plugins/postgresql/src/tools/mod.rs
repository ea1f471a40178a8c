//! The module's three tools.

pub mod catalog;
pub mod delegate;
mod specs;

pub use specs::specs;
