//! Who may have a service's certificate: `Identity.Certify`'s token checked by the mode's
//! authority. Local mode reads the service's join token from the state directory; Kubernetes
//! mode has the API server review the pod's projected service-account token, and the service
//! account must be the service, in the mesh's namespace.

use tonic::Status;

use crate::kubernetes::{ReviewError, TokenReviewer};
use crate::log_limit::escaped;
use crate::tokens::Tokens;

/// Checks the token of a certificate request.
#[derive(Clone, Debug)]
pub(crate) enum Authenticator {
    /// Join tokens, `tokens/<service>` in the state directory.
    JoinTokens(Tokens),
    /// Projected service-account tokens, reviewed by the API server.
    TokenReview(Box<TokenReviewer>),
}

/// Why a certificate request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Local mode: unknown service, or not its join token.
    #[error("the token is not the join token of service \"{service}\"")]
    JoinToken {
        /// The service asked for (escaped and cut short for messages).
        service: String,
    },
    /// The API server did not accept the token for the audience.
    #[error(transparent)]
    Review(ReviewError),
    /// The token's service account is of another namespace than the mesh's.
    #[error(
        "the token's service account {namespace}/{name} is not in the mesh's namespace {mesh:?}"
    )]
    OtherNamespace {
        /// The service account's namespace.
        namespace: String,
        /// The service account's name.
        name: String,
        /// The mesh's namespace.
        mesh: String,
    },
    /// The token's service account is not the service asked for.
    #[error(
        "the token is of service account {account:?}, not \"{service}\": a workload gets only its own service account's identity"
    )]
    OtherServiceAccount {
        /// The token's service account.
        account: String,
        /// The service asked for (escaped and cut short for messages).
        service: String,
    },
    /// The service account is the service asked for, but no such service is declared.
    #[error("service \"{service}\" is not declared: no MeshService of that name in {namespace:?}")]
    Undeclared {
        /// The service asked for (escaped and cut short for messages).
        service: String,
        /// The mesh's namespace.
        namespace: String,
    },
}

impl Refused {
    /// The `reason` label of `certificates_refused`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::JoinToken { .. } | Self::Review(ReviewError::NotAuthenticated { .. }) => {
                "unauthenticated"
            }
            Self::Review(ReviewError::WrongAudience { .. }) => "wrong_audience",
            Self::Review(ReviewError::NotServiceAccount { .. }) => "not_service_account",
            Self::Review(ReviewError::Unavailable(_)) => "unavailable",
            Self::OtherNamespace { .. } => "other_namespace",
            Self::OtherServiceAccount { .. } => "other_service_account",
            Self::Undeclared { .. } => "undeclared",
        }
    }

    /// The gRPC status the caller gets: unauthenticated for a token that proves nobody,
    /// permission denied for one that proves someone else, unavailable when the cluster
    /// cannot say.
    pub(crate) fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Self::JoinToken { .. }
            | Self::Review(
                ReviewError::NotAuthenticated { .. } | ReviewError::WrongAudience { .. },
            ) => Status::unauthenticated(message),
            Self::Review(ReviewError::Unavailable(_)) => Status::unavailable(message),
            Self::Review(ReviewError::NotServiceAccount { .. })
            | Self::OtherNamespace { .. }
            | Self::OtherServiceAccount { .. }
            | Self::Undeclared { .. } => Status::permission_denied(message),
        }
    }
}

impl Authenticator {
    /// The join tokens, in local mode.
    pub(crate) fn join_tokens(&self) -> Option<&Tokens> {
        match self {
            Self::JoinTokens(tokens) => Some(tokens),
            Self::TokenReview(_) => None,
        }
    }

    /// Whether `token` entitles its bearer to `service`'s identity in `namespace`
    /// (`declared`: whether the configuration declares the service).
    pub(crate) async fn check(
        &self,
        service: &str,
        declared: bool,
        namespace: &str,
        token: &str,
    ) -> Result<(), Refused> {
        match self {
            Self::JoinTokens(tokens) => {
                if declared && tokens.check(service, token) {
                    Ok(())
                } else {
                    Err(Refused::JoinToken {
                        service: escaped(service),
                    })
                }
            }
            Self::TokenReview(reviewer) => {
                let account = reviewer
                    .review(token.trim())
                    .await
                    .map_err(Refused::Review)?;
                if account.namespace != namespace {
                    return Err(Refused::OtherNamespace {
                        namespace: account.namespace,
                        name: account.name,
                        mesh: namespace.to_owned(),
                    });
                }
                if account.name != service {
                    return Err(Refused::OtherServiceAccount {
                        account: account.name,
                        service: escaped(service),
                    });
                }
                if !declared {
                    return Err(Refused::Undeclared {
                        service: escaped(service),
                        namespace: namespace.to_owned(),
                    });
                }
                Ok(())
            }
        }
    }
}
