//! `strait check`: health checks of a control plane and its proxies, in Linkerd's ✓/‼/×
//! style. Each check is a pure function of what it reads, returning what it found and,
//! when something is wrong, what to do about it.

use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use strait_api::Store;
use strait_identity::{Issuer, TrustAnchors};

/// Certificates expiring sooner than this get a warning, as in Linkerd.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(60 * 24 * 3600);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The group it belongs to (`linkerd-identity`).
    pub category: &'static str,
    /// What was checked, phrased as the healthy state.
    pub description: String,
    /// The result.
    pub status: Status,
    /// For a warning or failure: what was found and what to do.
    pub hint: Option<String>,
}

impl Check {
    fn ok(category: &'static str, description: impl Into<String>) -> Self {
        Self {
            category,
            description: description.into(),
            status: Status::Ok,
            hint: None,
        }
    }
    fn warn(category: &'static str, description: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            category,
            description: description.into(),
            status: Status::Warn,
            hint: Some(hint.into()),
        }
    }
    fn fail(category: &'static str, description: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            category,
            description: description.into(),
            status: Status::Fail,
            hint: Some(hint.into()),
        }
    }
}

/// Renders results grouped by category, as `linkerd check` does; the last line says
/// whether everything passed.
pub struct Report<'a>(pub &'a [Check]);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut category = "";
        for c in self.0 {
            if c.category != category {
                if !category.is_empty() {
                    writeln!(f)?;
                }
                category = c.category;
                writeln!(f, "{category}\n{}", "-".repeat(category.len()))?;
            }
            let mark = match c.status {
                Status::Ok => "√",
                Status::Warn => "‼",
                Status::Fail => "×",
            };
            writeln!(f, "{mark} {}", c.description)?;
            if let Some(h) = &c.hint {
                for line in h.lines() {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        let failed = self.0.iter().any(|c| c.status == Status::Fail);
        write!(f, "\nStatus check results are {}", if failed { "×" } else { "√" })
    }
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

const IDENTITY: &str = "linkerd-identity";

/// The identity checks: anchors and issuer valid, chained, and not about to expire.
pub fn identity(
    anchors_pem: &[u8],
    anchors_source: &str,
    issuer_crt: &[u8],
    issuer_key: &[u8],
    issuer_source: &str,
    now: SystemTime,
) -> Vec<Check> {
    let mut out = Vec::new();
    let anchors = match TrustAnchors::from_pem(anchors_pem, anchors_source, now) {
        Ok(a) => {
            out.push(Check::ok(
                IDENTITY,
                "trust anchors are valid CA certificates within their validity period",
            ));
            a
        }
        Err(e) => {
            out.push(Check::fail(
                IDENTITY,
                "trust anchors are valid CA certificates within their validity period",
                format!("{e}\nrotate the trust anchors: `strait upgrade --identity-trust-anchors-file …`"),
            ));
            return out;
        }
    };
    let soonest = anchors.expirations().iter().min().copied();
    match soonest.map(|t| t.duration_since(now).unwrap_or_default()) {
        Some(left) if left < EXPIRY_WARNING => out.push(Check::warn(
            IDENTITY,
            "trust anchors are valid for at least 60 days",
            format!("a trust anchor expires in {} days; plan a rotation", days(left)),
        )),
        _ => out.push(Check::ok(
            IDENTITY,
            "trust anchors are valid for at least 60 days",
        )),
    }
    let key_source = format!("{issuer_source} (key)");
    match Issuer::load_named(issuer_crt, issuer_source, issuer_key, &key_source, &anchors, now) {
        Ok(issuer) => {
            out.push(Check::ok(
                IDENTITY,
                "issuer certificate is a valid CA issued by a trust anchor",
            ));
            let left = issuer.not_after().duration_since(now).unwrap_or_default();
            if left < EXPIRY_WARNING {
                out.push(Check::warn(
                    IDENTITY,
                    "issuer certificate is valid for at least 60 days",
                    format!(
                        "the issuer expires in {} days; rotate it with `strait upgrade --identity-issuer-certificate-file … --identity-issuer-key-file …`",
                        days(left)
                    ),
                ));
            } else {
                out.push(Check::ok(
                    IDENTITY,
                    "issuer certificate is valid for at least 60 days",
                ));
            }
        }
        Err(e) => out.push(Check::fail(
            IDENTITY,
            "issuer certificate is a valid CA issued by a trust anchor",
            format!("{e}\nissue a new issuer under the trust anchors and run `strait upgrade` with it"),
        )),
    }
    out
}

const CONTROL_PLANE: &str = "linkerd-control-plane";
const DATA_PLANE: &str = "linkerd-data-plane";

/// The checks of an installed control plane, read through a store (the Kubernetes API,
/// or a local state directory holding `strait install`'s output).
pub async fn installed<S: Store>(store: &S, client_version: &str, now: SystemTime) -> Vec<Check> {
    let mut out = Vec::new();
    match store.get::<Namespace>("", crate::install::NAMESPACE).await {
        Ok(Some(_)) => out.push(Check::ok(CONTROL_PLANE, "control plane namespace exists")),
        Ok(None) => {
            out.push(Check::fail(
                CONTROL_PLANE,
                "control plane namespace exists",
                "namespace linkerd not found: install the control plane with `strait install | kubectl apply -f -`",
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                CONTROL_PLANE,
                "can query the cluster",
                format!("{e}\ncheck your kubeconfig"),
            ));
            return out;
        }
    }
    let mut missing = Vec::new();
    for crd in strait_api::mesh::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if !matches!(
            store.get::<CustomResourceDefinition>("", &name).await,
            Ok(Some(_))
        ) {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        out.push(Check::ok(CONTROL_PLANE, "control plane CRDs are installed"));
    } else {
        out.push(Check::fail(
            CONTROL_PLANE,
            "control plane CRDs are installed",
            format!(
                "missing: {}\nrun `strait install --crds | kubectl apply -f -`",
                missing.join(", ")
            ),
        ));
    }
    match store
        .get::<Deployment>(crate::install::NAMESPACE, crate::install::manifests::CONTROLLER)
        .await
    {
        Ok(Some(d)) => {
            let want = d.spec.replicas.unwrap_or(1);
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready >= want && want > 0 {
                out.push(Check::ok(CONTROL_PLANE, "control plane pods are ready"));
            } else {
                out.push(Check::fail(
                    CONTROL_PLANE,
                    "control plane pods are ready",
                    format!(
                        "{ready} of {want} {} replicas are ready; look at `kubectl -n linkerd describe deploy/{}` and its pods' logs",
                        crate::install::manifests::CONTROLLER,
                        crate::install::manifests::CONTROLLER
                    ),
                ));
            }
        }
        _ => out.push(Check::fail(
            CONTROL_PLANE,
            "control plane pods are ready",
            format!(
                "deployment linkerd/{} not found: re-run `strait install | kubectl apply -f -`",
                crate::install::manifests::CONTROLLER
            ),
        )),
    }
    match crate::install::read_installed(store).await {
        Ok(inst) => out.extend(identity(
            inst.trust_anchors_pem.as_bytes(),
            "configmap linkerd/linkerd-identity-trust-roots",
            &inst.issuer.0,
            &inst.issuer.1,
            "secret linkerd/linkerd-identity-issuer",
            now,
        )),
        Err(e) => out.push(Check::fail(
            IDENTITY,
            "identity material is installed",
            e.to_string(),
        )),
    }
    match store.list::<Pod>(None).await {
        Ok(pods) => out.extend(proxies(&pods, client_version)),
        Err(e) => out.push(Check::fail(DATA_PLANE, "can list meshed pods", e.to_string())),
    }
    out
}

/// The data-plane checks over the cluster's pods: meshed pods ready, proxies current.
pub fn proxies(pods: &[Pod], client_version: &str) -> Vec<Check> {
    let meshed: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(strait_api::labels::CONTROL_PLANE_NS_LABEL))
        })
        .collect();
    let name = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        )
    };
    let not_ready: Vec<String> = meshed
        .iter()
        .filter(|p| {
            !p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| name(p))
        .collect();
    let outdated: Vec<String> = meshed
        .iter()
        .filter_map(|p| {
            let v = p
                .metadata
                .annotations
                .as_ref()?
                .get(strait_api::labels::PROXY_VERSION)?;
            (v != client_version && v.trim_start_matches('v') != client_version)
                .then(|| format!("{} ({v})", name(p)))
        })
        .collect();
    let mut out = Vec::new();
    let count = meshed.len();
    if not_ready.is_empty() {
        out.push(Check::ok(
            DATA_PLANE,
            format!("data plane proxies are ready ({count} meshed pods)"),
        ));
    } else {
        out.push(Check::fail(
            DATA_PLANE,
            "data plane proxies are ready",
            format!(
                "not ready: {}\nlook at the pods' events and the linkerd-proxy container's logs",
                not_ready.join(", ")
            ),
        ));
    }
    if outdated.is_empty() {
        out.push(Check::ok(DATA_PLANE, "data plane proxies are up to date"));
    } else {
        out.push(Check::warn(
            DATA_PLANE,
            "data plane proxies are up to date",
            format!(
                "running another version than the CLI ({client_version}): {}\nrestart the workloads to pick up the current proxy",
                outdated.join(", ")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
