//! The cluster a benchmark loads: namespaces of selector-less Services, each with one
//! EndpointSlice of N ready, meshed Pods, and the changes the latency rounds apply.
//!
//! Services carry no selector, so the slices given here are the only ones (as in
//! Kubernetes, where kube-controller-manager writes them); the local endpoint controller
//! still runs beside the index and keeps its copies. Pure data: the fixture remembers the
//! current endpoints of every service so that a change is the next slice, not a guess.
//!
//! Addresses: service `s`'s `k`-th initial endpoint is `10.0.0.0 + 16·s + k + 1`
//! (10.0.0.0/9 holds 500 000 services); replacements count up from 10.128.0.0.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    Container, Namespace, ObjectReference, Pod, PodCondition, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_api::{Kind, Object};

/// The service port every stream asks for.
pub const SERVICE_PORT: u16 = 80;
/// The pods' port behind it.
pub const TARGET_PORT: u16 = 8080;
/// The cluster domain of the authorities.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

const FIRST_REPLACEMENT: u32 = u32::from_be_bytes([10, 128, 0, 0]);

/// One endpoint: the pod's name and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAddr {
    /// Pod name.
    pub pod: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
}

/// What one change did to one service's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The service (global index).
    pub service: usize,
    /// The address that left.
    pub old: Ipv4Addr,
    /// The address that came.
    pub new: Ipv4Addr,
}

/// The benchmark cluster and its current endpoints.
#[derive(Clone, Debug)]
pub struct Fixture {
    namespaces: usize,
    endpoints: Vec<Vec<PodAddr>>,
    next_ip: u32,
    generation: u64,
}

impl Fixture {
    /// `services` services spread round-robin over `namespaces` namespaces, each with
    /// `endpoints` pods.
    pub fn new(namespaces: usize, services: usize, endpoints: usize) -> Self {
        assert!(
            namespaces > 0 && endpoints < 16,
            "1+ namespaces, at most 15 endpoints"
        );
        let endpoints = (0..services)
            .map(|s| {
                (0..endpoints)
                    .map(|k| PodAddr {
                        pod: format!("{}-{k}", service_name(s)),
                        ip: initial_ip(s, k),
                    })
                    .collect()
            })
            .collect();
        Self {
            namespaces,
            endpoints,
            next_ip: FIRST_REPLACEMENT,
            generation: 0,
        }
    }

    /// How many services.
    pub fn services(&self) -> usize {
        self.endpoints.len()
    }

    /// How many namespaces.
    pub fn namespaces(&self) -> usize {
        self.namespaces
    }

    /// The namespace (index) of service `s`.
    pub fn namespace_of(&self, s: usize) -> usize {
        s % self.namespaces
    }

    /// The services of namespace `n`.
    pub fn services_in(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        (n..self.services()).step_by(self.namespaces)
    }

    /// The authority a proxy asks `Destination/Get` for service `s`.
    pub fn authority(&self, s: usize) -> String {
        format!(
            "{}.{}.svc.{CLUSTER_DOMAIN}:{SERVICE_PORT}",
            service_name(s),
            namespace_name(self.namespace_of(s))
        )
    }

    /// The current endpoints of service `s`.
    pub fn endpoints(&self, s: usize) -> &[PodAddr] {
        &self.endpoints[s]
    }

    /// Every Namespace object.
    pub fn namespace_objects(&self) -> Vec<Object> {
        (0..self.namespaces)
            .map(|n| {
                Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace_name(n)),
                        ..Default::default()
                    },
                    ..Default::default()
                }
                .into_object()
            })
            .collect()
    }

    /// Service, Pods and EndpointSlice of each service in `services`.
    pub fn service_objects(&self, services: impl IntoIterator<Item = usize>) -> Vec<Object> {
        let mut out = Vec::new();
        for s in services {
            out.push(self.service(s).into_object());
            out.extend(self.endpoints[s].iter().map(|e| self.pod(s, e).into_object()));
            out.push(self.slice(s).into_object());
        }
        out
    }

    /// Replaces endpoint `slot` of service `s` by a new pod at a new address, as a
    /// rollout does; returns the objects to apply (the new Pod and the slice) and what
    /// changed.
    pub fn replace_endpoint(&mut self, s: usize, slot: usize) -> (Vec<Object>, Replaced) {
        self.generation += 1;
        let new = PodAddr {
            pod: format!("{}-r{}", service_name(s), self.generation),
            ip: Ipv4Addr::from(self.next_ip),
        };
        self.next_ip += 1;
        let slot = slot % self.endpoints[s].len();
        let old = std::mem::replace(&mut self.endpoints[s][slot], new.clone());
        let objects = vec![self.pod(s, &new).into_object(), self.slice(s).into_object()];
        (
            objects,
            Replaced {
                service: s,
                old: old.ip,
                new: new.ip,
            },
        )
    }

    fn service(&self, s: usize) -> Service {
        let ip = Ipv4Addr::from(u32::from_be_bytes([10, 96, 0, 0]) + s as u32 + 1);
        Service {
            metadata: self.meta(s, service_name(s)),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.to_string()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: i32::from(SERVICE_PORT),
                    target_port: Some(IntOrString::Int(i32::from(TARGET_PORT))),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(&self, s: usize, e: &PodAddr) -> Pod {
        let mut meta = self.meta(s, e.pod.clone());
        meta.labels = Some(BTreeMap::from([
            ("app".to_string(), service_name(s)),
            (
                strait_api::labels::PROXY_DEPLOYMENT_LABEL.to_string(),
                service_name(s),
            ),
            (
                strait_api::labels::CONTROL_PLANE_NS_LABEL.to_string(),
                "linkerd".to_string(),
            ),
        ]));
        Pod {
            metadata: meta,
            spec: Some(PodSpec {
                service_account_name: Some(service_name(s)),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("bench".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(e.ip.to_string()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn slice(&self, s: usize) -> EndpointSlice {
        let ns = namespace_name(self.namespace_of(s));
        let mut meta = self.meta(s, format!("{}-bench", service_name(s)));
        meta.labels = Some(BTreeMap::from([(
            strait_controller::discovery::model::SERVICE_NAME_LABEL.to_string(),
            service_name(s),
        )]));
        EndpointSlice {
            metadata: meta,
            address_type: "IPv4".into(),
            endpoints: Some(
                self.endpoints[s]
                    .iter()
                    .map(|e| Endpoint {
                        addresses: vec![e.ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            name: Some(e.pod.clone()),
                            namespace: Some(ns.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(i32::from(TARGET_PORT)),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
        }
    }

    fn meta(&self, s: usize, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(namespace_name(self.namespace_of(s))),
            ..Default::default()
        }
    }
}

/// The name of service `s`.
pub fn service_name(s: usize) -> String {
    format!("svc-{s:05}")
}

/// The name of namespace `n`.
pub fn namespace_name(n: usize) -> String {
    format!("bench-{n}")
}

fn initial_ip(s: usize, k: usize) -> Ipv4Addr {
    let n = u32::try_from(16 * s + k + 1).expect("fewer than 2^28 services");
    assert!(
        n < FIRST_REPLACEMENT - u32::from_be_bytes([10, 0, 0, 0]),
        "too many services"
    );
    Ipv4Addr::from(u32::from_be_bytes([10, 0, 0, 0]) + n)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use strait_api::core::validate_object;

    use super::*;

    #[test]
    fn every_object_is_valid_and_services_spread_over_namespaces() {
        let f = Fixture::new(3, 7, 10);
        let mut objects = f.namespace_objects();
        objects.extend(f.service_objects(0..f.services()));
        assert_eq!(objects.len(), 3 + 7 * (1 + 10 + 1));
        for o in &objects {
            let problems = validate_object(o);
            assert!(problems.is_empty(), "{}: {problems:?}", o.key());
        }
        assert_eq!(f.services_in(1).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(f.authority(4), "svc-00004.bench-1.svc.cluster.local:80");
        assert_eq!(f.endpoints(1)[0].ip, Ipv4Addr::new(10, 0, 0, 17));
    }

    #[test]
    fn a_replacement_swaps_one_address_for_a_fresh_one() {
        let mut f = Fixture::new(2, 4, 10);
        let before: Vec<Ipv4Addr> = f.endpoints(3).iter().map(|e| e.ip).collect();
        let (objects, r) = f.replace_endpoint(3, 12);
        assert_eq!(r.old, before[2], "the slot wraps around");
        assert_eq!(r.new, Ipv4Addr::new(10, 128, 0, 0));
        assert!(!before.contains(&r.new));
        let slice = objects
            .iter()
            .find_map(|o| EndpointSlice::from_object_ref(o))
            .expect("the slice is part of the change");
        let addrs: Vec<&str> = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(addrs.len(), 10);
        assert!(addrs.contains(&"10.128.0.0") && !addrs.contains(&r.old.to_string().as_str()));
        let (_, second) = f.replace_endpoint(3, 2);
        assert_eq!(second.old, r.new, "the fixture remembers the current endpoints");
    }
}
