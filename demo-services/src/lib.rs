//! Applications that run behind sidecars: the example pair today, the commerce demo later.
//!
//! # Layout
//! - [`echo`]: an HTTP/1.1 + HTTP/2 app that describes each request it receives (or streams
//!   its body back), so what the mesh delivers can be seen with curl.
//! - [`server`]: binds and serves any handler with the h1/h2 auto-detecting server.

pub mod echo;
pub mod server;
