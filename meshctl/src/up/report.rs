//! What `meshctl up` prints once the mesh runs: every instance's addresses, and where to look.

use std::fmt::Write as _;

use super::config::TracingSpec;
use super::jaeger::{self, JaegerSpec};
use super::plan::{ControlPlaneAddrs, Gateway, Instance, RunDir};

/// The table of instances and the gateway, and the pointers (the gateway's URL, control plane,
/// traces, Prometheus).
pub(super) fn render(
    instances: &[Instance],
    gateway: &Gateway,
    cp: ControlPlaneAddrs,
    tracing: Option<&TracingSpec>,
    jaeger: Option<&JaegerSpec>,
    run_dir: &RunDir,
) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        ["SERVICE", "INSTANCE", "APP", "SIDECAR ADMIN", "METRICS"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for i in instances {
        rows.push(vec![
            i.service.clone(),
            i.name.clone(),
            i.app_url(),
            i.admin_url(),
            i.metrics_url(),
        ]);
    }
    rows.push(vec![
        Gateway::SERVICE.to_owned(),
        Gateway::SERVICE.to_owned(),
        gateway.url(),
        gateway.admin_url(),
        format!("{}/metrics", gateway.admin_url()),
    ]);
    let mut out = String::new();
    crate::table::write(&mut out, &rows);
    out.push('\n');
    let _ = writeln!(
        out,
        "Shop           {}/   <- open this (the gateway, in front of the storefront)",
        gateway.url()
    );
    let status = if cp.admin.to_string() == mesh_control_plane::DEFAULT_ADMIN {
        "meshctl status".to_owned()
    } else {
        format!("meshctl status --admin {}", cp.admin)
    };
    let _ = writeln!(
        out,
        "Control plane  api {}  admin http://{}   ({status})",
        cp.api, cp.admin
    );
    match (tracing, jaeger) {
        (Some(t), Some(j)) => {
            let _ = writeln!(
                out,
                "Traces         Jaeger at {}/   (OTLP {} to {}; log {})",
                j.url(),
                t.protocol,
                t.otlp_endpoint,
                run_dir.log("jaeger").display()
            );
        }
        (Some(t), None) => {
            // Built but not started: the user said --no-jaeger.
            let why = match jaeger::find_binary() {
                Some(_) => "Jaeger is built but was not started (--no-jaeger)".to_owned(),
                None => jaeger::how_to_build(),
            };
            let _ = writeln!(
                out,
                "Traces         OTLP {} to {}; nothing started there.\n               {why}",
                t.protocol, t.otlp_endpoint,
            );
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "Traces         not exported (no tracing in the demo file)"
            );
        }
    }
    let admin_flag = if cp.admin.to_string() == mesh_control_plane::DEFAULT_ADMIN {
        String::new()
    } else {
        format!(" --admin {}", cp.admin)
    };
    let _ = writeln!(
        out,
        "Views          meshctl stat{admin_flag}   meshctl tap orders{admin_flag}   meshctl dashboard{admin_flag}"
    );
    let _ = writeln!(
        out,
        "Prometheus     prometheus --config.file={}",
        run_dir.prometheus().display()
    );
    let _ = writeln!(out, "Logs           {}", run_dir.logs().display());
    let run_dir_arg = format!("--run-dir {}", run_dir.root.display());
    let _ = writeln!(out, "Load           meshctl loadgen {run_dir_arg}");
    let _ = writeln!(
        out,
        "Faults         meshctl fault payments --error-rate 0.3 {run_dir_arg}   (--clear to undo)"
    );
    out
}
