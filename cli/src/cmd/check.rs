//! `strait check [--pre]`: Linkerd-style health checks of a local cluster (`--state-dir`)
//! or of the Kubernetes cluster in the kubeconfig.

use std::process::ExitCode;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use strait_api::store::kube::KubeStore;
use strait_api::{Kind, Store};
use strait_controller::check::{self, Check, Report, Status};

use super::LocalCluster;
use crate::{Global, exit};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn finish(checks: &[Check]) -> ExitCode {
    println!("{}", Report(checks));
    if checks.iter().any(|c| c.status == Status::Fail) {
        exit::code(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn result(category: &'static str, description: &str, outcome: Result<(), String>) -> Check {
    match outcome {
        Ok(()) => Check {
            category,
            description: description.into(),
            status: Status::Ok,
            hint: None,
        },
        Err(hint) => Check {
            category,
            description: description.into(),
            status: Status::Fail,
            hint: Some(hint),
        },
    }
}

/// Runs `check`.
pub fn check(g: &Global, pre: bool) -> ExitCode {
    let rt = super::runtime();
    match &g.state_dir {
        Some(dir) => local(g, dir, pre, &rt),
        None => kubernetes(pre, &rt),
    }
}

fn local(g: &Global, dir: &std::path::Path, pre: bool, rt: &tokio::runtime::Runtime) -> ExitCode {
    const CP: &str = "linkerd-control-plane";
    let mut checks = Vec::new();
    let cluster = super::open_local(g);
    if pre {
        checks.push(result(
            CP,
            "no control plane runs on this state directory yet",
            match &cluster {
                Ok(LocalCluster::Direct(_)) => Ok(()),
                Ok(LocalCluster::Api(_)) => Err(format!(
                    "a controller already serves {}; use it, or stop it before starting another",
                    dir.display()
                )),
                Err(_) => Err("the state directory cannot be opened (see the error above)".into()),
            },
        ));
        return finish(&checks);
    }
    let cluster = match cluster {
        Ok(LocalCluster::Api(c)) => {
            let version = rt.block_on(c.request(hyper::Method::GET, "/v1/version", Vec::new()));
            checks.push(result(
                CP,
                "control plane is running and answering",
                version.map(|_| ()).map_err(|e| e.to_string()),
            ));
            LocalCluster::Api(c)
        }
        Ok(direct @ LocalCluster::Direct(_)) => {
            checks.push(result(
                CP,
                "control plane is running and answering",
                Err(format!(
                    "no controller runs on {0}; start one: `strait --state-dir {0} controller`",
                    dir.display()
                )),
            ));
            direct
        }
        Err(code) => return code,
    };
    let idir = dir.join("identity");
    let read = |f: &str| std::fs::read(idir.join(f)).unwrap_or_default();
    checks.extend(check::identity(
        &read("ca.crt"),
        &idir.join("ca.crt").display().to_string(),
        &read("issuer.crt"),
        &read("issuer.key"),
        &idir.join("issuer.crt").display().to_string(),
        SystemTime::now(),
    ));
    match cluster.list(rt, Pod::info(), None, None) {
        Ok(objects) => {
            let pods: Vec<Pod> = objects.into_iter().filter_map(Pod::from_object).collect();
            checks.extend(check::proxies(&pods, VERSION));
        }
        Err(e) => checks.push(result("linkerd-data-plane", "can list meshed pods", Err(e))),
    }
    finish(&checks)
}

fn kubernetes(pre: bool, rt: &tokio::runtime::Runtime) -> ExitCode {
    const API: &str = "kubernetes-api";
    let client = match rt.block_on(kube::Client::try_default()) {
        Ok(c) => c,
        Err(e) => {
            return finish(&[result(
                API,
                "can initialize the client",
                Err(format!(
                    "{e}\ncheck KUBECONFIG, or pass --state-dir DIR to check a local cluster"
                )),
            )]);
        }
    };
    let store = KubeStore::new(client);
    let mut checks = vec![result(API, "can initialize the client", Ok(()))];
    let reachable = rt.block_on(store.list::<Namespace>(None));
    checks.push(result(
        API,
        "can query the Kubernetes API",
        reachable.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    ));
    let Ok(namespaces) = reachable else {
        return finish(&checks);
    };
    if pre {
        let installed = namespaces
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(strait_controller::install::NAMESPACE));
        checks.push(Check {
            category: "pre-kubernetes-setup",
            description: "control plane namespace does not already exist".into(),
            status: if installed { Status::Warn } else { Status::Ok },
            hint: installed.then(|| {
                "namespace linkerd exists: upgrade with `strait upgrade | kubectl apply -f -` instead".into()
            }),
        });
        return finish(&checks);
    }
    checks.extend(rt.block_on(check::installed(&store, VERSION, SystemTime::now())));
    finish(&checks)
}
