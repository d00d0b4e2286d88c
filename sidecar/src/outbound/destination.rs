//! Step 2: name the destination service.
//!
//! The app addresses a service the way it would without a mesh: `Host: inventory` (HTTP/1.1)
//! or `:authority` (HTTP/2). The service name is the host part, lowercased, without port or
//! trailing dot. The authority itself travels on unchanged, so the destination app sees the
//! `Host` it was sent.

use http::Request;
use http::header::HOST;
use http::uri::Authority;

/// One version of the destination, chosen in front of the outbound proxy (a gateway route's
/// `backendRefs` entry with `version`), as a request extension: the request goes only to that
/// version's endpoints, whatever the destination's split or its route's `backendRefs` say.
/// Never taken from the request's headers, so no client can choose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PinnedVersion(pub(crate) String);

/// The authority of a request: the URI's (HTTP/2, absolute-form HTTP/1.1) or the Host header's.
pub(crate) fn authority<B>(req: &Request<B>) -> Option<Authority> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.clone());
    }
    req.headers().get(HOST)?.to_str().ok()?.parse().ok()
}

/// The service name an authority refers to.
pub(crate) fn service_name(authority: &Authority) -> String {
    authority.host().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(req: Request<()>) -> Option<String> {
        authority(&req).map(|a| service_name(&a))
    }

    #[test]
    fn host_header_names_the_service() {
        let req = Request::get("/api/stock/abc")
            .header(HOST, "Inventory:8080")
            .body(())
            .unwrap();
        assert_eq!(name_of(req).as_deref(), Some("inventory"));
    }

    #[test]
    fn uri_authority_wins_over_host() {
        let req = Request::get("http://orders./x")
            .header(HOST, "inventory")
            .body(())
            .unwrap();
        assert_eq!(name_of(req).as_deref(), Some("orders"));
    }

    #[test]
    fn no_authority_is_none() {
        assert_eq!(name_of(Request::get("/x").body(()).unwrap()), None);
    }
}
