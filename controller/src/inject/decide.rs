//! Whether, and how, a pod template gets a proxy: a pure function of the template, its
//! namespace's annotations and what was asked for.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strait_api::labels::{INJECT, INJECT_DISABLED, INJECT_ENABLED, INJECT_INGRESS};

use super::containers::{CONTAINERS, PROXY_CONTAINER, VOLUMES};

/// What the caller wants done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `strait inject`: mark the template `linkerd.io/inject: enabled` for the webhook.
    Annotate,
    /// `strait inject --manual`: add the proxy now, unless the template disables it.
    Manual,
    /// The admission webhook: add the proxy when the pod or its namespace enables it.
    Admission,
}

/// The decision for one pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Add the proxy; in ingress mode when `linkerd.io/inject: ingress`.
    Inject {
        /// Whether the proxy runs in ingress mode.
        ingress: bool,
    },
    /// Add `linkerd.io/inject: enabled`.
    Annotate,
    /// Leave the template alone.
    Skip(Skip),
}

/// Why a workload is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The object has no pod template.
    NotAWorkload,
    /// The template has no pod spec.
    NoPodSpec,
    /// Pods share the node's network; redirecting it would capture the node's traffic.
    HostNetwork,
    /// The template already has a proxy.
    AlreadyInjected,
    /// The template already says `linkerd.io/inject: <value>`.
    AlreadyAnnotated(String),
    /// A container or volume has a name injection needs.
    NameTaken {
        /// `container` or `volume`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// `linkerd.io/inject: disabled` on the pod template.
    DisabledOnPod,
    /// `linkerd.io/inject: disabled` on the namespace.
    DisabledOnNamespace,
    /// Neither the pod nor its namespace enables injection.
    NotEnabled,
    /// `linkerd.io/inject` has a value other than enabled, disabled or ingress.
    UnknownValue(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotAWorkload => f.write_str("not a workload (no pod template)"),
            Skip::NoPodSpec => f.write_str("the pod template has no spec"),
            Skip::HostNetwork => f.write_str("pods use hostNetwork: true, which the proxy cannot capture"),
            Skip::AlreadyInjected => {
                write!(f, "already injected (the pod has a {PROXY_CONTAINER} container)")
            }
            Skip::AlreadyAnnotated(v) => write!(f, "already annotated {INJECT}: {v}"),
            Skip::NameTaken { what, name } => write!(
                f,
                "the pod already has a {what} named {name:?}, which injection adds; rename it"
            ),
            Skip::DisabledOnPod => write!(f, "{INJECT}: {INJECT_DISABLED} on the pod template"),
            Skip::DisabledOnNamespace => write!(f, "{INJECT}: {INJECT_DISABLED} on the namespace"),
            Skip::NotEnabled => write!(
                f,
                "injection is not enabled: neither the pod nor its namespace has {INJECT}: {INJECT_ENABLED}"
            ),
            Skip::UnknownValue(v) => write!(
                f,
                "{INJECT}: {v:?} is not one of {INJECT_ENABLED}, {INJECT_DISABLED}, {INJECT_INGRESS}"
            ),
        }
    }
}

/// Decides for one pod template. `template` and `spec` are `None` when the workload has
/// none; `namespace` holds the namespace's annotations when they are known.
pub fn decide(
    request: Request,
    template: Option<&ObjectMeta>,
    spec: Option<&PodSpec>,
    namespace: Option<&BTreeMap<String, String>>,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Skip(Skip::NoPodSpec);
    };
    if spec.containers.iter().any(|c| c.name == PROXY_CONTAINER) {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    if let Some(c) = containers
        .map(|c| &c.name)
        .find(|n| CONTAINERS.contains(&n.as_str()))
    {
        return Decision::Skip(Skip::NameTaken {
            what: "container",
            name: c.clone(),
        });
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| VOLUMES.contains(&v.name.as_str()))
    {
        return Decision::Skip(Skip::NameTaken {
            what: "volume",
            name: v.name.clone(),
        });
    }
    if spec.host_network == Some(true) {
        return Decision::Skip(Skip::HostNetwork);
    }
    let on_pod = template
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(INJECT))
        .map(String::as_str);
    let on_ns = namespace.and_then(|a| a.get(INJECT)).map(String::as_str);
    let inject = |value: &str| match value {
        INJECT_ENABLED => Decision::Inject { ingress: false },
        INJECT_INGRESS => Decision::Inject { ingress: true },
        other => Decision::Skip(Skip::UnknownValue(other.to_string())),
    };
    match (request, on_pod) {
        (_, Some(INJECT_DISABLED)) => Decision::Skip(Skip::DisabledOnPod),
        (Request::Annotate, Some(v)) => Decision::Skip(Skip::AlreadyAnnotated(v.to_string())),
        (Request::Annotate, None) => Decision::Annotate,
        (Request::Manual | Request::Admission, Some(v)) => inject(v),
        // Asked for explicitly: the namespace only chooses ingress mode.
        (Request::Manual, None) => Decision::Inject {
            ingress: on_ns == Some(INJECT_INGRESS),
        },
        (Request::Admission, None) => match on_ns {
            Some(INJECT_DISABLED) => Decision::Skip(Skip::DisabledOnNamespace),
            Some(v) => inject(v),
            None => Decision::Skip(Skip::NotEnabled),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(inject: Option<&str>) -> ObjectMeta {
        let annotations = inject.map(|v| [(INJECT.to_string(), v.to_string())].into());
        ObjectMeta {
            annotations,
            ..Default::default()
        }
    }

    fn spec(extra: serde_json::Value) -> PodSpec {
        let mut v = json!({ "containers": [{ "name": "app", "image": "app" }] });
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                if k == "containers" {
                    m["containers"]
                        .as_array_mut()
                        .unwrap()
                        .extend(x.as_array().unwrap().clone());
                } else {
                    m.insert(k.clone(), x.clone());
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn annotations_decide_by_request() {
        use Decision::{Inject, Skip};
        use Request::{Admission, Manual};
        let (annotate, annotated) = (Request::Annotate, Decision::Annotate);
        let ns = |v: &str| Some([(INJECT.to_string(), v.to_string())].into());
        let none: Option<BTreeMap<String, String>> = None;
        type Case<'a> = (
            Request,
            Option<&'a str>,
            Option<BTreeMap<String, String>>,
            Decision,
        );
        let cases: Vec<Case> = vec![
            // The webhook: the pod template wins over its namespace.
            (Admission, None, ns("enabled"), Inject { ingress: false }),
            (Admission, None, ns("ingress"), Inject { ingress: true }),
            (
                Admission,
                Some("enabled"),
                ns("disabled"),
                Inject { ingress: false },
            ),
            (Admission, Some("ingress"), none.clone(), Inject { ingress: true }),
            (
                Admission,
                Some("disabled"),
                ns("enabled"),
                Skip(super::Skip::DisabledOnPod),
            ),
            (
                Admission,
                None,
                ns("disabled"),
                Skip(super::Skip::DisabledOnNamespace),
            ),
            (Admission, None, none.clone(), Skip(super::Skip::NotEnabled)),
            (
                Admission,
                None,
                Some(BTreeMap::new()),
                Skip(super::Skip::NotEnabled),
            ),
            (
                Admission,
                Some("yes"),
                none.clone(),
                Skip(super::Skip::UnknownValue("yes".into())),
            ),
            // `inject --manual`: injects unless the template disables it.
            (Manual, None, none.clone(), Inject { ingress: false }),
            (Manual, None, ns("disabled"), Inject { ingress: false }),
            (Manual, None, ns("ingress"), Inject { ingress: true }),
            (Manual, Some("ingress"), none.clone(), Inject { ingress: true }),
            (
                Manual,
                Some("disabled"),
                none.clone(),
                Skip(super::Skip::DisabledOnPod),
            ),
            // `inject`: annotates unless the template already says something.
            (annotate, None, ns("disabled"), annotated),
            (
                annotate,
                Some("enabled"),
                none.clone(),
                Skip(super::Skip::AlreadyAnnotated("enabled".into())),
            ),
            (
                annotate,
                Some("ingress"),
                none.clone(),
                Skip(super::Skip::AlreadyAnnotated("ingress".into())),
            ),
            (
                annotate,
                Some("disabled"),
                none.clone(),
                Skip(super::Skip::DisabledOnPod),
            ),
        ];
        for (request, pod, ns, want) in cases {
            let got = decide(request, Some(&meta(pod)), Some(&spec(json!({}))), ns.as_ref());
            assert_eq!(got, want, "{request:?} pod={pod:?} ns={ns:?}");
        }
    }

    #[test]
    fn the_pod_spec_can_rule_injection_out() {
        let cases = vec![
            (json!({ "hostNetwork": true }), Skip::HostNetwork),
            (
                json!({ "containers": [{ "name": "linkerd-proxy" }] }),
                Skip::AlreadyInjected,
            ),
            (
                json!({ "initContainers": [{ "name": "linkerd-init" }] }),
                Skip::NameTaken {
                    what: "container",
                    name: "linkerd-init".into(),
                },
            ),
            (
                json!({ "volumes": [{ "name": "linkerd-identity-end-entity", "emptyDir": {} }] }),
                Skip::NameTaken {
                    what: "volume",
                    name: "linkerd-identity-end-entity".into(),
                },
            ),
        ];
        for request in [Request::Annotate, Request::Manual, Request::Admission] {
            for (extra, want) in &cases {
                let got = decide(
                    request,
                    Some(&meta(Some("enabled"))),
                    Some(&spec(extra.clone())),
                    None,
                );
                assert_eq!(got, Decision::Skip(want.clone()), "{request:?} {extra}");
            }
            assert_eq!(decide(request, None, None, None), Decision::Skip(Skip::NoPodSpec));
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            Skip::DisabledOnPod.to_string(),
            "linkerd.io/inject: disabled on the pod template"
        );
        assert!(Skip::HostNetwork.to_string().contains("hostNetwork: true"));
        assert!(Skip::AlreadyInjected.to_string().contains("linkerd-proxy"));
    }
}
