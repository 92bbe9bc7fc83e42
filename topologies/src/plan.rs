//! What a cluster should be running: its Deployments' replicas as pods, each with the
//! command its image maps to and, when injection is on, a proxy. A pure function of the
//! cluster's objects, so the runtime only compares it with what runs.
//!
//! Like a ReplicaSet's pods, a pod's name carries a hash of everything it was made from
//! (the template, the injection decision, the namespace's annotations that matter): when
//! any of it changes, the runtime replaces the pod, as a rollout would.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use strait_api::labels::config as cfg;
use strait_controller::inject::{Decision, Request, decide};

use crate::topology::{Cluster, CommandLine, Topology};

/// One pod to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// Namespace.
    pub namespace: String,
    /// Pod name: `<deployment>-<hash>-<replica>`.
    pub name: String,
    /// The Deployment it belongs to.
    pub deployment: String,
    /// The template's labels.
    pub labels: BTreeMap<String, String>,
    /// The template's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its service account.
    pub service_account: String,
    /// The workload's command (program first; `strait` is this binary).
    pub command: CommandLine,
    /// Environment from the container's literal `env` values.
    pub env: Vec<(String, String)>,
    /// Container ports: (name, port).
    pub ports: Vec<(Option<String>, u16)>,
    /// Whether a proxy is injected.
    pub injected: bool,
    /// The hash in its name.
    pub hash: String,
}

impl PodPlan {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The value of a `config.linkerd.io/*` annotation.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Inbound ports whose traffic skips the proxy (`skip-inbound-ports`).
    pub fn skip_inbound(&self) -> &str {
        self.config(cfg::SKIP_INBOUND_PORTS).unwrap_or("")
    }

    /// Outbound ports whose traffic skips the proxy (`skip-outbound-ports`).
    pub fn skip_outbound(&self) -> &str {
        self.config(cfg::SKIP_OUTBOUND_PORTS).unwrap_or("")
    }
}

/// Why a Deployment runs no pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `namespace/name` of the Deployment.
    pub deployment: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deployment/{}: {}", self.deployment, self.message)
    }
}

/// The pods of `cluster` for these Deployments and Namespaces, and the Deployments that
/// cannot run (with why).
pub fn pods(
    topology: &Topology,
    cluster: &Cluster,
    deployments: &[Deployment],
    namespaces: &[Namespace],
) -> (Vec<PodPlan>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let ns_annotations: BTreeMap<&str, &BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.annotations.as_ref()?)))
        .collect();
    for d in deployments {
        let namespace = d.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = d.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let spec = &d.spec;
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        let template = &spec.template;
        let Some(pod_spec) = &template.spec else {
            problems.push(Problem {
                deployment: key,
                message: "spec.template.spec: expected a pod spec".into(),
            });
            continue;
        };
        let main = match pod_spec.containers.as_slice() {
            [one] => one,
            [] => {
                problems.push(Problem {
                    deployment: key,
                    message: "spec.template.spec.containers: expected one container".into(),
                });
                continue;
            }
            [first, ..] => {
                problems.push(Problem {
                    deployment: key.clone(),
                    message: format!(
                        "spec.template.spec.containers: local mode runs one container per pod; only {:?} runs",
                        first.name
                    ),
                });
                first
            }
        };
        let image = main.image.clone().unwrap_or_default();
        let Some(base) = topology.command_for(cluster, &image) else {
            problems.push(Problem {
                deployment: key,
                message: format!(
                    "container {:?}: image {image:?} has no command; add it under spec.images (or the cluster's images) in {}",
                    main.name,
                    topology.file.display()
                ),
            });
            continue;
        };
        let mut command = base.clone();
        command.extend(main.args.iter().flatten().cloned());
        let env: Vec<(String, String)> = main
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        let ports: Vec<(Option<String>, u16)> = main
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone(), u16::try_from(p.container_port).ok()?)))
            .collect();
        let ns_ann = ns_annotations.get(namespace.as_str()).copied();
        let injected = matches!(
            decide(
                Request::Admission,
                template.metadata.as_ref(),
                Some(pod_spec),
                ns_ann
            ),
            Decision::Inject { .. }
        );
        let meta = template.metadata.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        // The pod inherits the namespace's config annotations it does not set itself,
        // as the injector applies them.
        let mut annotations = meta.annotations.clone().unwrap_or_default();
        for (k, v) in ns_ann.into_iter().flatten() {
            if k.starts_with("config.linkerd.io/") || k.starts_with("config.alpha.linkerd.io/") {
                annotations.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let service_account = pod_spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let hash = {
            let basis = serde_json::json!({
                "template": template, "injected": injected, "annotations": annotations,
                "command": command,
            });
            short_hash(&serde_json::to_vec(&basis).expect("JSON values serialize"))
        };
        for i in 0..replicas {
            out.push(PodPlan {
                namespace: namespace.clone(),
                name: format!("{name}-{hash}-{i}"),
                deployment: name.clone(),
                labels: labels.clone(),
                annotations: annotations.clone(),
                service_account: service_account.clone(),
                command: command.clone(),
                env: env.clone(),
                ports: ports.clone(),
                injected,
                hash: hash.clone(),
            });
        }
    }
    out.sort_by_key(PodPlan::key);
    (out, problems)
}

/// Eight lowercase hex digits of FNV-1a over `bytes` (stable across runs and builds).
fn short_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

#[cfg(test)]
mod tests;
