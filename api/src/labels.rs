//! Linkerd's label and annotation names, in one place.
//!
//! Users' manifests carry these exact strings; every component reads them from here so a
//! typo cannot silently disable a feature.

/// `enabled`, `disabled` or `ingress` on a Namespace or pod template.
pub const INJECT: &str = "linkerd.io/inject";
/// Values of [`INJECT`].
pub const INJECT_ENABLED: &str = "enabled";
/// Values of [`INJECT`].
pub const INJECT_DISABLED: &str = "disabled";
/// Values of [`INJECT`].
pub const INJECT_INGRESS: &str = "ingress";
/// Set by the injector on the pod template: the proxy version it injected.
pub const PROXY_VERSION: &str = "linkerd.io/proxy-version";
/// Set by the injector on the pod template: the control plane namespace.
pub const CONTROL_PLANE_NS_LABEL: &str = "linkerd.io/control-plane-ns";
/// Set on control plane pods: which component they are.
pub const CONTROL_PLANE_COMPONENT_LABEL: &str = "linkerd.io/control-plane-component";
/// Set on injected pods: the owning workload.
pub const PROXY_DEPLOYMENT_LABEL: &str = "linkerd.io/proxy-deployment";
/// Identity mode annotation set by the injector (`default` or `disabled`).
pub const IDENTITY_MODE: &str = "linkerd.io/identity-mode";
/// Set by the injector: the annotation that records how injection was decided.
pub const INJECTED_BY: &str = "linkerd.io/created-by";
/// Trust domain label on control-plane objects.
pub const TRUST_DOMAIN: &str = "linkerd.io/trust-domain";
/// Marks the ServiceAccount-bound control-plane namespace.
pub const IS_CONTROL_PLANE: &str = "linkerd.io/is-control-plane";
/// Set on injected pods (label): the namespace of the workload, for telemetry.
pub const WORKLOAD_NS_LABEL: &str = "linkerd.io/workload-ns";
/// Set on injected pods (label): the owning StatefulSet.
pub const PROXY_STATEFULSET_LABEL: &str = "linkerd.io/proxy-statefulset";
/// Set on injected pods (label): the owning DaemonSet.
pub const PROXY_DAEMONSET_LABEL: &str = "linkerd.io/proxy-daemonset";
/// Set on injected pods (label): the owning ReplicaSet.
pub const PROXY_REPLICASET_LABEL: &str = "linkerd.io/proxy-replicaset";
/// Set on injected pods (label): the owning Job.
pub const PROXY_JOB_LABEL: &str = "linkerd.io/proxy-job";
/// Set on injected pods (label): the owning CronJob.
pub const PROXY_CRONJOB_LABEL: &str = "linkerd.io/proxy-cronjob";
/// Set by the injector (annotation): SHA-256 of the trust anchors PEM the proxy was given, so
/// a rotation of the anchors shows which pods still carry the old bundle.
pub const TRUST_ROOT_SHA256: &str = "linkerd.io/trust-root-sha256";
/// On the issuer Secret (annotation): when the issuer certificate expires (RFC 3339).
pub const IDENTITY_ISSUER_EXPIRY: &str = "linkerd.io/identity-issuer-expiry";
/// `disabled` on a Namespace (label) keeps Linkerd's admission webhooks away from it.
pub const ADMISSION_WEBHOOKS: &str = "config.linkerd.io/admission-webhooks";

/// `config.linkerd.io/*`: proxy configuration annotations.
pub mod config {
    /// Comma-separated ports or ranges the proxy does not capture inbound.
    pub const SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";
    /// Comma-separated ports or ranges the proxy does not capture outbound.
    pub const SKIP_OUTBOUND_PORTS: &str = "config.linkerd.io/skip-outbound-ports";
    /// Comma-separated CIDRs the proxy does not capture outbound.
    pub const SKIP_SUBNETS: &str = "config.linkerd.io/skip-subnets";
    /// Ports whose traffic is treated as opaque TCP (no protocol detection).
    pub const OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";
    /// The default inbound policy of a workload or namespace.
    pub const DEFAULT_INBOUND_POLICY: &str = "config.linkerd.io/default-inbound-policy";
    /// Ports (and ranges) that admit meshed clients only where no Server describes them.
    pub const PROXY_REQUIRE_IDENTITY_INBOUND_PORTS: &str =
        "config.linkerd.io/proxy-require-identity-inbound-ports";
    /// Proxy CPU request (Kubernetes quantity).
    pub const PROXY_CPU_REQUEST: &str = "config.linkerd.io/proxy-cpu-request";
    /// Proxy CPU limit (Kubernetes quantity).
    pub const PROXY_CPU_LIMIT: &str = "config.linkerd.io/proxy-cpu-limit";
    /// Proxy memory request (Kubernetes quantity).
    pub const PROXY_MEMORY_REQUEST: &str = "config.linkerd.io/proxy-memory-request";
    /// Proxy memory limit (Kubernetes quantity).
    pub const PROXY_MEMORY_LIMIT: &str = "config.linkerd.io/proxy-memory-limit";
    /// Proxy ephemeral storage request.
    pub const PROXY_EPHEMERAL_STORAGE_REQUEST: &str = "config.linkerd.io/proxy-ephemeral-storage-request";
    /// Proxy ephemeral storage limit.
    pub const PROXY_EPHEMERAL_STORAGE_LIMIT: &str = "config.linkerd.io/proxy-ephemeral-storage-limit";
    /// Proxy log filter, e.g. `info,linkerd=debug`.
    pub const PROXY_LOG_LEVEL: &str = "config.linkerd.io/proxy-log-level";
    /// Proxy log format: `plain` or `json`.
    pub const PROXY_LOG_FORMAT: &str = "config.linkerd.io/proxy-log-format";
    /// The UID the proxy runs as (iptables skips its traffic).
    pub const PROXY_UID: &str = "config.linkerd.io/proxy-uid";
    /// The GID the proxy runs as.
    pub const PROXY_GID: &str = "config.linkerd.io/proxy-gid";
    /// Proxy image name.
    pub const PROXY_IMAGE: &str = "config.linkerd.io/proxy-image";
    /// Proxy image version.
    pub const PROXY_VERSION: &str = "config.linkerd.io/proxy-version";
    /// Admin port of the proxy.
    pub const PROXY_ADMIN_PORT: &str = "config.linkerd.io/admin-port";
    /// Control port of the proxy (tap).
    pub const PROXY_CONTROL_PORT: &str = "config.linkerd.io/control-port";
    /// Inbound port of the proxy.
    pub const PROXY_INBOUND_PORT: &str = "config.linkerd.io/inbound-port";
    /// Outbound port of the proxy.
    pub const PROXY_OUTBOUND_PORT: &str = "config.linkerd.io/outbound-port";
    /// Ports on which inbound connections are not protocol-detected.
    pub const INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: &str =
        "config.linkerd.io/inbound-ports-disable-protocol-detection";
    /// Wait for the proxy to be ready before starting the application container.
    pub const PROXY_AWAIT: &str = "config.linkerd.io/proxy-await";
    /// Outbound connect timeout of the proxy.
    pub const PROXY_OUTBOUND_CONNECT_TIMEOUT: &str = "config.linkerd.io/proxy-outbound-connect-timeout";
    /// Inbound connect timeout of the proxy.
    pub const PROXY_INBOUND_CONNECT_TIMEOUT: &str = "config.linkerd.io/proxy-inbound-connect-timeout";
    /// Tracing collector address for the proxy.
    pub const TRACE_COLLECTOR: &str = "config.linkerd.io/trace-collector";
    /// Disable the tap server of the proxy.
    pub const DISABLE_TAP: &str = "config.linkerd.io/disable-tap";
    /// Disable identity for the proxy.
    pub const DISABLE_IDENTITY: &str = "config.linkerd.io/disable-identity";
    /// How long the proxy keeps connections in CLOSE_WAIT (nf_conntrack timeout).
    pub const CLOSE_WAIT_TIMEOUT: &str = "config.linkerd.io/close-wait-timeout";
    /// Let the proxy shut down when the application exits (jobs).
    pub const SHUTDOWN_GRACE_PERIOD: &str = "config.linkerd.io/shutdown-grace-period";
    /// Every `config.linkerd.io/*` annotation the injector understands, to reject typos.
    pub const ALL: &[&str] = &[
        SKIP_INBOUND_PORTS,
        SKIP_OUTBOUND_PORTS,
        SKIP_SUBNETS,
        OPAQUE_PORTS,
        DEFAULT_INBOUND_POLICY,
        PROXY_REQUIRE_IDENTITY_INBOUND_PORTS,
        PROXY_CPU_REQUEST,
        PROXY_CPU_LIMIT,
        PROXY_MEMORY_REQUEST,
        PROXY_MEMORY_LIMIT,
        PROXY_EPHEMERAL_STORAGE_REQUEST,
        PROXY_EPHEMERAL_STORAGE_LIMIT,
        PROXY_LOG_LEVEL,
        PROXY_LOG_FORMAT,
        PROXY_UID,
        PROXY_GID,
        PROXY_IMAGE,
        PROXY_VERSION,
        PROXY_ADMIN_PORT,
        PROXY_CONTROL_PORT,
        PROXY_INBOUND_PORT,
        PROXY_OUTBOUND_PORT,
        INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
        PROXY_AWAIT,
        PROXY_OUTBOUND_CONNECT_TIMEOUT,
        PROXY_INBOUND_CONNECT_TIMEOUT,
        TRACE_COLLECTOR,
        DISABLE_TAP,
        DISABLE_IDENTITY,
        CLOSE_WAIT_TIMEOUT,
        SHUTDOWN_GRACE_PERIOD,
    ];
    /// Values of [`DEFAULT_INBOUND_POLICY`].
    pub const DEFAULT_INBOUND_POLICIES: &[&str] = &[
        "all-unauthenticated",
        "all-authenticated",
        "cluster-authenticated",
        "cluster-unauthenticated",
        "deny",
        "audit",
    ];
}

/// `mirror.linkerd.io/*`: multicluster export and mirror bookkeeping.
pub mod mirror {
    /// `true` on a Service exports it to linked clusters; `remote-discovery` exports it in
    /// remote-discovery mode.
    pub const EXPORTED: &str = "mirror.linkerd.io/exported";
    /// `member` on a Service makes it part of `<svc>-federated`.
    pub const FEDERATED: &str = "mirror.linkerd.io/federated";
    /// `true` on a mirror Service created by the service mirror.
    pub const MIRRORED_SERVICE: &str = "mirror.linkerd.io/mirrored-service";
    /// The name of the cluster a mirror came from.
    pub const CLUSTER_NAME: &str = "mirror.linkerd.io/cluster-name";
    /// The fully qualified name of the remote Service a mirror reflects.
    pub const REMOTE_SVC_FQ_NAME: &str = "mirror.linkerd.io/remote-svc-fq-name";
    /// The remote Service's resourceVersion when it was last mirrored.
    pub const REMOTE_RESOURCE_VERSION: &str = "mirror.linkerd.io/remote-resource-version";
    /// The identity of the gateway behind a mirror's endpoints.
    pub const REMOTE_GATEWAY_IDENTITY: &str = "mirror.linkerd.io/remote-gateway-identity";
    /// On a gateway Service: the gateway's identity.
    pub const GATEWAY_IDENTITY: &str = "mirror.linkerd.io/gateway-identity";
    /// On a gateway Service: probe period in seconds.
    pub const PROBE_PERIOD: &str = "mirror.linkerd.io/probe-period";
    /// On a gateway Service: probe path.
    pub const PROBE_PATH: &str = "mirror.linkerd.io/probe-path";
    /// On a gateway Service: `true` marks it as the multicluster gateway.
    pub const MULTICLUSTER_GATEWAY: &str = "mirror.linkerd.io/multicluster-gateway";
    /// On a mirror Service in remote-discovery mode: the remote cluster(s) to discover from.
    pub const REMOTE_DISCOVERY: &str = "multicluster.linkerd.io/remote-discovery";
    /// On a mirror Service in remote-discovery mode: the remote Service name.
    pub const REMOTE_SERVICE: &str = "multicluster.linkerd.io/remote-service";
    /// On a federated Service: the clusters contributing endpoints.
    pub const REMOTE_DISCOVERY_FEDERATED: &str = "multicluster.linkerd.io/remote-discovery";
    /// On a federated Service: the local service contributing endpoints.
    pub const LOCAL_DISCOVERY: &str = "multicluster.linkerd.io/local-discovery";
    /// The Link's default export selector: `mirror.linkerd.io/exported=true`.
    pub const EXPORTED_TRUE: &str = "true";
    /// The Link's default remote-discovery selector value.
    pub const EXPORTED_REMOTE_DISCOVERY: &str = "remote-discovery";
    /// The federated selector value.
    pub const FEDERATED_MEMBER: &str = "member";
    /// Strait: on a gateway-mode mirror Service, `IP:PORT` of the local gateway's proxy
    /// entry for the mirror's link (`strait mirror --gateway-entry`). With
    /// [`REMOTE_IDENTITY`], Destination sends Strait proxies through that entry with the
    /// remote workload's identity instead of to the remote gateway.
    pub const GATEWAY_ENTRY: &str = "mirror.strait.io/gateway-entry";
    /// Strait: beside [`GATEWAY_ENTRY`] when that entry serves every link of the gateway
    /// (`strait mirror --gateway-entry ADDR`): the link (the Link's `targetClusterName`)
    /// each `strt` request there must name. Absent for an entry of one link.
    pub const GATEWAY_LINK: &str = "mirror.strait.io/gateway-link";
    /// Strait: on a gateway-mode mirror Service, the mesh identity of the remote
    /// Service's workloads (learned by the mirror from the remote pods' service account).
    pub const REMOTE_IDENTITY: &str = "mirror.strait.io/remote-identity";
    /// Strait: beside [`GATEWAY_ENTRY`] and [`REMOTE_IDENTITY`], the addresses of the
    /// remote Service's ready endpoints of that identity, comma-separated, as the remote
    /// cluster knows them. Destination then gives Strait proxies one endpoint per address
    /// (each dialed at the entry, the `strt` open naming it), so they balance requests
    /// over the remote endpoints instead of holding one connection to one of them.
    pub const REMOTE_ENDPOINTS: &str = "mirror.strait.io/remote-endpoints";
    /// Strait: on a federated Service and its EndpointSlices, `true`: owned by the
    /// mirror's federation task (never by one link's mirror).
    pub const FEDERATED_OWNED: &str = "mirror.strait.io/federated";
    /// Strait: on an EndpointSlice whose endpoints are a linked cluster's gateway and
    /// which the destination resolves through the gateway path (a federated Service's
    /// remote member, a remote-discovery mirror): that cluster's name.
    pub const GATEWAY_CLUSTER: &str = "mirror.strait.io/gateway-cluster";
    /// Prefix of Strait's mirror annotations: set only by the mirror, never copied from a
    /// remote Service.
    pub const STRAIT_PREFIX: &str = "mirror.strait.io/";
}

/// `multicluster.linkerd.io/*`.
pub mod multicluster {
    /// The API group of `Link`.
    pub const GROUP: &str = "multicluster.linkerd.io";
    /// Label on objects that belong to a link: the target cluster name.
    pub const CLUSTER_NAME: &str = "multicluster.linkerd.io/cluster-name";
    /// The namespace multicluster components run in.
    pub const NAMESPACE: &str = "linkerd-multicluster";
    /// The service account of the gateway (its identity's first label).
    pub const GATEWAY_SERVICE_ACCOUNT: &str = "linkerd-gateway";
}

/// `failover.linkerd.io/*`: the linkerd-failover operator's annotations.
pub mod failover {
    /// On a TrafficSplit: the primary service; traffic shifts away only when it is not ready.
    pub const PRIMARY_SERVICE: &str = "failover.linkerd.io/primary-service";
    /// Label on a TrafficSplit managed by the failover controller.
    pub const CONTROLLED_BY: &str = "failover.linkerd.io/controlled-by";
}

/// Linkerd's per-service route annotations (retry, timeout, failure accrual).
pub mod route {
    /// HTTP status ranges that are retried (`5xx`, `500-504,429`).
    pub const RETRY_HTTP: &str = "retry.linkerd.io/http";
    /// gRPC status codes that are retried (`cancelled,unavailable`).
    pub const RETRY_GRPC: &str = "retry.linkerd.io/grpc";
    /// Maximum retries per request.
    pub const RETRY_LIMIT: &str = "retry.linkerd.io/limit";
    /// Timeout of each retry attempt.
    pub const RETRY_TIMEOUT: &str = "retry.linkerd.io/timeout";
    /// Request timeout.
    pub const TIMEOUT_REQUEST: &str = "timeout.linkerd.io/request";
    /// Per-backend-request timeout.
    pub const TIMEOUT_RESPONSE: &str = "timeout.linkerd.io/response";
    /// Idle timeout.
    pub const TIMEOUT_IDLE: &str = "timeout.linkerd.io/idle";
    /// Failure accrual mode (`consecutive`).
    pub const FAILURE_ACCRUAL: &str = "balancer.linkerd.io/failure-accrual";
    /// Consecutive failures before an endpoint is ejected.
    pub const FAILURE_ACCRUAL_CONSECUTIVE_MAX_FAILURES: &str =
        "balancer.linkerd.io/failure-accrual-consecutive-max-failures";
    /// Minimum ejection backoff.
    pub const FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY: &str =
        "balancer.linkerd.io/failure-accrual-consecutive-min-penalty";
    /// Maximum ejection backoff.
    pub const FAILURE_ACCRUAL_CONSECUTIVE_MAX_PENALTY: &str =
        "balancer.linkerd.io/failure-accrual-consecutive-max-penalty";
    /// Jitter ratio of the ejection backoff.
    pub const FAILURE_ACCRUAL_CONSECUTIVE_JITTER_RATIO: &str =
        "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio";
}

/// Request headers Linkerd's proxy honours.
pub mod headers {
    /// Statuses to retry, set per request (the seed sets it with a RequestHeaderModifier).
    pub const RETRY_HTTP: &str = "l5d-retry-http";
    /// gRPC statuses to retry.
    pub const RETRY_GRPC: &str = "l5d-retry-grpc";
    /// Retry limit per request.
    pub const RETRY_LIMIT: &str = "l5d-retry-limit";
    /// Timeout per attempt.
    pub const RETRY_TIMEOUT: &str = "l5d-retry-timeout";
    /// Set by the proxy on errors it generates.
    pub const PROXY_ERROR: &str = "l5d-proxy-error";
    /// Destination override header.
    pub const DST_OVERRIDE: &str = "l5d-dst-override";
    /// Client identity forwarded to the application.
    pub const CLIENT_ID: &str = "l5d-client-id";
}

/// One shared copy of each distinct label set.
///
/// Controllers keep the labels of every pod of the cluster, and the pods of one ReplicaSet
/// carry identical labels (`pod-template-hash` included): with tens of thousands of pods,
/// a map per pod per index was most of a controller's memory. [`interned`] hands out one
/// `Arc` per distinct set, shared by every index of the process; sets no index holds any
/// more are dropped as the table grows.
pub mod intern {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::{Arc, Mutex, OnceLock};

    /// A shared, immutable label set.
    pub type Labels = Arc<BTreeMap<String, String>>;

    struct Table {
        sets: HashSet<Labels>,
        /// Size after the last sweep: the next sweep runs when the table has doubled.
        swept_at: usize,
    }

    fn table() -> &'static Mutex<Table> {
        static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
        TABLE.get_or_init(|| {
            Mutex::new(Table {
                sets: HashSet::new(),
                swept_at: 0,
            })
        })
    }

    /// The shared copy of `labels`.
    pub fn interned(labels: BTreeMap<String, String>) -> Labels {
        let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = t.sets.get(&labels) {
            return found.clone();
        }
        if t.sets.len() >= (2 * t.swept_at).max(1024) {
            // Sets only the table still holds are no one's any more.
            t.sets.retain(|s| Arc::strong_count(s) > 1);
            t.swept_at = t.sets.len();
        }
        let shared = Arc::new(labels);
        t.sets.insert(shared.clone());
        shared
    }

    /// Distinct sets currently in the table (for tests and diagnostics).
    pub fn distinct() -> usize {
        table().lock().unwrap_or_else(|e| e.into_inner()).sets.len()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn set(app: &str) -> BTreeMap<String, String> {
            BTreeMap::from([
                ("app".to_string(), app.to_string()),
                ("pod-template-hash".into(), "abc".into()),
            ])
        }

        #[test]
        fn equal_sets_share_one_copy_and_unused_ones_go() {
            let a = interned(set("intern-test-a"));
            let b = interned(set("intern-test-a"));
            assert!(Arc::ptr_eq(&a, &b));
            let c = interned(set("intern-test-c"));
            assert!(!Arc::ptr_eq(&a, &c));
            assert_eq!(c["app"], "intern-test-c");
            // Drop every holder of c, then grow the table past a sweep: c is gone, a stays.
            let weak_c = Arc::downgrade(&c);
            drop(c);
            let keep: Vec<Labels> = (0..3000)
                .map(|i| interned(set(&format!("intern-test-{i}"))))
                .collect();
            assert!(weak_c.upgrade().is_none(), "an unused set is swept");
            assert!(
                Arc::ptr_eq(&a, &interned(set("intern-test-a"))),
                "a held set stays shared"
            );
            assert!(distinct() >= keep.len());
        }
    }
}
