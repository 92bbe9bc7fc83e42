//! `strait inject` and `strait uninject`: add the proxy to the workloads of manifests, or
//! take it away, printing every object back (non-workloads unchanged) as YAML.
//!
//! Without `--manual`, `inject` marks each pod template `linkerd.io/inject: enabled` so the
//! cluster's webhook injects the pods; with it, the proxy is added here, by the same core
//! the webhook runs. Either way a summary line per object goes to stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use serde_json::Value;
use strait_api::kinds::{self, Object};
use strait_api::loader::{self, LoadErrors, LoadOptions, Source};
use strait_controller::inject::{self, InjectConfig, Mode, Namespace, Outcome, Skip, UninjectOutcome};
use strait_controller::install::{self, Values};
use strait_identity::TrustAnchors;

use super::ClusterStore;
use crate::Global;
use crate::exit;

/// Arguments of `inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// Files or directories of manifests (read recursively); `-` reads standard input.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Add the proxy now instead of marking workloads for the cluster's injector.
    #[arg(long)]
    pub manual: bool,
    /// With --manual: the trust anchors the proxies get, instead of the installed control
    /// plane's (read from --state-dir or the Kubernetes cluster).
    #[arg(long, value_name = "FILE")]
    pub identity_trust_anchors_file: Option<PathBuf>,
}

/// Arguments of `uninject`.
#[derive(Args, Debug)]
pub struct UninjectArgs {
    /// Files or directories of manifests (read recursively); `-` reads standard input.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
}

fn report(errors: &LoadErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    let n = errors.0.len();
    eprintln!(
        "{n} problem{} found; nothing was printed. Fix the fields named above and run the command again.",
        if n == 1 { "" } else { "s" }
    );
    exit::code(exit::FAILURE)
}

/// Reads and validates the manifests; the sources come back for the raw documents.
fn read(files: &[String]) -> Result<Vec<Source>, ExitCode> {
    // `linkerd inject DIR` reads sub-directories too.
    let sources = loader::read_sources(files, true, &mut std::io::stdin().lock()).map_err(|e| report(&e))?;
    loader::load(&sources, &LoadOptions::default()).map_err(|e| report(&e))?;
    Ok(sources)
}

/// Every document's objects, a `List` counting as its items, in order; `f` maps each.
fn map_documents(sources: &[Source], mut f: impl FnMut(Value) -> Value) -> Vec<Value> {
    let mut out = Vec::new();
    for src in sources {
        let docs = strait_api::yaml::parse(&src.text).expect("the loader parsed these documents");
        for doc in docs {
            match doc.value {
                Value::Null => {}
                Value::Object(mut m)
                    if m.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List"))
                        && m.get("items").is_some_and(Value::is_array) =>
                {
                    if let Some(Value::Array(items)) = m.remove("items") {
                        let items: Vec<Value> = items.into_iter().map(&mut f).collect();
                        m.insert("items".into(), Value::Array(items));
                    }
                    out.push(Value::Object(m));
                }
                v => out.push(f(v)),
            }
        }
    }
    out
}

/// The typed object of a raw document, when it is a workload (every workload kind has one
/// version, its storage version, so the document types as written).
fn workload(v: &Value) -> Option<Object> {
    let info = kinds::lookup(v.get("apiVersion")?.as_str()?, v.get("kind")?.as_str()?).ok()?;
    inject::WorkloadKind::of(info.id)?;
    Object::from_value(info.id, v.clone()).ok()
}

/// `deployment "myapp"`, as Linkerd's summary names objects.
fn label(v: &Value) -> String {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_ascii_lowercase();
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<no name>");
    format!("{kind} {name:?}")
}

/// Namespaces defined in the input, with their annotations: injection honours them as the
/// webhook would.
fn namespaces(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    map_documents(sources, |v| {
        if v.get("kind").and_then(Value::as_str) == Some("Namespace")
            && let Some(name) = v.pointer("/metadata/name").and_then(Value::as_str)
        {
            let annotations = v
                .pointer("/metadata/annotations")
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default();
            out.insert(name.to_string(), annotations);
        }
        v
    });
    out
}

/// The configuration proxies are injected with: given anchors over default values, or the
/// installed control plane's.
fn config(g: &Global, args: &InjectArgs) -> Result<InjectConfig, ExitCode> {
    if let Some(path) = &args.identity_trust_anchors_file {
        let anchors = TrustAnchors::load(path, SystemTime::now()).map_err(|e| {
            eprintln!("error: --identity-trust-anchors-file: {e}");
            exit::code(exit::FAILURE)
        })?;
        return Ok(InjectConfig::new(Values::default(), anchors.to_pem()));
    }
    let rt = super::runtime();
    let store = super::open_cluster(g, &rt).inspect_err(|_| {
        eprintln!(
            "`inject --manual` injects with the installed control plane's configuration; without a cluster, pass --identity-trust-anchors-file FILE."
        );
    })?;
    let installed = match &store {
        ClusterStore::Local(s) => rt.block_on(install::read_installed(s)),
        ClusterStore::Kube(s) => rt.block_on(install::read_installed(s)),
    };
    installed.map(|i| i.inject_config()).map_err(|e| {
        eprintln!("error: {e}");
        eprintln!("Without an installed control plane, pass --identity-trust-anchors-file FILE.");
        exit::code(exit::FAILURE)
    })
}

/// Runs `inject`.
pub fn inject(g: &Global, args: &InjectArgs) -> ExitCode {
    let sources = match read(&args.files) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let config = if args.manual {
        match config(g, args) {
            Ok(c) => Some(c),
            Err(code) => return code,
        }
    } else {
        None
    };
    let mode = match &config {
        Some(c) => Mode::Manual(c),
        None => Mode::Annotate,
    };
    let namespaces = namespaces(&sources);
    let mut summary = Vec::new();
    let out = map_documents(&sources, |v| {
        let Some(obj) = workload(&v) else {
            summary.push(format!("{} skipped: {}", label(&v), Skip::NotAWorkload));
            return v;
        };
        let ns = obj.meta().namespace.as_deref().and_then(|n| namespaces.get(n));
        let result = inject::inject(
            &obj,
            Namespace {
                name: None,
                annotations: ns,
            },
            mode,
        );
        for w in &result.warnings {
            summary.push(format!("warning: {}: {w}", label(&v)));
        }
        match result.outcome {
            // Annotated now or already: the webhook injects its pods, as Linkerd reports it.
            Outcome::Injected { .. } | Outcome::Annotated | Outcome::Skipped(Skip::AlreadyAnnotated(_)) => {
                summary.push(format!("{} injected", label(&v)));
            }
            Outcome::Skipped(skip) => summary.push(format!("{} skipped: {skip}", label(&v))),
        }
        result.object.to_value()
    });
    print!("{}", strait_api::yaml::to_yaml(&out));
    for line in summary {
        eprintln!("{line}");
    }
    ExitCode::SUCCESS
}

/// Runs `uninject`.
pub fn uninject(args: &UninjectArgs) -> ExitCode {
    let sources = match read(&args.files) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut summary = Vec::new();
    let mut errors = Vec::new();
    let out = map_documents(&sources, |v| {
        let Some(obj) = workload(&v) else {
            summary.push(format!("{} skipped: not a workload", label(&v)));
            return v;
        };
        let result = inject::uninject(&obj);
        match result.outcome {
            UninjectOutcome::Uninjected | UninjectOutcome::Stripped => {
                summary.push(format!("{} uninjected", label(&v)));
            }
            UninjectOutcome::NotInjected => summary.push(format!("{} skipped: not injected", label(&v))),
            UninjectOutcome::NotAWorkload => summary.push(format!("{} skipped: not a workload", label(&v))),
            UninjectOutcome::BadRecord(why) => errors.push(format!("{}: {why}", label(&v))),
        }
        result.object.to_value()
    });
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "Nothing was printed: remove the damaged annotation or re-create the manifest from its source."
        );
        return exit::code(exit::FAILURE);
    }
    print!("{}", strait_api::yaml::to_yaml(&out));
    for line in summary {
        eprintln!("{line}");
    }
    ExitCode::SUCCESS
}
