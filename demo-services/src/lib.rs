//! Applications that run behind sidecars: the example echo app and the commerce demo.
//!
//! # Layout
//! - [`echo`]: an HTTP/1.1 + HTTP/2 app that describes each request it receives (or streams
//!   its body back), so what the mesh delivers can be seen with curl.
//! - [`server`]: binds and serves any handler with the h1/h2 auto-detecting server.
//! - [`shop`]: the demo's storefront, orders, inventory, payments and notifications services,
//!   run by the `demo-service` binary.

pub mod echo;
pub mod server;
pub mod shop;
