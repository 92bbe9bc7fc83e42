//! The proxy injector: one implementation behind `strait inject`, `strait uninject` and
//! the admission webhook.
//!
//! The core is pure. [`decide`] says whether a pod template gets a proxy (and why not);
//! [`inject`] turns a workload into its injected form — Linkerd's `linkerd-init` and
//! `linkerd-proxy` containers, volumes, labels and annotations, configured by the install
//! values and the `config.linkerd.io/*` annotations — and [`uninject`] gives the original
//! back. The webhook ([`webhook`]) decodes an AdmissionReview, injects the pod with the same
//! core and answers with the JSON Patch between the two ([`patch`]); [`server`] serves it
//! over HTTPS.

pub mod config;
pub mod containers;
pub mod decide;
pub mod patch;
pub mod server;
pub mod webhook;
pub mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_api::kinds::Object;
use strait_api::labels;

pub use config::{CONTROL_PLANE_NAMESPACE, InjectConfig};
pub use decide::{Decision, Request, Skip, decide};
pub use workload::{RECORD, WorkloadKind};

use config::{Annotations, Settings};
use workload::{Edit, Undo};

/// How to inject, and with what.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    /// `strait inject`: annotate pod templates `linkerd.io/inject: enabled`.
    Annotate,
    /// `strait inject --manual`: add the proxy now.
    Manual(&'a InjectConfig),
    /// The admission webhook: add the proxy when the pod or its namespace asks for it.
    Admission(&'a InjectConfig),
}

impl Mode<'_> {
    fn request(&self) -> Request {
        match self {
            Mode::Annotate => Request::Annotate,
            Mode::Manual(_) => Request::Manual,
            Mode::Admission(_) => Request::Admission,
        }
    }
}

/// What is known of a workload's namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct Namespace<'a> {
    /// Its name, when the object itself does not say (an admission request's namespace).
    pub name: Option<&'a str>,
    /// Its annotations, when known.
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

/// The result of [`inject`].
#[derive(Clone, Debug)]
pub struct Injection {
    /// The object, injected or unchanged.
    pub object: Object,
    /// What happened.
    pub outcome: Outcome,
    /// Annotations whose values were ignored, each with what was expected.
    pub warnings: Vec<String>,
}

/// What [`inject`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proxy was added.
    Injected {
        /// In ingress mode.
        ingress: bool,
    },
    /// `linkerd.io/inject: enabled` was added.
    Annotated,
    /// Nothing was changed.
    Skipped(Skip),
}

/// The result of [`uninject`].
#[derive(Clone, Debug)]
pub struct Uninjection {
    /// The object, uninjected or unchanged.
    pub object: Object,
    /// What happened.
    pub outcome: UninjectOutcome,
}

/// What [`uninject`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UninjectOutcome {
    /// What injection changed was undone exactly.
    Uninjected,
    /// Injected by something that left no record (Linkerd): proxy, init container, volumes
    /// and every `linkerd.io` label and annotation removed, as `linkerd uninject` does.
    Stripped,
    /// Nothing injected to remove.
    NotInjected,
    /// Not a workload.
    NotAWorkload,
    /// The injection record is unreadable; nothing was changed.
    BadRecord(String),
}

/// `created-by` of what this build injects.
fn created_by(request: Request) -> String {
    let who = match request {
        Request::Admission => "proxy-injector",
        Request::Annotate | Request::Manual => "cli",
    };
    format!("strait/{who} {}", crate::install::values::VERSION)
}

/// Injects (or annotates) one object. Objects without a pod template come back unchanged,
/// with [`Skip::NotAWorkload`].
pub fn inject(obj: &Object, namespace: Namespace<'_>, mode: Mode<'_>) -> Injection {
    let unchanged = |skip: Skip, warnings: Vec<String>| Injection {
        object: obj.clone(),
        outcome: Outcome::Skipped(skip),
        warnings,
    };
    let Some(kind) = WorkloadKind::of(obj.kind_id()) else {
        return unchanged(Skip::NotAWorkload, Vec::new());
    };
    let Some((meta, spec)) = workload::template(obj) else {
        return unchanged(Skip::NotAWorkload, Vec::new());
    };
    let decision = decide(mode.request(), meta, spec, namespace.annotations);
    let empty = BTreeMap::new();
    let pod_annotations = meta.and_then(|m| m.annotations.as_ref()).unwrap_or(&empty);
    let (edit, outcome, warnings) = match (decision, mode) {
        (Decision::Skip(skip), _) => return unchanged(skip, Vec::new()),
        (Decision::Annotate, _) => {
            let edit = Edit {
                annotations: [(labels::INJECT.to_string(), labels::INJECT_ENABLED.to_string())].into(),
                ..Edit::default()
            };
            (edit, Outcome::Annotated, Vec::new())
        }
        (Decision::Inject { ingress }, Mode::Manual(config) | Mode::Admission(config)) => {
            let mut annotations = Annotations::new(pod_annotations, namespace.annotations);
            let settings = Settings::resolve(config, &mut annotations, ingress);
            let spec = spec.expect("decide injects only templates with a spec");
            let owner = owner(obj, kind);
            let ns = obj
                .meta()
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(namespace.name);
            let mut edit = proxy_edit(
                config,
                &settings,
                mode.request(),
                pod_annotations,
                spec,
                owner,
                ns,
            );
            // As Linkerd's injector does, a namespace's opaque ports go onto its pods:
            // discovery reads them off the pod, and must agree with the proxy's inbound.
            if let Some(v) = namespace_opaque_ports(pod_annotations, namespace.annotations) {
                edit.annotations
                    .insert(labels::config::OPAQUE_PORTS.to_string(), v.to_string());
            }
            (edit, Outcome::Injected { ingress }, annotations.into_warnings())
        }
        (Decision::Inject { .. }, Mode::Annotate) => unreachable!("annotating never decides to inject"),
    };
    let mut object = obj.clone();
    workload::with_template(&mut object, |meta, spec| {
        if let Some(spec) = spec {
            workload::apply(meta, spec, edit);
        }
    });
    Injection {
        object,
        outcome,
        warnings,
    }
}

/// The namespace's `config.linkerd.io/opaque-ports`, when an object without its own is
/// to take it (Linkerd's injector copies it onto pods and Services).
pub fn namespace_opaque_ports<'a>(
    own: &BTreeMap<String, String>,
    namespace: Option<&'a BTreeMap<String, String>>,
) -> Option<&'a str> {
    if own.contains_key(labels::config::OPAQUE_PORTS) {
        return None;
    }
    namespace?.get(labels::config::OPAQUE_PORTS).map(String::as_str)
}

/// Local mode's stand-in for the webhook's admission of Services: each Service of
/// `objects` without its own `config.linkerd.io/opaque-ports` takes its namespace's, the
/// namespace as `objects` define it, else as `store` has it. (Local pods inherit the
/// namespace's config annotations when the runtime plans them.)
///
/// Every apply is admitted, not only creations as Linkerd's webhook is: the local store
/// replaces objects whole, where `kubectl apply` merges and keeps what the webhook added,
/// so admitting only creations would strip the annotation on the next apply of the same
/// manifest. A Service opts out with its own annotation (an empty value marks no port).
pub async fn admit_local_services<S: strait_api::Store>(
    store: &S,
    objects: &mut [Object],
) -> Result<(), strait_api::StoreError> {
    let batch: BTreeMap<String, BTreeMap<String, String>> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Namespace(n) => Some((
                n.metadata.name.clone()?,
                n.metadata.annotations.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    let mut stored: BTreeMap<String, Option<BTreeMap<String, String>>> = BTreeMap::new();
    for o in objects.iter_mut() {
        let Object::Service(svc) = o else { continue };
        let Some(ns) = svc.metadata.namespace.clone() else {
            continue;
        };
        let own = svc.metadata.annotations.clone().unwrap_or_default();
        if own.contains_key(labels::config::OPAQUE_PORTS) {
            continue;
        }
        let ns_annotations = match batch.get(&ns) {
            Some(a) => Some(a.clone()),
            None => {
                if !stored.contains_key(&ns) {
                    let got = store
                        .get::<k8s_openapi::api::core::v1::Namespace>("", &ns)
                        .await?
                        .and_then(|n| n.metadata.annotations);
                    stored.insert(ns.clone(), got);
                }
                stored[&ns].clone()
            }
        };
        if let Some(ports) = namespace_opaque_ports(&own, ns_annotations.as_ref()) {
            svc.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(labels::config::OPAQUE_PORTS.into(), ports.to_string());
        }
    }
    Ok(())
}

/// The workload whose name the pods carry (`linkerd.io/proxy-deployment: myapp`).
fn owner(obj: &Object, kind: WorkloadKind) -> Option<(WorkloadKind, String)> {
    match kind {
        WorkloadKind::Pod => workload::pod_owner(obj.meta()),
        _ => obj.meta().name.clone().map(|n| (kind, n)),
    }
}

fn proxy_edit(
    config: &InjectConfig,
    s: &Settings,
    request: Request,
    pod_annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
    owner: Option<(WorkloadKind, String)>,
    namespace: Option<&str>,
) -> Edit {
    let mut app_ports: Vec<i32> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| p.container_port)
        .collect();
    app_ports.sort_unstable();
    app_ports.dedup();
    let mut annotations = BTreeMap::new();
    // Linkerd keeps an existing created-by: it names whoever made the workload.
    if !pod_annotations.contains_key(labels::INJECTED_BY) {
        annotations.insert(labels::INJECTED_BY.to_string(), created_by(request));
    }
    annotations.insert(labels::PROXY_VERSION.to_string(), s.version.clone());
    annotations.insert(labels::TRUST_ROOT_SHA256.to_string(), config.trust_root_sha256());
    let mut pod_labels = BTreeMap::new();
    pod_labels.insert(
        labels::CONTROL_PLANE_NS_LABEL.to_string(),
        config.namespace.clone(),
    );
    if let Some(ns) = namespace {
        pod_labels.insert(labels::WORKLOAD_NS_LABEL.to_string(), ns.to_string());
    }
    if let Some((label, name)) = owner.and_then(|(k, n)| k.proxy_label().map(|l| (l, n))) {
        pod_labels.insert(label.to_string(), name);
    }
    Edit {
        annotations,
        labels: pod_labels,
        init_container: Some(containers::init(s)),
        proxy: Some((containers::proxy(config, s, &app_ports), s.await_proxy)),
        volumes: containers::volumes(),
    }
}

/// Undoes [`inject`] on one object: `uninject(inject(x)) == x`.
pub fn uninject(obj: &Object) -> Uninjection {
    let mut object = obj.clone();
    let undo = workload::with_template(&mut object, |meta: &mut Option<ObjectMeta>, spec| {
        workload::undo(meta, spec)
    });
    let outcome = match undo {
        None => UninjectOutcome::NotAWorkload,
        Some(Undo::Restored) => UninjectOutcome::Uninjected,
        Some(Undo::Stripped) => UninjectOutcome::Stripped,
        Some(Undo::NotInjected) => UninjectOutcome::NotInjected,
        Some(Undo::BadRecord(why)) => {
            return Uninjection {
                object: obj.clone(),
                outcome: UninjectOutcome::BadRecord(why),
            };
        }
    };
    if matches!(outcome, UninjectOutcome::NotInjected) {
        object = obj.clone();
    }
    Uninjection { object, outcome }
}
