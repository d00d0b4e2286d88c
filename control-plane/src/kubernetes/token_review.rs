//! Workload identity from the cluster: a sidecar presents its pod's projected service-account
//! token, and the API server (TokenReview, `authentication.k8s.io/v1`) says whether it is valid,
//! for whom, and for which audiences. The control plane never checks a token's signature
//! itself: the API server knows its signing keys, and whether the pod, Secret or ServiceAccount
//! the token is bound to still exists.
//!
//! There is no cache of reviews: each sidecar presents its own token, and only at a renewal
//! (60 to 70% into a certificate's life), so a cache would hardly ever be hit, while it would
//! keep accepting the token of a deleted pod for as long as an entry lived. The per-caller rates
//! of `api.rate_limits` bound the reviews the control plane asks for.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

/// The longest the API server may take to review a token.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of a service account's user name: `system:serviceaccount:<namespace>:<name>`.
const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:";

/// Reviews tokens with the API server, for one audience.
#[derive(Clone)]
pub(crate) struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The service account a reviewed token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    /// Its namespace.
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
}

/// Why a token is not a valid service-account token for the audience.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReviewError {
    /// The API server did not authenticate the token (invalid, expired, or bound to an object
    /// that is gone).
    #[error("the token is not authenticated by the cluster: {reason}")]
    NotAuthenticated {
        /// The API server's reason.
        reason: String,
    },
    /// The token was not issued for the control plane's audience.
    #[error("the token is not for audience {expected:?} (it is for {presented:?})")]
    WrongAudience {
        /// The audience the control plane accepts.
        expected: String,
        /// The audiences the token is for, as far as can be told.
        presented: Vec<String>,
    },
    /// The token authenticates a user that is not a service account.
    #[error("the token is of user {user:?}, not of a service account")]
    NotServiceAccount {
        /// The user name the API server returned.
        user: String,
    },
    /// The API server could not be asked, or did not answer.
    #[error("the cluster cannot review the token now: {0}")]
    Unavailable(String),
}

impl TokenReviewer {
    /// A reviewer asking the API server `client` talks to, for tokens of `audience`.
    pub(crate) fn new(client: kube::Client, audience: &str) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.to_owned(),
        }
    }

    /// The service account `token` belongs to, if the API server authenticates it for the
    /// audience.
    pub(crate) async fn review(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        if token.is_empty() {
            return Err(ReviewError::NotAuthenticated {
                reason: "the token is empty".to_owned(),
            });
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            ReviewError::Unavailable(format!(
                "the API server did not answer the TokenReview within {REVIEW_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| ReviewError::Unavailable(format!("TokenReview: {e}")))?;
        verdict(&self.audience, token, answer.status.unwrap_or_default())
    }
}

/// The API server's answer about `token`, checked against `audience`.
fn verdict(
    audience: &str,
    token: &str,
    status: TokenReviewStatus,
) -> Result<ServiceAccount, ReviewError> {
    let wrong_audience = |presented| ReviewError::WrongAudience {
        expected: audience.to_owned(),
        presented,
    };
    if status.authenticated != Some(true) {
        // A token for another audience is refused as unauthenticated; say so plainly when the
        // token's own (unverified) claims show it.
        if let Some(presented) = claimed_audiences(token)
            && !presented.iter().any(|a| a == audience)
        {
            return Err(wrong_audience(presented));
        }
        return Err(ReviewError::NotAuthenticated {
            reason: status.error.unwrap_or_else(|| "no reason given".to_owned()),
        });
    }
    // An authenticator that ignores audiences answers without ours: not for us.
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(wrong_audience(audiences));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account(&user).ok_or(ReviewError::NotServiceAccount { user })
}

/// `system:serviceaccount:<namespace>:<name>` as its parts.
fn service_account(user: &str) -> Option<ServiceAccount> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_USER)?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// The `aud` claim of a JWT, read without checking the signature: only to explain a refusal
/// the API server already made, never to accept anything.
fn claimed_audiences(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    match claims.get("aud")? {
        serde_json::Value::String(one) => Some(vec![one.clone()]),
        serde_json::Value::Array(many) => {
            many.iter().map(|a| a.as_str().map(str::to_owned)).collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users_are_split_into_namespace_and_name() {
        assert_eq!(
            service_account("system:serviceaccount:default:orders"),
            Some(ServiceAccount {
                namespace: "default".into(),
                name: "orders".into()
            })
        );
        for user in [
            "admin",
            "system:serviceaccount:default",
            "system:serviceaccount::orders",
            "system:serviceaccount:default:",
            "system:serviceaccount:default:orders:extra",
            "system:node:orders",
        ] {
            assert_eq!(service_account(user), None, "{user}");
        }
    }

    fn status(authenticated: bool, audiences: &[&str], user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(k8s_openapi::api::authentication::v1::UserInfo {
                username: Some(user.to_owned()),
                ..Default::default()
            }),
            error: (!authenticated).then(|| "invalid bearer token".to_owned()),
        }
    }

    #[test]
    fn only_an_authenticated_service_account_for_the_audience_passes() {
        let orders = "system:serviceaccount:default:orders";
        assert_eq!(
            verdict("mesh.local", "t", status(true, &["mesh.local"], orders)).unwrap(),
            ServiceAccount {
                namespace: "default".into(),
                name: "orders".into()
            }
        );
        let err = verdict("mesh.local", "t", status(false, &[], orders)).unwrap_err();
        assert!(
            matches!(&err, ReviewError::NotAuthenticated { reason } if reason == "invalid bearer token"),
            "{err}"
        );
        // Authenticated, but not for our audience (an authenticator that ignores audiences).
        let err = verdict("mesh.local", "t", status(true, &["api"], orders)).unwrap_err();
        assert!(
            matches!(&err, ReviewError::WrongAudience { presented, .. } if presented == &["api"]),
            "{err}"
        );
        let err = verdict("mesh.local", "t", status(true, &["mesh.local"], "alice")).unwrap_err();
        assert!(
            matches!(&err, ReviewError::NotServiceAccount { user } if user == "alice"),
            "{err}"
        );
    }

    #[test]
    fn the_claimed_audience_is_read_from_the_payload_only() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = |payload: &str| format!("{}.{}.sig", b64("{}"), b64(payload));
        assert_eq!(
            claimed_audiences(&token(r#"{"aud":["a","b"]}"#)),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            claimed_audiences(&token(r#"{"aud":"a"}"#)),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(claimed_audiences(&token(r#"{"sub":"x"}"#)), None);
        assert_eq!(claimed_audiences("garbage"), None);
        assert_eq!(claimed_audiences("a.!!!.c"), None);
    }
}
