//! `strait install` (and `upgrade`): manifests for `kubectl apply`.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::pending;

/// Arguments of `install` and `upgrade`, as in `linkerd install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Print only the CustomResourceDefinitions.
    #[arg(long)]
    pub crds: bool,
    /// PEM file of the trust anchors (one or more certificates).
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors_file: Option<std::path::PathBuf>,
    /// PEM file of the identity issuer's certificate.
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_certificate_file: Option<std::path::PathBuf>,
    /// PEM file of the identity issuer's private key.
    #[arg(long, value_name = "FILE")]
    pub identity_issuer_key_file: Option<std::path::PathBuf>,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub identity_trust_domain: String,
    /// High availability: replicas and anti-affinity for the control plane.
    #[arg(long)]
    pub ha: bool,
    /// Override a value, e.g. `--set controllerReplicas=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Runs `install`.
pub fn install(args: &InstallArgs) -> ExitCode {
    if !args.crds {
        return pending::not_available(
            "install",
            3,
            "the control plane manifests (`install --crds` works now)",
        );
    }
    let crds: Vec<Value> = strait_api::mesh::crds()
        .iter()
        .map(|c| serde_json::to_value(c).expect("CRDs serialize"))
        .collect();
    print!("{}", strait_api::yaml::to_yaml(&crds));
    ExitCode::SUCCESS
}
