//! The types every layer of a destination stack (steps 5 to 8) shares, kept apart so the
//! layers depend on this leaf rather than on the outbound handler above them.

use http::{Request, Response};

use crate::body::{Body, BoxError};

/// A request inside a destination stack.
pub(crate) type Req = Request<Body>;
/// A response inside a destination stack.
pub(crate) type Rsp = Response<Body>;
/// The future of every layer of a destination stack.
pub(crate) type ResponseFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Rsp, BoxError>> + Send>>;

/// Waits for `svc` to be ready, then sends it `req` (`ServiceExt::oneshot` for stack layers,
/// whose concrete future keeps the compiler's `Send` inference simple inside boxed futures).
pub(crate) async fn call<S>(mut svc: S, req: Req) -> Result<Rsp, BoxError>
where
    S: tower::Service<Req, Response = Rsp, Error = BoxError, Future = ResponseFuture>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}
