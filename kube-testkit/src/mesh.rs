//! The mesh's own objects in a test cluster, as `meshctl install` makes them for the control
//! plane to run against: its namespace, the MeshService CRD and the control plane's RBAC,
//! and a kubeconfig that authenticates as its ServiceAccount, so a test exercises exactly the
//! rights an install grants.

use std::path::PathBuf;

use crate::cluster::TestCluster;
use crate::error::ClusterError;

/// Installs the control plane's namespace, the MeshService CRD and the control plane's RBAC;
/// returns a kubeconfig authenticating as the control plane's ServiceAccount.
pub async fn install_control_plane_access(cluster: &TestCluster) -> Result<PathBuf, ClusterError> {
    let admin = cluster.admin()?;
    let mut objects = vec![
        mesh_kube::objects::namespace(),
        mesh_kube::objects::mesh_service_crd(),
    ];
    objects.extend(mesh_kube::objects::control_plane_rbac());
    crate::apply::apply_all(&admin, &objects).await;
    let groups = mesh_kube::names::control_plane_groups();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    cluster.kubeconfig_as(&mesh_kube::names::control_plane_user(), &groups)
}
