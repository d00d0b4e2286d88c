//! storefront: the edge that people and the load generator call directly. It serves one
//! self-contained page and a small JSON API that passes calls on to inventory and orders.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::http::{ApiError, Reply, bytes_response, full, read_body, segments};
use super::input::check_id;
use super::upstream::{Answer, TraceHeaders, Upstream};
use crate::server::Body;

const PAGE: &str = include_str!("storefront.html");

pub struct Storefront {
    upstream: Upstream,
}

impl Storefront {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        let trace = TraceHeaders::from_headers(req.headers());
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let answer = match (method, segments(&path).as_slice()) {
            (Method::GET, []) => {
                return Ok(bytes_response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(PAGE.as_bytes()),
                ));
            }
            (Method::GET, ["api", "products"]) => {
                self.upstream.get("inventory", "/products", &trace).await?
            }
            (Method::GET, ["api", "orders"]) => {
                self.upstream.get("orders", "/orders", &trace).await?
            }
            (Method::POST, ["api", "orders"]) => {
                let body = read_body(req).await?;
                self.upstream
                    .send("orders", Method::POST, "/orders", Some(body), &trace)
                    .await?
            }
            (Method::GET, ["api", "orders", id]) => {
                check_id("id", id)?;
                self.upstream
                    .get("orders", &format!("/orders/{id}"), &trace)
                    .await?
            }
            (_, [] | ["api", "products" | "orders"] | ["api", "orders", _]) => {
                return Err(ApiError::MethodNotAllowed);
            }
            _ => return Err(ApiError::NoRoute),
        };
        Ok(pass_through(answer))
    }
}

/// The upstream's status, content type and body, unchanged.
fn pass_through(answer: Answer) -> Response<Body> {
    let mut rsp = Response::new(full(answer.body));
    *rsp.status_mut() = answer.status;
    let content_type = answer
        .content_type
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    rsp.headers_mut().insert(CONTENT_TYPE, content_type);
    rsp
}
