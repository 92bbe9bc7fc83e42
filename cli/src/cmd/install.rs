//! `strait install`, `upgrade` and `uninstall`: manifests for `kubectl apply` / `delete`.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use serde_json::Value;
use strait_api::kinds::Object;
use strait_controller::install::{self, IdentityFiles, InstallError, Options};

use super::ClusterStore;
use crate::Global;
use crate::exit;

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
    /// The mesh's trust domain [default: cluster.local; upgrade keeps the installed one].
    #[arg(long, value_name = "DOMAIN")]
    pub identity_trust_domain: Option<String>,
    /// High availability: replicas and anti-affinity for the control plane.
    #[arg(long)]
    pub ha: bool,
    /// Override a value, e.g. `--set controllerReplicas=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl InstallArgs {
    fn options(&self) -> Result<Options, InstallError> {
        Ok(Options {
            ha: self.ha,
            set: self.set.clone(),
            trust_domain: self.identity_trust_domain.clone(),
            identity_files: IdentityFiles::from_flags(
                self.identity_trust_anchors_file.clone(),
                self.identity_issuer_certificate_file.clone(),
                self.identity_issuer_key_file.clone(),
            )?,
        })
    }
}

fn print_objects(objects: &[Object]) {
    let values: Vec<Value> = objects.iter().map(Object::to_value).collect();
    print!("{}", strait_api::yaml::to_yaml(&values));
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    eprintln!("Nothing was printed.");
    exit::code(exit::FAILURE)
}

/// Runs `install`.
pub fn install(args: &InstallArgs) -> ExitCode {
    if args.crds {
        print_objects(&install::crds());
        return ExitCode::SUCCESS;
    }
    let rendered = match args
        .options()
        .and_then(|o| install::install(&o, SystemTime::now()))
    {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    print_objects(&rendered.objects);
    eprintln!(
        "Control plane manifests printed ({} objects). Apply the CRDs first: `strait install --crds | kubectl apply -f -`, then `strait install | kubectl apply -f -`.",
        rendered.objects.len()
    );
    ExitCode::SUCCESS
}

/// Runs `upgrade`: reads the installed control plane (`--state-dir`, or the Kubernetes API)
/// and prints it re-rendered with the flags applied.
pub fn upgrade(g: &Global, args: &InstallArgs) -> ExitCode {
    if args.crds {
        print_objects(&install::crds());
        return ExitCode::SUCCESS;
    }
    let options = match args.options() {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let rt = super::runtime();
    let store = match super::open_cluster(g, &rt) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let installed = match &store {
        ClusterStore::Local(s) => rt.block_on(install::read_installed(s)),
        ClusterStore::Kube(s) => rt.block_on(install::read_installed(s)),
    };
    let rendered = match installed.and_then(|i| install::upgrade(&i, &options, SystemTime::now())) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    print_objects(&rendered.objects);
    ExitCode::SUCCESS
}

/// Runs `uninstall`.
pub fn uninstall() -> ExitCode {
    match install::uninstall(SystemTime::now()) {
        Ok(objects) => {
            print!("{}", strait_api::yaml::to_yaml(&objects));
            eprintln!(
                "Every object of the control plane printed, CRDs last; delete them with `kubectl delete --ignore-not-found -f -`."
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
