//! Applications that run behind sidecars: the commerce demo.
//!
//! # Layout
//! - [`server`]: binds and serves any handler with the h1/h2 auto-detecting server.
//! - [`shop`]: the demo's storefront, orders, inventory, payments and notifications services,
//!   run by the `demo-service` binary.

pub mod server;
pub mod shop;
