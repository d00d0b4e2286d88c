//! Asking the API server whether someone holds a right: the caller itself
//! (SelfSubjectAccessReview) or another user (SubjectAccessReview).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::outcome::{CallError, bounded};
use crate::access::Right;

/// Whom a review is about.
pub(super) enum Subject<'a> {
    /// The caller.
    Caller,
    /// A user and its groups.
    User { name: &'a str, groups: &'a [String] },
}

/// Whether `subject` holds `right`.
pub(super) async fn allowed(
    client: &kube::Client,
    subject: &Subject<'_>,
    right: &Right,
) -> Result<bool, CallError> {
    let attributes = ResourceAttributes {
        verb: Some(right.verb.clone()),
        group: Some(right.group.clone()),
        resource: Some(right.resource.clone()),
        subresource: right.subresource.clone(),
        namespace: right.namespace.clone(),
        name: right.name.clone(),
        ..ResourceAttributes::default()
    };
    let status = match subject {
        Subject::Caller => {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(attributes),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            bounded(
                Api::<SelfSubjectAccessReview>::all(client.clone())
                    .create(&PostParams::default(), &review),
            )
            .await?
            .status
        }
        Subject::User { name, groups } => {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some((*name).to_owned()),
                    groups: Some(groups.to_vec()),
                    resource_attributes: Some(attributes),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            };
            bounded(
                Api::<SubjectAccessReview>::all(client.clone())
                    .create(&PostParams::default(), &review),
            )
            .await?
            .status
        }
    };
    Ok(status.is_some_and(|s| s.allowed))
}

/// The rights of `wanted` that `subject` lacks, in order.
pub(super) async fn missing(
    client: &kube::Client,
    subject: &Subject<'_>,
    wanted: &[Right],
) -> Result<Vec<Right>, CallError> {
    let mut missing = Vec::new();
    for right in wanted {
        if !allowed(client, subject, right).await? {
            missing.push(right.clone());
        }
    }
    Ok(missing)
}
