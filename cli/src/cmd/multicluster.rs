//! `strait multicluster …` and `strait mirror`: install manifests, links and their
//! credentials, the service mirror, gateway health and checks.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use k8s_openapi::api::core::v1::{Secret, Service};
use serde_json::{Value, json};
use strait_api::labels::{mirror as ml, multicluster as mcl};
use strait_api::mesh::link::Link;
use strait_api::store::kube::KubeStore;
use strait_api::store::local::LocalStore;
use strait_api::{Kind, Object, ObjectKey, Store, StoreError, WatchEvent};
use strait_controller::api::store::ApiStore;
use strait_controller::api::{ApiEndpoint, MULTICLUSTER_NS, files};
use strait_mirror::controller::{LinkReport, MirrorOptions, Reports, run_mirror};
use strait_mirror::reconcile::ServiceRange;

use crate::{Global, exit};

/// The Secret type of local-mode link credentials.
pub const LOCAL_CREDENTIALS_TYPE: &str = "mirror.linkerd.io/remote-api";
/// The Secret type of Kubernetes link credentials (Linkerd's).
pub const KUBECONFIG_TYPE: &str = "mirror.linkerd.io/remote-kubeconfig";
/// The remote-access service account `link` issues credentials for.
const REMOTE_ACCESS_SA: &str = "linkerd-service-mirror-remote-access-default";

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    exit::code(exit::FAILURE)
}

fn print(values: &[Value]) {
    print!("{}", strait_api::yaml::to_yaml(values));
}

/// Any store a mirror side can be.
#[derive(Clone)]
pub enum AnyStore {
    /// A state directory this process owns.
    Local(LocalStore),
    /// A running local cluster's API.
    Api(ApiStore),
    /// Kubernetes.
    Kube(KubeStore),
    /// A linked cluster read through the local gateway's link (read-only).
    Gateway(strait_mirror::catalog::GatewayStore),
}

macro_rules! each {
    ($s:expr, $x:ident => $e:expr) => {
        match $s {
            AnyStore::Local($x) => $e,
            AnyStore::Api($x) => $e,
            AnyStore::Kube($x) => $e,
            AnyStore::Gateway($x) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        each!(self, s => s.get(namespace, name).await)
    }
    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        each!(self, s => s.list(namespace).await)
    }
    fn watch<K: Kind>(&self) -> futures::stream::BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        each!(self, s => s.watch())
    }
    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        each!(self, s => s.apply(objects).await)
    }
    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        each!(self, s => s.delete(key).await)
    }
    async fn apply_status(&self, object: Object) -> Result<(), StoreError> {
        each!(self, s => s.apply_status(object).await)
    }
}

/// The gateway's proxy entry port (`strait gateway --proxy-entry`) in Kubernetes.
pub const PROXY_ENTRY_PORT: u16 = 4180;
/// The ClusterIP Service in front of the gateway's proxy entry.
pub const GATEWAY_ENTRY_SERVICE: &str = "linkerd-gateway-entry";

/// `multicluster install`: the gateway, the service mirror and their RBAC.
pub fn install_manifests(trust_domain: &str, gateway_port: u16) -> Vec<Value> {
    let ns = MULTICLUSTER_NS;
    let gw_identity = format!("linkerd-gateway.{ns}.serviceaccount.identity.linkerd.{trust_domain}");
    let labels = json!({"linkerd.io/extension": "multicluster", "app": "linkerd-gateway"});
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
            "labels": {"linkerd.io/extension": "multicluster"},
            "annotations": {"linkerd.io/inject": "enabled"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "linkerd-gateway", "namespace": ns}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "linkerd-gateway", "namespace": ns, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "linkerd-gateway"}},
                "template": {"metadata": {"labels": labels, "annotations": {"linkerd.io/inject": "disabled"}},
                    "spec": {"serviceAccountName": "linkerd-gateway", "containers": [{
                        "name": "gateway", "image": "strait:latest",
                        "args": ["gateway", "--identity-trust-anchors-file", "/var/run/linkerd/identity/ca.crt",
                            "--identity-cert-file", "/var/run/linkerd/identity/tls.crt",
                            "--identity-key-file", "/var/run/linkerd/identity/tls.key",
                            // Linked gateways' mirrors read Services through the link.
                            "--serve-exports", "--kubernetes",
                            // One link per Link object of this cluster, and one entry where
                            // local proxies and the mirror open streams on any of them.
                            "--watch-links", "--proxy-entry", format!("0.0.0.0:{PROXY_ENTRY_PORT}")],
                        "ports": [
                            {"name": "mc-proxy-entry", "containerPort": PROXY_ENTRY_PORT, "protocol": "TCP"},
                            {"name": "mc-gateway", "containerPort": 4143, "protocol": "TCP"},
                            {"name": "mc-gateway-quic", "containerPort": 4143, "protocol": "UDP"},
                            {"name": "mc-probe", "containerPort": 4191, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 4191}},
                        "livenessProbe": {"httpGet": {"path": "/ready", "port": 4191}}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "linkerd-gateway", "namespace": ns, "labels": labels,
            "annotations": {
                ml::GATEWAY_IDENTITY: gw_identity,
                ml::PROBE_PERIOD: "3",
                ml::PROBE_PATH: "/ready",
                ml::MULTICLUSTER_GATEWAY: "true"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "linkerd-gateway"}, "ports": [
                {"name": "mc-gateway", "port": gateway_port, "targetPort": 4143, "protocol": "TCP"},
                {"name": "mc-gateway-quic", "port": gateway_port, "targetPort": 4143, "protocol": "UDP"},
                {"name": "mc-probe", "port": 4191, "targetPort": 4191, "protocol": "TCP"}]}}),
        // The proxy entry is plaintext `strt` for this cluster's proxies and mirror only:
        // a ClusterIP Service of its own, never the LoadBalancer above.
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": GATEWAY_ENTRY_SERVICE, "namespace": ns, "labels": labels},
            "spec": {"type": "ClusterIP", "selector": {"app": "linkerd-gateway"}, "ports": [
                {"name": "mc-proxy-entry", "port": PROXY_ENTRY_PORT, "targetPort": PROXY_ENTRY_PORT, "protocol": "TCP"}]}}),
        // The gateway's catalog (`--serve-exports`): Services, and pods for their service
        // accounts, read-only; and the Links it dials (`--watch-links`).
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "linkerd-gateway"},
            "rules": [{"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [mcl::GROUP], "resources": ["links"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "linkerd-gateway"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "linkerd-gateway"},
            "subjects": [{"kind": "ServiceAccount", "name": "linkerd-gateway", "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": REMOTE_ACCESS_SA, "namespace": ns}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": format!("{REMOTE_ACCESS_SA}-token"), "namespace": ns,
                "annotations": {"kubernetes.io/service-account.name": REMOTE_ACCESS_SA}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "linkerd-service-mirror-remote-access-default"},
            "rules": [{"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "linkerd-service-mirror-remote-access-default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "linkerd-service-mirror-remote-access-default"},
            "subjects": [{"kind": "ServiceAccount", "name": REMOTE_ACCESS_SA, "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "linkerd-service-mirror", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "linkerd-service-mirror"},
            "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["namespaces", "secrets"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [mcl::GROUP], "resources": ["links"], "verbs": ["get", "list", "watch"]},
                // The mirror reports each Link's mirrored services in its status.
                {"apiGroups": [mcl::GROUP], "resources": ["links/status"], "verbs": ["get", "patch", "update"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "linkerd-service-mirror"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "linkerd-service-mirror"},
            "subjects": [{"kind": "ServiceAccount", "name": "linkerd-service-mirror", "namespace": ns}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "linkerd-service-mirror", "namespace": ns,
                "labels": {"linkerd.io/extension": "multicluster", "component": "linkerd-service-mirror"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"component": "linkerd-service-mirror"}},
                "template": {"metadata": {"labels": {"linkerd.io/extension": "multicluster", "component": "linkerd-service-mirror"}},
                    "spec": {"serviceAccountName": "linkerd-service-mirror", "containers": [{
                        "name": "service-mirror", "image": "strait:latest",
                        "args": ["mirror", "--kubernetes", "--admin-addr", "0.0.0.0:9999",
                            // Strait proxies reach linked clusters through the local
                            // gateway, and the mirror reads them through its links.
                            "--gateway-entry", format!("{GATEWAY_ENTRY_SERVICE}.{ns}.svc.cluster.local:{PROXY_ENTRY_PORT}")],
                        "ports": [{"name": "admin-http", "containerPort": 9999}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 9999}}}]}}}}),
    ]
}

/// Arguments of `multicluster install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The mesh's trust domain (the gateway identity's suffix).
    #[arg(long, default_value = "cluster.local")]
    pub identity_trust_domain: String,
    /// The gateway Service's port.
    #[arg(long, default_value_t = 4143)]
    pub gateway_port: u16,
}

/// Runs `multicluster install`.
pub fn install(args: &InstallArgs) -> ExitCode {
    if let Err(e) = strait_identity::TrustDomain::new(&args.identity_trust_domain) {
        return fail(format!(
            "--identity-trust-domain {:?}: {e}",
            args.identity_trust_domain
        ));
    }
    let objects = install_manifests(&args.identity_trust_domain, args.gateway_port);
    print(&objects);
    eprintln!(
        "Multicluster manifests printed ({} objects): `strait multicluster install | kubectl apply -f -`.",
        objects.len()
    );
    ExitCode::SUCCESS
}

/// Arguments of `multicluster link`.
#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The name this (target) cluster gets in the linking cluster: mirrors are `<svc>-<name>`.
    #[arg(long)]
    pub cluster_name: String,
    /// The gateway's addresses, comma-separated (default: the linkerd-gateway Service's).
    #[arg(long)]
    pub gateway_addresses: Option<String>,
    /// The gateway's port.
    #[arg(long, default_value_t = 4143)]
    pub gateway_port: u16,
    /// Services to mirror through the gateway.
    #[arg(long, default_value = "mirror.linkerd.io/exported=true")]
    pub selector: String,
    /// Services to mirror in remote-discovery mode.
    #[arg(long, default_value = "mirror.linkerd.io/exported=remote-discovery")]
    pub remote_discovery_selector: String,
    /// Services that join federated services.
    #[arg(long, default_value = "mirror.linkerd.io/federated=member")]
    pub federated_service_selector: String,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub identity_trust_domain: String,
    /// The target cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Lifetime of the issued read-only credentials (local mode).
    #[arg(long, default_value = "8760h")]
    pub credentials_lifetime: String,
    /// The target's API server address as the linking cluster reaches it (Kubernetes
    /// mode; default: the current kubeconfig context's server).
    #[arg(long)]
    pub api_server_address: Option<String>,
}

/// `a=b,c=d` as a label selector.
fn selector(flag: &str, s: &str) -> Result<Value, String> {
    let mut labels = serde_json::Map::new();
    for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{flag} {s:?}: expected key=value pairs, comma-separated"))?;
        strait_api::names::qualified_name(k.trim())
            .map_err(|e| format!("{flag} {s:?}: key {k:?}: expected {e}"))?;
        strait_api::names::label_value(v.trim())
            .map_err(|e| format!("{flag} {s:?}: value {v:?}: expected {e}"))?;
        labels.insert(k.trim().into(), Value::String(v.trim().into()));
    }
    Ok(json!({"matchLabels": labels}))
}

/// The Link object `link` prints.
pub fn link_object(args: &LinkArgs, gateway_addresses: &str) -> Result<Value, String> {
    strait_api::names::dns1123_label(&args.cluster_name)
        .map_err(|e| format!("--cluster-name {:?}: expected {e}", args.cluster_name))?;
    let obj = json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link",
        "metadata": {"name": args.cluster_name, "namespace": MULTICLUSTER_NS},
        "spec": {
            "targetClusterName": args.cluster_name,
            "targetClusterDomain": args.cluster_domain,
            "targetClusterLinkerdNamespace": "linkerd",
            "clusterCredentialsSecret": format!("cluster-credentials-{}", args.cluster_name),
            "gatewayAddress": gateway_addresses,
            "gatewayPort": args.gateway_port.to_string(),
            "gatewayIdentity": format!("linkerd-gateway.{MULTICLUSTER_NS}.serviceaccount.identity.linkerd.{}", args.identity_trust_domain),
            "probeSpec": {"path": "/ready", "port": "4191", "period": "3s", "timeout": "30s", "failureThreshold": "3"},
            "selector": selector("--selector", &args.selector)?,
            "remoteDiscoverySelector": selector("--remote-discovery-selector", &args.remote_discovery_selector)?,
            "federatedServiceSelector": selector("--federated-service-selector", &args.federated_service_selector)?,
        },
    });
    // What is printed must load and validate exactly as the linking cluster will read it.
    let text = serde_json::to_string(&obj).expect("serializes");
    strait_api::loader::load_str("<link>", &text, &Default::default())
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    Ok(obj)
}

/// The gateway addresses: the flag, or the linkerd-gateway Service's external addresses.
fn gateway_addresses(args: &LinkArgs, gateway: Option<&Service>) -> Result<String, String> {
    if let Some(a) = &args.gateway_addresses {
        return Ok(a.clone());
    }
    let found: Vec<String> = gateway
        .into_iter()
        .flat_map(|s| {
            let ext = s
                .spec
                .as_ref()
                .and_then(|sp| sp.external_ips.clone())
                .unwrap_or_default();
            let lb = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip.or(i.hostname));
            ext.into_iter().chain(lb).collect::<Vec<_>>()
        })
        .collect();
    if found.is_empty() {
        return Err(format!(
            "no gateway address: the Service {MULTICLUSTER_NS}/linkerd-gateway {} no external address; pass --gateway-addresses ADDR[,ADDR…]",
            if gateway.is_some() {
                "has"
            } else {
                "does not exist, so it has"
            }
        ));
    }
    Ok(found.join(","))
}

/// Runs `multicluster link` against the target cluster: a local cluster (`--state-dir`)
/// or, without one, the Kubernetes cluster of the current kubeconfig context.
pub fn link(g: &Global, args: &LinkArgs) -> ExitCode {
    let (objects, apply) = match g.state_dir.as_deref() {
        Some(dir) => (
            local_link(dir, g, args),
            "`strait --state-dir LINKING apply -f -`",
        ),
        None => (
            super::runtime().block_on(kube_link(args)),
            "`kubectl --context LINKING apply -f -`",
        ),
    };
    match objects {
        Ok(objects) => {
            print(&objects);
            eprintln!(
                "Link and credentials for cluster {} printed: apply them to the linking cluster ({apply}), which runs `strait mirror`.",
                args.cluster_name
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `multicluster link` in Kubernetes mode: the API server and CA of the current
/// kubeconfig context (or the pod's service account), as Linkerd's does.
async fn kube_link(args: &LinkArgs) -> Result<Vec<Value>, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no target cluster: pass --state-dir DIR of the target cluster (a local cluster), or point the kubeconfig's current context at the Kubernetes cluster to link ({e})")
    })?;
    let server = match &args.api_server_address {
        Some(a) => a.clone(),
        None => config.cluster_url.to_string().trim_end_matches('/').to_string(),
    };
    let ca: Option<String> = config.root_cert.as_ref().map(|certs| {
        certs
            .iter()
            .map(|der| strait_identity::encode_pem("CERTIFICATE", der))
            .collect()
    });
    let client = kube::Client::try_from(config).map_err(|e| format!("cannot use the kubeconfig: {e}"))?;
    kube_link_objects(&KubeStore::new(client), &server, ca.as_deref(), args).await
}

/// Base64 without a new dependency: a `ByteString` serializes as base64.
fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The Link and the kubeconfig Secret (Linkerd's `mirror.linkerd.io/remote-kubeconfig`)
/// of a Kubernetes target reached through `store`, whose API the linking cluster's mirror
/// reaches at `server` (with CA `ca`): the remote-access service account's token, the
/// gateway's addresses, and the mesh trust anchors (`ca-bundle.crt`, for `check`).
pub async fn kube_link_objects(
    store: &impl Store,
    server: &str,
    ca: Option<&str>,
    args: &LinkArgs,
) -> Result<Vec<Value>, String> {
    let token_secret = format!("{REMOTE_ACCESS_SA}-token");
    let install = "run `strait multicluster install | kubectl apply -f -` against the target cluster first";
    let secret: Secret = store
        .get(MULTICLUSTER_NS, &token_secret)
        .await
        .map_err(|e| format!("reading Secret {MULTICLUSTER_NS}/{token_secret}: {e}"))?
        .ok_or_else(|| format!("Secret {MULTICLUSTER_NS}/{token_secret} not found: {install}"))?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!("Secret {MULTICLUSTER_NS}/{token_secret}: data.token is empty; Kubernetes fills it in for the service account {REMOTE_ACCESS_SA}, wait a moment and retry")
        })?;
    let gateway: Option<Service> = store
        .get(MULTICLUSTER_NS, "linkerd-gateway")
        .await
        .map_err(|e| format!("reading Service {MULTICLUSTER_NS}/linkerd-gateway: {e}"))?;
    let addresses = gateway_addresses(args, gateway.as_ref())?;
    let roots: Option<k8s_openapi::api::core::v1::ConfigMap> = store
        .get("linkerd", "linkerd-identity-trust-roots")
        .await
        .map_err(|e| format!("reading ConfigMap linkerd/linkerd-identity-trust-roots: {e}"))?;
    let anchors = roots
        .and_then(|c| c.data?.get("ca-bundle.crt").cloned())
        .ok_or("ConfigMap linkerd/linkerd-identity-trust-roots has no data.ca-bundle.crt: is the control plane installed in the target cluster (`strait install`)?")?;
    strait_identity::TrustAnchors::from_pem(anchors.as_bytes(), "ca-bundle.crt", SystemTime::now())
        .map_err(|e| format!("ConfigMap linkerd/linkerd-identity-trust-roots: data.ca-bundle.crt: {e}"))?;
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca {
        cluster["certificate-authority-data"] = json!(base64(ca.as_bytes()));
    }
    let name = &args.cluster_name;
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": REMOTE_ACCESS_SA, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": REMOTE_ACCESS_SA}}],
        "current-context": name,
    });
    let link = link_object(args, &addresses)?;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": KUBECONFIG_TYPE,
        "metadata": {"name": format!("cluster-credentials-{name}"), "namespace": MULTICLUSTER_NS,
            "labels": {mcl::CLUSTER_NAME: name}},
        "stringData": {
            // JSON is YAML: one document, as kubeconfig readers expect.
            "kubeconfig": serde_json::to_string_pretty(&kubeconfig).expect("JSON values serialize"),
            "ca-bundle.crt": anchors,
        },
    });
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MULTICLUSTER_NS}});
    Ok(vec![namespace, secret, link])
}

fn local_link(dir: &Path, g: &Global, args: &LinkArgs) -> Result<Vec<Value>, String> {
    let endpoint = files::read_endpoint(dir).map_err(|e| match e {
        files::EndpointFileError::Unreadable { .. } => format!(
            "{e}; the target cluster's controller must be running (its API is what the linking cluster's mirror reads)"
        ),
        damaged => damaged.to_string(),
    })?;
    let now = SystemTime::now();
    let id_dir = dir.join("identity");
    let anchors = strait_identity::TrustAnchors::load(files::anchors(dir), now).map_err(|e| e.to_string())?;
    let issuer = strait_identity::Issuer::load_files(
        id_dir.join("issuer.crt"),
        id_dir.join("issuer.key"),
        &anchors,
        now,
    )
    .map_err(|e| format!("the target's issuer in {}: {e}", id_dir.display()))?;
    let lifetime = strait_api::names::duration(&args.credentials_lifetime).map_err(|e| {
        format!(
            "--credentials-lifetime {:?}: expected {e}",
            args.credentials_lifetime
        )
    })?;
    let reader =
        strait_identity::IdentityName::new(REMOTE_ACCESS_SA, MULTICLUSTER_NS, &args.identity_trust_domain)
            .map_err(|e| format!("--identity-trust-domain {:?}: {e}", args.identity_trust_domain))?;
    let (chain, key) = strait_controller::api::issue(&issuer, &reader, lifetime, now)?;
    let cert_pem: String = chain
        .iter()
        .map(|c| strait_identity::encode_pem("CERTIFICATE", c))
        .collect();
    let key_pem = strait_identity::encode_pem("PRIVATE KEY", key.secret_der());
    let gateway = {
        let _ = g;
        let rt = super::runtime();
        match LocalStore::open(dir) {
            Ok(s) => rt
                .block_on(s.get::<Service>(MULTICLUSTER_NS, "linkerd-gateway"))
                .ok()
                .flatten(),
            Err(_) => None,
        }
    };
    let addresses = gateway_addresses(args, gateway.as_ref())?;
    let link = link_object(args, &addresses)?;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": LOCAL_CREDENTIALS_TYPE,
        "metadata": {"name": format!("cluster-credentials-{}", args.cluster_name), "namespace": MULTICLUSTER_NS,
            "labels": {mcl::CLUSTER_NAME: args.cluster_name}},
        "stringData": {
            "api-address": endpoint.address,
            "api-identity": endpoint.server_identity,
            "ca.crt": anchors.to_pem(),
            "tls.crt": cert_pem,
            "tls.key": key_pem,
        },
    });
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MULTICLUSTER_NS}});
    Ok(vec![namespace, secret, link])
}

/// `data.KEY` (or `stringData.KEY`) of a credentials Secret.
fn secret_field(secret: &Secret, k: &str) -> Result<String, String> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(k).cloned())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .ok_or_else(|| format!("data.{k} is missing; re-create the Secret with `strait multicluster link`"))
}

/// The target cluster of a Linkerd-style kubeconfig Secret (`type:
/// mirror.linkerd.io/remote-kubeconfig`, `data.kubeconfig`): its Kubernetes API, with the
/// kubeconfig's current context.
pub async fn connect_kubeconfig(secret: &Secret) -> Result<AnyStore, String> {
    let text = secret_field(secret, "kubeconfig")?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("data.kubeconfig is not a kubeconfig: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("data.kubeconfig: {e}"))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("data.kubeconfig: {e}"))?;
    Ok(AnyStore::Kube(KubeStore::new(client)))
}

/// Whether a credentials Secret can be used: a kubeconfig that loads, or local-mode API
/// credentials that verify (nothing is contacted).
fn validate_credentials(rt: &tokio::runtime::Runtime, s: &Secret) -> Result<(), String> {
    if s.type_.as_deref() == Some(KUBECONFIG_TYPE) {
        return rt.block_on(connect_kubeconfig(s)).map(drop);
    }
    connect_local(s).map(drop)
}

/// The target store a local-mode credentials Secret names.
pub fn connect_local(secret: &Secret) -> Result<AnyStore, String> {
    let field = |k: &str| secret_field(secret, k);
    match secret.type_.as_deref() {
        Some(LOCAL_CREDENTIALS_TYPE) => {}
        Some(KUBECONFIG_TYPE) => {
            return Err("holds a kubeconfig: read it with `connect_kubeconfig`".into());
        }
        other => return Err(format!("type {other:?}: expected {LOCAL_CREDENTIALS_TYPE:?}")),
    }
    let endpoint = ApiEndpoint {
        address: field("api-address")?,
        server_identity: field("api-identity")?,
    };
    let anchors = strait_identity::TrustAnchors::from_pem(
        field("ca.crt")?.as_bytes(),
        "data.ca.crt",
        SystemTime::now(),
    )
    .map_err(|e| format!("data.ca.crt: {e}"))?;
    use strait_identity::pki_types::pem::PemObject;
    let chain = strait_identity::pki_types::CertificateDer::pem_slice_iter(field("tls.crt")?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("data.tls.crt: {e}"))?;
    let key = strait_identity::pki_types::PrivateKeyDer::from_pem_slice(field("tls.key")?.as_bytes())
        .map_err(|e| format!("data.tls.key: {e}"))?;
    let certs = strait_identity::CertStore::with_cert(chain, key)
        .map_err(|e| format!("data.tls.crt/tls.key: {e}"))?;
    let client = strait_controller::api::client::ApiClient::new(endpoint, &anchors, &certs)
        .map_err(|e| e.to_string())?;
    Ok(AnyStore::Api(ApiStore::new(
        client,
        strait_controller::api::store::POLL,
    )))
}

/// Arguments of `mirror`.
#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// Run against the Kubernetes API instead of --state-dir.
    #[arg(long)]
    pub kubernetes: bool,
    /// Admin server (`/ready`, `/gateways`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:9996")]
    pub admin_addr: std::net::SocketAddr,
    /// Local mode: the range mirror Services take cluster IPs from.
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// Local mode: also serve the cluster DNS on this address (UDP and TCP).
    #[arg(long)]
    pub dns_addr: Option<std::net::SocketAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The local gateway's proxy entry (`strait gateway --proxy-entry ADDR`): ADDR for
    /// every Link, or CLUSTER=ADDR for the Link whose targetClusterName is CLUSTER (an entry
    /// of that link alone, `--proxy-entry CLUSTER=ADDR`). Those clusters' mirrors then send
    /// Strait proxies through the local gateway with the remote workload's identity, and
    /// the mirror reads those clusters through the gateway link (repeatable: one ADDR, one
    /// CLUSTER=ADDR per cluster; stock Linkerd proxies need the mirror without it).
    #[arg(long = "gateway-entry", value_name = "[CLUSTER=]ADDR")]
    pub gateway_entries: Vec<String>,
}

/// `--gateway-entry` values: the entry of every link, and the entries of single links by
/// cluster.
pub type GatewayEntries = (
    Option<String>,
    std::collections::BTreeMap<String, std::net::SocketAddr>,
);

/// `--gateway-entry [CLUSTER=]ADDR` values.
pub fn parse_gateway_entries(values: &[String]) -> Result<GatewayEntries, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut every = None;
    for value in values {
        let Some((cluster, addr)) = value.split_once('=') else {
            // HOST:PORT: in Kubernetes, the entry's Service name (resolved once, at start).
            let shape = || {
                format!(
                    "--gateway-entry {value:?}: expected ADDR (the gateway's proxy entry IP:PORT or HOST:PORT) or CLUSTER=ADDR (for one Link's targetClusterName)"
                )
            };
            match value.parse::<std::net::SocketAddr>() {
                Ok(addr) if addr.port() == 0 => return Err(shape()),
                Ok(_) => {}
                Err(_) => {
                    let (host, _) = value.rsplit_once(':').ok_or_else(shape)?;
                    super::gateway::parse_host_port("--gateway-entry", value).map_err(|_| shape())?;
                    strait_gateway::Authority::new(host).map_err(|_| shape())?;
                }
            }
            if every.replace(value.clone()).is_some() {
                return Err("--gateway-entry: the entry of every link is given twice".into());
            }
            continue;
        };
        strait_api::names::dns1123_label(cluster)
            .map_err(|e| format!("--gateway-entry {value:?}: the cluster name {cluster:?}: {e}"))?;
        let addr: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| format!("--gateway-entry {value:?}: {addr:?} is not an IP:PORT address"))?;
        if out.insert(cluster.to_string(), addr).is_some() {
            return Err(format!("--gateway-entry: cluster {cluster:?} is given twice"));
        }
    }
    Ok((every, out))
}

/// The address of `--gateway-entry HOST:PORT` (an IP:PORT is itself), through the
/// system's resolver.
async fn resolve_entry(value: &str) -> Result<std::net::SocketAddr, String> {
    resolve_entry_with(value, |name| async move {
        tokio::net::lookup_host(name).await.map(Iterator::collect)
    })
    .await
}

/// [`resolve_entry`] with the name lookup given.
async fn resolve_entry_with<F, Fut>(value: &str, lookup: F) -> Result<std::net::SocketAddr, String>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>>,
{
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let fail = |why: String| {
        format!(
            "--gateway-entry {value:?}: {why}; is the gateway's entry Service ({GATEWAY_ENTRY_SERVICE}) installed?"
        )
    };
    let addrs = lookup(value.to_string())
        .await
        .map_err(|e| fail(format!("cannot resolve it ({e})")))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| fail("the name has no address".into()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs `mirror`.
pub fn mirror(g: &Global, args: &MirrorArgs) -> ExitCode {
    let range = match args.service_cidr.as_deref().map(ServiceRange::parse).transpose() {
        Ok(r) => r,
        Err(e) => return fail(format!("--service-cidr: expected {e}")),
    };
    if args.dns_addr.is_some() && range.is_none() && !args.kubernetes {
        return fail(
            "--dns-addr needs --service-cidr: mirror Services take their cluster IPs from that range, and without them their names would answer no address (strait up passes both)",
        );
    }
    let (gateway_entry, gateway_entries) = match parse_gateway_entries(&args.gateway_entries) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let local = if args.kubernetes {
        match rt.block_on(kube::Client::try_default()) {
            Ok(c) => AnyStore::Kube(KubeStore::new(c)),
            Err(e) => {
                return fail(format!(
                    "cannot reach the Kubernetes API: {e}; check KUBECONFIG or the in-cluster service account"
                ));
            }
        }
    } else {
        match super::open_local(g) {
            Ok(super::LocalCluster::Direct(s)) => AnyStore::Local(s),
            Ok(super::LocalCluster::Api(c)) => {
                AnyStore::Api(ApiStore::new(c, strait_controller::api::store::POLL))
            }
            Err(code) => return code,
        }
    };
    let gateway_entry = match gateway_entry.map(|e| rt.block_on(resolve_entry(&e))).transpose() {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let opts = MirrorOptions {
        service_range: range,
        gateway_entry,
        gateway_entries,
        ..Default::default()
    };
    rt.block_on(async move {
        let admin = match tokio::net::TcpListener::bind(args.admin_addr).await {
            Ok(l) => l,
            Err(e) => {
                return fail(format!(
                    "cannot listen on {} for the mirror's admin server: {e}; pass --admin-addr",
                    args.admin_addr
                ));
            }
        };
        let admin_addr = admin.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Some(dir) = g.state_dir.as_deref() {
            let _ = std::fs::write(mirror_file(dir), json!({"admin": admin_addr}).to_string());
        }
        let reports = Reports::default();
        tokio::spawn(strait_mirror::admin::serve(
            admin,
            reports.clone(),
            std::future::pending(),
        ));
        let mut dns_bound = None;
        if let Some(addr) = args.dns_addr {
            // UDP and TCP on one port: with port 0, TCP takes the port UDP was given.
            let bind = async {
                let udp = tokio::net::UdpSocket::bind(addr).await?;
                let tcp = tokio::net::TcpListener::bind(udp.local_addr()?).await?;
                Ok::<_, std::io::Error>((udp, tcp))
            };
            let (udp, tcp) = match bind.await {
                Ok(pair) => pair,
                Err(e) => {
                    return fail(format!(
                        "cannot listen on {addr} for the cluster DNS: {e}; pass another --dns-addr"
                    ));
                }
            };
            dns_bound = udp.local_addr().ok();
            let index = strait_mirror::dns::DnsIndex::default();
            let store = local.clone();
            let feeder = index.clone();
            tokio::spawn(async move {
                loop {
                    let e = strait_mirror::dns::run_index(store.clone(), feeder.clone()).await;
                    tracing::warn!(error = %e, "cluster DNS lost a watch of the cluster's objects; restarting its index");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            let domain = args.cluster_domain.clone();
            tokio::spawn(async move {
                strait_mirror::dns::serve(udp, tcp, &domain, index, std::future::pending()).await
            });
        }
        println!("{}", json!({"admin": admin_addr, "dns": dns_bound}));
        let options = opts.clone();
        // A link with a gateway entry is read through the gateway link (no credentials,
        // no exposure of the target's API); any other through its credentials Secret:
        // a local cluster's API credentials, or Linkerd's kubeconfig.
        let connect = move |link: strait_mirror::LinkConfig, s: Option<Secret>| {
            let entry = options.entry_for(&link.target_cluster);
            async move {
                if let Some(entry) = entry {
                    return Ok(AnyStore::Gateway(strait_mirror::catalog::GatewayStore::at(
                        &entry,
                        link.target_cluster,
                    )));
                }
                let s = s.ok_or("not found")?;
                if s.type_.as_deref() == Some(KUBECONFIG_TYPE) {
                    return connect_kubeconfig(&s).await;
                }
                connect_local(&s)
            }
        };
        // Linkerd's failover operator: managed TrafficSplits follow their backends' readiness.
        tokio::spawn(strait_mirror::failover::run_failover(
            local.clone(),
            std::future::pending(),
        ));
        run_mirror(local, connect, opts, reports, shutdown_signal()).await;
        if let Some(dir) = g.state_dir.as_deref() {
            let _ = std::fs::remove_file(mirror_file(dir));
        }
        ExitCode::SUCCESS
    })
}

/// Where a local cluster's running mirror publishes its admin address.
pub fn mirror_file(dir: &Path) -> std::path::PathBuf {
    dir.join("mirror.json")
}

/// `GET path` of an admin server, as JSON.
async fn fetch_json(addr: &str, path: &str, what: &str) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the {what}'s admin server at {addr}: {e}; is it running?"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body)
        .map_err(|e| format!("the {what} answered {path} with something unreadable: {e}"))
}

async fn fetch_reports(addr: &str) -> Result<Vec<LinkReport>, String> {
    let v = fetch_json(addr, "/gateways", "mirror")
        .await
        .map_err(|e| e.replace("is it running?", "is `strait mirror` running?"))?;
    let v: Vec<Value> =
        serde_json::from_value(v).map_err(|e| format!("the mirror answered something unreadable: {e}"))?;
    Ok(v.into_iter().map(report_from).collect())
}

/// One link of the local gateway, as its admin server's `/links` reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayLink {
    /// The target cluster.
    pub cluster: String,
    /// Whether the QUIC link is up and its probes answer.
    pub alive: bool,
    /// Why it is not, with what to do.
    pub last_error: Option<String>,
}

async fn fetch_links(addr: &str) -> Result<Vec<GatewayLink>, String> {
    let v = fetch_json(addr, "/links", "gateway")
        .await
        .map_err(|e| e.replace("is it running?", "is `strait gateway` running?"))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|l| GatewayLink {
            cluster: l["cluster"].as_str().unwrap_or_default().into(),
            alive: l["alive"].as_bool().unwrap_or(false),
            last_error: l["lastError"].as_str().map(str::to_string),
        })
        .collect())
}

/// Whether the gateway's `links` include one to `cluster` (a Link names it), and if not,
/// what to do.
pub fn link_in_gateway(cluster: &str, links: &[GatewayLink]) -> (bool, Option<String>) {
    if links.iter().any(|l| l.cluster == cluster) {
        return (true, None);
    }
    (
        false,
        Some(format!(
            "a Link names {cluster} but the gateway has no link to it: run the gateway with --watch-links (or --link {cluster}=ADDR), and see its log for why the Link was not dialed"
        )),
    )
}

/// Where a local cluster's running gateway publishes its admin address.
pub fn gateway_file(dir: &Path) -> std::path::PathBuf {
    dir.join("gateway.json")
}

/// The local gateway's admin address: the flag, else the one published in the state
/// directory; `None` when there is no local gateway to ask.
fn gateway_admin(g: &Global, flag: Option<&str>) -> Option<String> {
    if let Some(a) = flag {
        return Some(a.to_string());
    }
    let text = std::fs::read(gateway_file(g.state_dir.as_deref()?)).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v["admin"].as_str().map(str::to_string)
}

fn report_from(v: Value) -> LinkReport {
    let mut r = LinkReport {
        link: v["link"].as_str().unwrap_or_default().into(),
        cluster: v["cluster"].as_str().unwrap_or_default().into(),
        through_gateway: v["throughGateway"].as_bool().unwrap_or(false),
        remote_connected: v["remoteConnected"].as_bool().unwrap_or(false),
        synced: v["synced"].as_bool().unwrap_or(false),
        error: v["error"].as_str().map(str::to_string),
        ..Default::default()
    };
    r.gateway = serde_json::from_value(v["gateway"].clone()).unwrap_or_default();
    r.mirrors = v["mirrors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| strait_mirror::controller::MirrorEntry {
            remote: m["remote"].as_str().unwrap_or_default().into(),
            mirror: m["mirror"].as_str().unwrap_or_default().into(),
            mode: if m["mode"] == "remote-discovery" {
                "remote-discovery"
            } else {
                "gateway"
            },
        })
        .collect();
    r.skipped = v["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| strait_mirror::controller::SkippedEntry {
            remote: s["remote"].as_str().unwrap_or_default().into(),
            reason: "Skipped",
            message: s["message"].as_str().unwrap_or_default().into(),
        })
        .collect();
    r
}

fn mirror_admin(g: &Global, flag: Option<&str>) -> Result<String, String> {
    if let Some(a) = flag {
        return Ok(a.to_string());
    }
    let Some(dir) = g.state_dir.as_deref() else {
        return Err("pass --state-dir DIR of the linking cluster, or --mirror-addr HOST:PORT of its mirror's admin server (in Kubernetes: `kubectl -n linkerd-multicluster port-forward deploy/linkerd-service-mirror 9999`)".into());
    };
    let text = std::fs::read(mirror_file(dir)).map_err(|_| {
        format!(
            "no mirror runs on {}: start `strait --state-dir {} mirror`",
            dir.display(),
            dir.display()
        )
    })?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is damaged: {e}", mirror_file(dir).display()))?;
    v["admin"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} names no admin address", mirror_file(dir).display()))
}

/// The `gateways` table: a cluster is alive when its gateway's probe answers and, where
/// the local gateway is known, its QUIC link is up; each link that is down follows the
/// table with why and what to do.
pub fn gateways_table(reports: &[LinkReport], links: &[GatewayLink]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{}ms", v.round() as u64));
    let mut rows = vec![
        [
            "CLUSTER",
            "ALIVE",
            "NUM_SVC",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let link_of = |cluster: &str| links.iter().find(|l| l.cluster == cluster);
    let mut clusters: Vec<(&str, Option<&LinkReport>)> =
        reports.iter().map(|r| (r.cluster.as_str(), Some(r))).collect();
    for l in links {
        if !reports.iter().any(|r| r.cluster == l.cluster) {
            clusters.push((l.cluster.as_str(), None));
        }
    }
    let none = LinkReport::default();
    for (cluster, r) in &clusters {
        let probe_alive = r.is_none_or(|r| r.gateway.alive);
        let alive = probe_alive && link_of(cluster).is_none_or(|l| l.alive);
        let r = r.unwrap_or(&none);
        rows.push(vec![
            cluster.to_string(),
            if alive { "True" } else { "False" }.into(),
            r.mirrors.len().to_string(),
            ms(r.gateway.latency_quantile(0.5)),
            ms(r.gateway.latency_quantile(0.95)),
            ms(r.gateway.latency_quantile(0.99)),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let notes: String = links
        .iter()
        .filter(|l| !l.alive)
        .map(|l| {
            let why = l.last_error.as_deref().unwrap_or("not established yet");
            format!("\nlink to {}: {why}\n", l.cluster)
        })
        .collect();
    let table: String = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect();
    table + &notes
}

/// Runs `multicluster gateways`.
pub fn gateways(g: &Global, mirror_addr: Option<&str>, gateway_addr: Option<&str>) -> ExitCode {
    let rt = super::runtime();
    let reports = mirror_admin(g, mirror_addr).and_then(|a| rt.block_on(fetch_reports(&a)));
    let links = gateway_admin(g, gateway_addr).map(|a| rt.block_on(fetch_links(&a)));
    match (reports, links) {
        (Ok(r), links) => {
            let links = match links {
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    eprintln!("warning: {e}");
                    Vec::new()
                }
                None => Vec::new(),
            };
            print!("{}", gateways_table(&r, &links));
            ExitCode::SUCCESS
        }
        // Without a mirror the gateway still knows its links.
        (Err(e), Some(Ok(links))) => {
            eprintln!("warning: {e}");
            print!("{}", gateways_table(&[], &links));
            ExitCode::SUCCESS
        }
        (Err(e), _) => fail(e),
    }
}

/// Runs `multicluster unlink`: every object the link created in this (linking) cluster.
pub fn unlink(g: &Global, cluster: &str) -> ExitCode {
    let rt = super::runtime();
    let store = if g.state_dir.is_some() || g.cluster.is_some() {
        match super::open_local(g) {
            Ok(super::LocalCluster::Direct(s)) => AnyStore::Local(s),
            Ok(super::LocalCluster::Api(c)) => {
                AnyStore::Api(ApiStore::new(c, strait_controller::api::store::POLL))
            }
            Err(code) => return code,
        }
    } else {
        match rt.block_on(kube::Client::try_default()) {
            Ok(c) => AnyStore::Kube(KubeStore::new(c)),
            Err(e) => {
                return fail(format!(
                    "no linking cluster to read: pass --state-dir DIR of a local cluster, or point the kubeconfig's current context at the Kubernetes cluster ({e})"
                ));
            }
        }
    };
    match rt.block_on(unlink_objects(&store, cluster)) {
        Ok(out) => {
            print(&out);
            eprintln!(
                "Everything the link to {cluster} created printed: delete it with `strait delete -f -` (or `kubectl delete -f -`)."
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// What the Link to `cluster` created in the linking cluster `store`: its credentials
/// Secret, the Link, and every mirror Service and EndpointSlice of that cluster.
pub async fn unlink_objects(store: &impl Store, cluster: &str) -> Result<Vec<Value>, String> {
    let links: Vec<Link> = store.list(None).await.map_err(|e| e.to_string())?;
    let link = links
        .into_iter()
        .find(|l| l.spec.target_cluster_name.as_deref() == Some(cluster))
        .ok_or_else(|| {
            format!("no Link to a cluster named {cluster:?} here; `strait get links -A` lists them")
        })?;
    let ns = link.metadata.namespace.clone().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(secret) = &link.spec.cluster_credentials_secret {
        out.push(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": ns}}),
        );
    }
    out.push(json!({"apiVersion": "multicluster.linkerd.io/v1alpha3", "kind": "Link", "metadata": {"name": link.metadata.name, "namespace": ns}}));
    let mirrored = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let l = meta.labels.clone().unwrap_or_default();
        l.get(ml::MIRRORED_SERVICE).map(String::as_str) == Some("true")
            && l.get(ml::CLUSTER_NAME).map(String::as_str) == Some(cluster)
    };
    let mut push = |info: &strait_api::kinds::KindInfo,
                    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        if mirrored(meta) {
            out.push(json!({"apiVersion": info.api_version(), "kind": info.kind,
                "metadata": {"name": meta.name, "namespace": meta.namespace}}));
        }
    };
    let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> =
        store.list(None).await.map_err(|e| e.to_string())?;
    for s in &slices {
        push(
            <k8s_openapi::api::discovery::v1::EndpointSlice as Kind>::info(),
            &s.metadata,
        );
    }
    let services: Vec<Service> = store.list(None).await.map_err(|e| e.to_string())?;
    for s in &services {
        push(<Service as Kind>::info(), &s.metadata);
    }
    Ok(out)
}

/// Runs `multicluster check`.
pub fn check(g: &Global, mirror_addr: Option<&str>, gateway_addr: Option<&str>) -> ExitCode {
    let rt = super::runtime();
    let store = match super::open_local(g) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut failed = false;
    let mut line = |ok: bool, what: String, hint: Option<String>| {
        println!("{} {what}", if ok { "√" } else { "×" });
        if let (false, Some(h)) = (ok, hint) {
            println!("    {h}");
        }
        failed |= !ok;
    };
    let links: Vec<Link> = store
        .list(&rt, <Link as Kind>::info(), None, None)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Link::from_object)
        .collect();
    line(!links.is_empty(), "Link resources exist".into(), Some("run `strait multicluster link --cluster-name NAME` against a target cluster and apply its output here".into()));
    let reports = mirror_admin(g, mirror_addr).and_then(|a| rt.block_on(fetch_reports(&a)));
    let through_gateway = |key: &str| {
        reports
            .as_ref()
            .is_ok_and(|rs| rs.iter().any(|r| r.link == key && r.through_gateway))
    };
    for l in &links {
        let name = l.metadata.name.clone().unwrap_or_default();
        match strait_mirror::LinkConfig::from_link(l) {
            Ok(cfg) => {
                line(true, format!("Link {name} is valid"), None);
                let secrets = store
                    .list(
                        &rt,
                        <Secret as Kind>::info(),
                        Some(&cfg.namespace),
                        Some(&cfg.credentials_secret),
                    )
                    .unwrap_or_default();
                match secrets.into_iter().filter_map(Secret::from_object).next() {
                    None if through_gateway(&format!("{}/{name}", cfg.namespace)) => line(
                        true,
                        format!("{name} is read through the gateway link (no credentials needed)"),
                        None,
                    ),
                    None => line(
                        false,
                        format!("credentials of {name}"),
                        Some(format!(
                            "Secret {}/{} not found: apply the whole output of `strait multicluster link`",
                            cfg.namespace, cfg.credentials_secret
                        )),
                    ),
                    Some(s) => match validate_credentials(&rt, &s) {
                        Ok(()) => line(true, format!("credentials of {name} are valid"), None),
                        Err(e) => line(false, format!("credentials of {name}"), Some(e)),
                    },
                }
            }
            Err(e) => line(false, format!("Link {name} is valid"), Some(e.to_string())),
        }
    }
    match &reports {
        Err(e) => line(false, "the service mirror is running".into(), Some(e.clone())),
        Ok(reports) => {
            line(true, "the service mirror is running".into(), None);
            for r in reports {
                line(
                    r.remote_connected && r.error.is_none(),
                    format!("cluster {} is reachable", r.cluster),
                    r.error.clone(),
                );
                line(
                    r.gateway.alive,
                    format!("gateway of {} is alive", r.cluster),
                    Some(r.gateway.last_error.clone().unwrap_or_else(|| {
                        "no probe answered yet; check the Link's gatewayAddress and probeSpec".into()
                    })),
                );
                line(
                    r.skipped.is_empty(),
                    format!("every exported service of {} is mirrored", r.cluster),
                    Some(
                        r.skipped
                            .iter()
                            .map(|s| s.message.clone())
                            .collect::<Vec<_>>()
                            .join("\n    "),
                    ),
                );
            }
        }
    }
    // Federated services: what the Links report against the Services and slices here,
    // and (with the mirror's probes) whether each member's gateway is alive.
    let typed = |info| store.list(&rt, info, None, None);
    match (
        typed(<Service as Kind>::info()),
        typed(<k8s_openapi::api::discovery::v1::EndpointSlice as Kind>::info()),
    ) {
        (Ok(services), Ok(slices)) => {
            let services: Vec<Service> = services.into_iter().filter_map(Service::from_object).collect();
            let slices: Vec<_> = slices
                .into_iter()
                .filter_map(k8s_openapi::api::discovery::v1::EndpointSlice::from_object)
                .collect();
            let alive: Option<std::collections::BTreeMap<String, bool>> = reports
                .as_ref()
                .ok()
                .map(|r| r.iter().map(|r| (r.cluster.clone(), r.gateway.alive)).collect());
            for f in strait_mirror::federated::check(&links, &services, &slices, alive.as_ref()) {
                line(f.ok, f.what, f.hint.map(|h| h.replace('\n', "\n    ")));
            }
        }
        (Err(e), _) | (_, Err(e)) => line(
            false,
            "federated services can be read".into(),
            Some(format!("cannot list Services and EndpointSlices: {e}")),
        ),
    }
    if let Some(addr) = gateway_admin(g, gateway_addr) {
        match rt.block_on(fetch_links(&addr)) {
            Err(e) => line(false, "the local gateway is running".into(), Some(e)),
            Ok(gateway_links) => {
                line(true, "the local gateway is running".into(), None);
                // Every valid Link should have its link in the gateway (`--watch-links`).
                for cluster in links
                    .iter()
                    .filter_map(|l| strait_mirror::LinkConfig::from_link(l).ok())
                    .map(|cfg| cfg.target_cluster)
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    let (ok, hint) = link_in_gateway(&cluster, &gateway_links);
                    line(ok, format!("the local gateway has a link to {cluster}"), hint);
                }
                for l in gateway_links {
                    line(
                        l.alive,
                        format!("gateway link to {} is up", l.cluster),
                        Some(l.last_error.unwrap_or_else(|| {
                            "not established yet; check the remote gateway's address, identity and trust anchors".into()
                        })),
                    );
                }
            }
        }
    }
    if failed {
        exit::code(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig_secret(kubeconfig: Option<&str>) -> Secret {
        let mut v = json!({"apiVersion": "v1", "kind": "Secret", "type": KUBECONFIG_TYPE,
            "metadata": {"name": "cluster-credentials-east", "namespace": MULTICLUSTER_NS}});
        if let Some(k) = kubeconfig {
            v["stringData"] = json!({"kubeconfig": k});
        }
        serde_json::from_value(v).unwrap()
    }

    /// A Linkerd-made kubeconfig Secret reaches the API it names, with its token.
    #[tokio::test]
    async fn a_kubeconfig_secret_reads_the_api_it_names_with_its_token() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = api.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = api.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = tcp.read(&mut b).await.unwrap();
                assert!(n > 0, "the client closed before its request");
                req.extend_from_slice(&b[..n]);
            }
            let body =
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "7"},
                "items": [{"metadata": {"name": "myapp", "namespace": "production", "resourceVersion": "7"},
                           "spec": {"ports": [{"port": 80}]}}]})
                .to_string();
            let rsp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(rsp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    server: http://{addr}\nusers:\n- name: mirror\n  user:\n    token: s3cret-token\ncontexts:\n- name: east\n  context:\n    cluster: east\n    user: mirror\ncurrent-context: east\n"
        );
        let store = connect_kubeconfig(&kubeconfig_secret(Some(&kubeconfig)))
            .await
            .unwrap();
        assert!(matches!(store, AnyStore::Kube(_)));
        let services: Vec<Service> = store.list(None).await.unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].metadata.name.as_deref(), Some("myapp"));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /api/v1/services"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer s3cret-token"),
            "{request}"
        );
    }

    fn link_args(name: &str) -> LinkArgs {
        LinkArgs {
            cluster_name: name.into(),
            gateway_addresses: None,
            gateway_port: 4143,
            selector: "mirror.linkerd.io/exported=true".into(),
            remote_discovery_selector: "mirror.linkerd.io/exported=remote-discovery".into(),
            federated_service_selector: "mirror.linkerd.io/federated=member".into(),
            identity_trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            credentials_lifetime: "8760h".into(),
            api_server_address: None,
        }
    }

    /// Kubernetes mode: the printed Secret is Linkerd's kubeconfig Secret for the
    /// remote-access token, it loads, and the mirror's connect reads the API it names.
    #[tokio::test]
    async fn a_kubernetes_link_prints_a_kubeconfig_for_the_remote_access_token() {
        let target = LocalStore::in_memory();
        let args = link_args("east");
        let e = kube_link_objects(&target, "https://198.18.0.1:6443", None, &args)
            .await
            .unwrap_err();
        assert!(e.contains("strait multicluster install"), "{e}");
        let (anchors, _) = strait_identity::generate(&Default::default(), SystemTime::now()).unwrap();
        let objects: Vec<Value> = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MULTICLUSTER_NS}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "linkerd"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": format!("{REMOTE_ACCESS_SA}-token"), "namespace": MULTICLUSTER_NS},
                "data": {"token": base64(b"tok-123")}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "linkerd-gateway", "namespace": MULTICLUSTER_NS},
                "spec": {"ports": [{"port": 4143}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.9"}]}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "linkerd-identity-trust-roots", "namespace": "linkerd"},
                "data": {"ca-bundle.crt": anchors.to_pem()}}),
        ];
        let objects: Vec<strait_api::Object> = objects
            .into_iter()
            .map(|v| {
                let text = serde_json::to_string(&v).unwrap();
                strait_api::loader::load_str("<test>", &text, &Default::default())
                    .unwrap()
                    .remove(0)
                    .object
            })
            .collect();
        target.apply(objects).await.unwrap();

        let out = kube_link_objects(
            &target,
            "https://198.18.0.1:6443",
            Some("-----BEGIN CERTIFICATE-----\n"),
            &args,
        )
        .await
        .unwrap();
        let secret = &out[1];
        assert_eq!(secret["type"], KUBECONFIG_TYPE);
        assert_eq!(secret["metadata"]["name"], "cluster-credentials-east");
        assert_eq!(secret["stringData"]["ca-bundle.crt"], anchors.to_pem());
        let kc = secret["stringData"]["kubeconfig"].as_str().unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(kc).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("east"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://198.18.0.1:6443"));
        assert!(cluster.certificate_authority_data.is_some());
        assert!(parsed.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        let raw: Value = serde_json::from_str(kc).unwrap();
        assert_eq!(raw["users"][0]["user"]["token"], "tok-123");
        let link = &out[2];
        assert_eq!(link["spec"]["gatewayAddress"], "198.18.0.9");
        assert_eq!(
            link["spec"]["clusterCredentialsSecret"],
            "cluster-credentials-east"
        );
        // What is printed loads as the linking cluster will read it.
        let text = strait_api::yaml::to_yaml(&out);
        let loaded = strait_api::loader::load_str("<link>", &text, &Default::default()).unwrap();
        assert_eq!(loaded.len(), 3);
    }

    /// `unlink` lists the Link, its Secret and that cluster's mirrors, nothing else.
    #[tokio::test]
    async fn unlink_lists_what_the_link_created_and_only_that() {
        let store = LocalStore::in_memory();
        let e = unlink_objects(&store, "east").await.unwrap_err();
        assert!(e.contains("no Link to a cluster named \"east\""), "{e}");
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MULTICLUSTER_NS}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "production"}}),
            link_object(&link_args("east"), "198.18.0.9").unwrap(),
            link_object(&link_args("north"), "198.18.0.10").unwrap(),
        ];
        for (name, cluster) in [("myapp-east", "east"), ("myapp-north", "north")] {
            objects.push(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "production",
                    "labels": {ml::MIRRORED_SERVICE: "true", ml::CLUSTER_NAME: cluster}},
                "spec": {"ports": [{"port": 80}]}}));
        }
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "myapp", "namespace": "production", "labels": {ml::CLUSTER_NAME: "east"}},
            "spec": {"ports": [{"port": 80}]}}));
        let text = strait_api::yaml::to_yaml(&objects);
        let loaded = strait_api::loader::load_str("<test>", &text, &Default::default()).unwrap();
        store
            .apply(loaded.into_iter().map(|l| l.object).collect())
            .await
            .unwrap();
        let out = unlink_objects(&store, "east").await.unwrap();
        let names: Vec<String> = out
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "Secret/cluster-credentials-east",
                "Link/east",
                "Service/myapp-east"
            ]
        );
    }

    #[tokio::test]
    async fn bad_kubeconfig_secrets_name_the_field() {
        let e = connect_kubeconfig(&kubeconfig_secret(None)).await.err().unwrap();
        assert!(e.contains("data.kubeconfig is missing"), "{e}");
        let e = connect_kubeconfig(&kubeconfig_secret(Some("clusters: [oops")))
            .await
            .err()
            .unwrap();
        assert!(e.contains("data.kubeconfig is not a kubeconfig"), "{e}");
        // A kubeconfig whose current context names nothing.
        let e = connect_kubeconfig(&kubeconfig_secret(Some(
            "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n",
        )))
        .await
        .err()
        .unwrap();
        assert!(e.starts_with("data.kubeconfig"), "{e}");
        // A kubeconfig Secret is not local-mode credentials, and says so.
        let e = connect_local(&kubeconfig_secret(Some("x"))).err().unwrap();
        assert!(e.contains("kubeconfig"), "{e}");
    }

    #[test]
    fn the_installed_gateway_follows_links_and_keeps_its_entry_inside_the_cluster() {
        let objects = install_manifests("cluster.local", 4143);
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{kind} {name} missing"))
        };
        let gw = &find("Deployment", "linkerd-gateway")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = gw["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--watch-links") && args.contains(&"--kubernetes"),
            "{args:?}"
        );
        assert!(
            args.windows(2).any(|w| w == ["--proxy-entry", "0.0.0.0:4180"]),
            "{args:?}"
        );
        // The plaintext entry is a ClusterIP Service of its own, not on the LoadBalancer.
        let entry = find("Service", GATEWAY_ENTRY_SERVICE);
        assert_eq!(entry["spec"]["type"], "ClusterIP");
        assert_eq!(entry["spec"]["ports"][0]["port"], 4180);
        let lb = find("Service", "linkerd-gateway");
        assert_eq!(lb["spec"]["type"], "LoadBalancer");
        assert!(
            lb["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["port"] != 4180),
            "{lb}"
        );
        // It may read Links, and only read them.
        let role = find("ClusterRole", "linkerd-gateway");
        let links = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"] == json!(["links"]))
            .expect("a rule for links");
        assert_eq!(links["verbs"], json!(["get", "list", "watch"]));
        // The mirror sends proxies (and reads linked clusters) through that entry.
        let mirror =
            &find("Deployment", "linkerd-service-mirror")["spec"]["template"]["spec"]["containers"][0];
        let args = mirror["args"].to_string();
        assert!(
            args.contains(
                "\"--gateway-entry\",\"linkerd-gateway-entry.linkerd-multicluster.svc.cluster.local:4180\""
            ),
            "{args}"
        );
    }

    #[test]
    fn a_link_the_gateway_does_not_dial_fails_the_check_with_what_to_do() {
        let links = [GatewayLink {
            cluster: "east".into(),
            alive: true,
            last_error: None,
        }];
        assert_eq!(link_in_gateway("east", &links), (true, None));
        let (ok, hint) = link_in_gateway("north", &links);
        assert!(!ok);
        let hint = hint.unwrap();
        assert!(
            hint.contains("--watch-links") && hint.contains("--link north=ADDR"),
            "{hint}"
        );
    }

    #[test]
    fn gateway_entries_parse_and_bad_ones_say_what_was_expected() {
        let (every, ok) =
            parse_gateway_entries(&["east=127.0.0.1:4180".into(), "north=10.0.0.1:4180".into()]).unwrap();
        assert_eq!(ok["east"].port(), 4180);
        assert_eq!((ok.len(), every), (2, None));
        let (every, ok) =
            parse_gateway_entries(&["127.0.0.1:4180".into(), "north=10.0.0.1:4181".into()]).unwrap();
        assert_eq!(every.as_deref(), Some("127.0.0.1:4180"));
        let (every, _) =
            parse_gateway_entries(&["linkerd-gateway-entry.linkerd-multicluster.svc:4180".into()]).unwrap();
        assert_eq!(
            every.as_deref(),
            Some("linkerd-gateway-entry.linkerd-multicluster.svc:4180")
        );
        assert_eq!(ok.len(), 1);
        let e = parse_gateway_entries(&["127.0.0.1:1".into(), "127.0.0.1:2".into()]).unwrap_err();
        assert!(e.contains("every link is given twice"), "{e}");
        let cases = [
            (
                "east",
                "expected ADDR (the gateway's proxy entry IP:PORT or HOST:PORT) or CLUSTER=ADDR",
            ),
            ("127.0.0.1:0", "expected ADDR"),
            ("east:127.0.0.1:4180", "expected ADDR"),
            ("East=127.0.0.1:4180", "the cluster name \"East\""),
            ("east=localhost:4180", "is not an IP:PORT address"),
        ];
        for (value, expected) in cases {
            let e = parse_gateway_entries(&[value.into()]).unwrap_err();
            assert!(e.starts_with("--gateway-entry") && e.contains(expected), "{e}");
        }
        let e = parse_gateway_entries(&["east=127.0.0.1:1".into(), "east=127.0.0.1:2".into()]).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[tokio::test]
    async fn an_entry_name_that_does_not_resolve_stops_the_mirror_with_what_to_check() {
        let name = "linkerd-gateway-entry.linkerd-multicluster.svc.cluster.local:4180";
        let e = resolve_entry_with(name, |n| async move {
            assert_eq!(n, name);
            Err(std::io::Error::other(
                "failed to lookup address information: Name or service not known",
            ))
        })
        .await
        .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "--gateway-entry {name:?}: cannot resolve it (failed to lookup"
            )) && e.ends_with("is the gateway's entry Service (linkerd-gateway-entry) installed?"),
            "{e}"
        );
        let e = resolve_entry_with(name, |_| async { Ok(Vec::new()) })
            .await
            .unwrap_err();
        assert!(e.contains("the name has no address"), "{e}");
        let addr: std::net::SocketAddr = "10.0.0.7:4180".parse().unwrap();
        assert_eq!(
            resolve_entry_with(name, |_| async move { Ok(vec![addr]) }).await,
            Ok(addr)
        );
        // An address is used as it is: nothing is looked up.
        let got = resolve_entry_with("127.0.0.1:4180", |_| async {
            unreachable!("no lookup for an address")
        })
        .await;
        assert_eq!(got, Ok("127.0.0.1:4180".parse().unwrap()));
    }

    #[test]
    fn the_gateways_table_joins_probes_and_links() {
        let report = |cluster: &str, alive: bool| LinkReport {
            cluster: cluster.into(),
            gateway: strait_mirror::GatewayHealth {
                alive,
                ..Default::default()
            },
            ..Default::default()
        };
        let link = |cluster: &str, alive: bool, err: Option<&str>| GatewayLink {
            cluster: cluster.into(),
            alive,
            last_error: err.map(str::to_string),
        };
        let reports = [
            report("east", true),
            report("north", true),
            report("south", false),
        ];
        let links = [
            link("east", true, None),
            link(
                "north",
                false,
                Some("refused: wrong-identity: check the Link's gatewayIdentity"),
            ),
            link("west", false, None),
        ];
        let table = gateways_table(&reports, &links);
        let alive: Vec<(&str, &str)> = table
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let mut w = l.split_whitespace();
                (w.next().unwrap(), w.next().unwrap())
            })
            .collect();
        // A probe that answers is not enough when the link itself is refused.
        assert_eq!(
            alive,
            [
                ("east", "True"),
                ("north", "False"),
                ("south", "False"),
                ("west", "False")
            ]
        );
        assert!(
            table.contains("\nlink to north: refused: wrong-identity"),
            "{table}"
        );
        assert!(table.contains("\nlink to west: not established yet"), "{table}");
        assert!(!table.contains("link to east:"), "{table}");
    }
}
