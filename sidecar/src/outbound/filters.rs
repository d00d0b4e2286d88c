//! Step 3, after the route is known: its filters, in the order written. A redirect answers
//! the app at once; header changes and rewrites change what the destination's app gets; the
//! response header changes apply to what the app gets back, the mesh's own answers included.

use http::header::LOCATION;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use mesh_api::route::{Filter, PathMatch};
use mesh_api::route_filter::{HeaderModifier, Redirect};

use crate::body::{self, Body, BoxError};

/// What the filters made of a request.
pub(crate) enum Filtered {
    /// Forward it (changed in place).
    Forward,
    /// Answer the app with this instead.
    Answer(Response<Body>),
}

/// Applies the request filters of a route matched by `matched` to the request's `uri`,
/// `headers` and the `authority` it is forwarded with.
pub(crate) fn request(
    filters: &[Filter],
    matched: &PathMatch,
    uri: &mut Uri,
    headers: &mut HeaderMap,
    authority: &mut Authority,
) -> Result<Filtered, BoxError> {
    for filter in filters {
        match filter {
            Filter::RequestHeaderModifier { modifier } => modify(modifier, headers)?,
            Filter::UrlRewrite { rewrite } => {
                if let Some(host) = &rewrite.hostname {
                    let port = authority
                        .port_u16()
                        .map(|p| format!(":{p}"))
                        .unwrap_or_default();
                    *authority = format!("{host}{port}").parse()?;
                }
                if let Some(path) = &rewrite.path {
                    let new = path.apply(uri.path(), matched);
                    *uri = with_path(uri, &new)?;
                }
            }
            Filter::RequestRedirect { redirect } => {
                return Ok(Filtered::Answer(redirect_to(
                    redirect, matched, uri, authority,
                )?));
            }
            Filter::ResponseHeaderModifier { .. } | Filter::RequestMirror { .. } => {}
        }
    }
    Ok(Filtered::Forward)
}

/// Applies the response filters of a route.
pub(crate) fn response(filters: &[Filter], rsp: &mut Response<Body>) -> Result<(), BoxError> {
    for filter in filters {
        if let Filter::ResponseHeaderModifier { modifier } = filter {
            modify(modifier, rsp.headers_mut())?;
        }
    }
    Ok(())
}

/// `remove`, then `set`, then `add`, as the Gateway API orders them.
fn modify(modifier: &HeaderModifier, headers: &mut HeaderMap) -> Result<(), BoxError> {
    for name in &modifier.remove {
        headers.remove(name.as_str());
    }
    for h in &modifier.set {
        headers.insert(
            HeaderName::from_bytes(h.name.as_bytes())?,
            HeaderValue::from_str(&h.value)?,
        );
    }
    for h in &modifier.add {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes())?,
            HeaderValue::from_str(&h.value)?,
        );
    }
    Ok(())
}

/// `uri` with its path replaced and its query kept.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, BoxError> {
    let path_and_query: PathAndQuery = match uri.query() {
        Some(query) => format!("{path}?{query}").parse()?,
        None => path.parse()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Ok(Uri::from_parts(parts)?)
}

/// The redirect response: each part the filter leaves out is the request's own, except that a
/// new scheme without a port drops the request's port (the scheme's default applies).
fn redirect_to(
    redirect: &Redirect,
    matched: &PathMatch,
    uri: &Uri,
    authority: &Authority,
) -> Result<Response<Body>, BoxError> {
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let host = redirect.hostname.as_deref().unwrap_or(authority.host());
    let port = match (redirect.port, &redirect.scheme) {
        (Some(port), _) => Some(port),
        (None, Some(_)) => None,
        (None, None) => authority.port_u16(),
    };
    let default_port = matches!((scheme, port), ("http", Some(80)) | ("https", Some(443)));
    let port = match port {
        Some(port) if !default_port => format!(":{port}"),
        _ => String::new(),
    };
    let path = match &redirect.path {
        Some(modifier) => modifier.apply(uri.path(), matched),
        None => uri.path().to_owned(),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = HeaderValue::from_str(&format!("{scheme}://{host}{port}{path}{query}"))?;
    let mut rsp = Response::new(body::empty());
    *rsp.status_mut() = StatusCode::from_u16(redirect.status_code)?;
    rsp.headers_mut().insert(LOCATION, location);
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use mesh_api::route_filter::PathModifier;

    use super::*;

    #[test]
    fn a_redirect_keeps_what_it_does_not_change() {
        let uri: Uri = "/stock/1?x=2".parse().unwrap();
        let authority: Authority = "inventory:8080".parse().unwrap();
        let matched = PathMatch::PathPrefix("/stock".into());
        let location = |redirect: Redirect| {
            let rsp = redirect_to(&redirect, &matched, &uri, &authority).unwrap();
            (
                rsp.status().as_u16(),
                rsp.headers()[LOCATION].to_str().unwrap().to_owned(),
            )
        };
        let none = Redirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: 302,
        };
        assert_eq!(
            location(Redirect {
                hostname: Some("shop".into()),
                ..none.clone()
            }),
            (302, "http://shop:8080/stock/1?x=2".to_owned())
        );
        assert_eq!(
            location(Redirect {
                scheme: Some("https".into()),
                path: Some(PathModifier::ReplacePrefixMatch {
                    prefix: "/items".into()
                }),
                status_code: 301,
                ..none.clone()
            }),
            (301, "https://inventory/items/1?x=2".to_owned())
        );
        assert_eq!(
            location(Redirect {
                scheme: Some("https".into()),
                port: Some(443),
                ..none
            }),
            (302, "https://inventory/stock/1?x=2".to_owned())
        );
    }

    #[test]
    fn headers_are_removed_then_set_then_added() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-gone", HeaderValue::from_static("1"));
        let header = |name: &str, value: &str| mesh_api::route_filter::Header {
            name: name.into(),
            value: value.into(),
        };
        modify(
            &HeaderModifier {
                set: vec![header("x-a", "set")],
                add: vec![header("x-a", "added"), header("x-b", "b")],
                remove: vec!["x-gone".into()],
            },
            &mut headers,
        )
        .unwrap();
        let all: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["set", "added"]);
        assert_eq!(headers["x-b"], "b");
        assert!(!headers.contains_key("x-gone"));
    }
}
