//! One module per command family.

pub mod apply;
pub mod check;
pub mod controller;
pub mod demo;
pub mod gateway;
pub mod gateway_links;
pub mod get;
pub mod init;
pub mod inject;
pub mod install;
pub mod label;
pub mod multicluster;
pub mod pending;
pub mod proxy;
pub mod up;
pub mod version;

use std::process::ExitCode;

use hyper::{Method, StatusCode};
use strait_api::StoreError;
use strait_api::store::kube::KubeStore;
use strait_api::store::local::LocalStore;

use crate::Global;
use crate::exit;

/// Opens the cluster state a command works on: `--state-dir`, or explains what to pass.
pub fn open_store(g: &Global) -> Result<LocalStore, ExitCode> {
    if let Some(cluster) = &g.cluster {
        eprintln!(
            "error: --cluster {cluster}: talking to a running local cluster needs `strait up`, which arrives with issue #6.\n\
             To work on a cluster's state directly, pass --state-dir DIR instead."
        );
        return Err(exit::code(exit::NOT_AVAILABLE));
    }
    let Some(dir) = &g.state_dir else {
        eprintln!(
            "error: no cluster selected.\n\
             Pass --state-dir DIR (or set STRAIT_STATE_DIR) to use a local cluster state directory; it is created if missing.\n\
             To only validate manifests, use `strait apply --dry-run=client -f FILE`."
        );
        return Err(exit::code(exit::FAILURE));
    };
    LocalStore::open(dir).map_err(|e| {
        eprintln!("error: {e}");
        exit::code(exit::FAILURE)
    })
}

/// The state of the cluster a command reads: a local state directory, or Kubernetes.
/// A local cluster as a command sees it: its state directory directly, or (while its
/// controller owns the directory) the controller's public API.
pub enum LocalCluster {
    /// The state directory, opened by this process.
    Direct(LocalStore),
    /// The running controller's API.
    Api(strait_controller::api::client::ApiClient),
}

impl LocalCluster {
    /// Applies objects; `(object, outcome)` lines.
    pub fn apply(
        &self,
        rt: &tokio::runtime::Runtime,
        objects: Vec<strait_api::Object>,
    ) -> Result<Vec<(String, String)>, String> {
        match self {
            LocalCluster::Direct(store) => rt
                .block_on(async {
                    let mut objects = objects;
                    strait_controller::inject::admit_local_services(store, &mut objects).await?;
                    store.apply_reporting(objects).await
                })
                .map(|done| {
                    done.into_iter()
                        .map(|(o, out)| (o.key().to_string(), out.to_string()))
                        .collect()
                })
                .map_err(|e| e.to_string()),
            LocalCluster::Api(client) => {
                let list = serde_json::json!({
                    "apiVersion": "v1", "kind": "List",
                    "items": objects.iter().map(strait_api::Object::to_value).collect::<Vec<_>>(),
                });
                let body = serde_json::to_vec(&list).expect("JSON values serialize");
                let out = rt
                    .block_on(client.request(Method::POST, "/v1/apply", body))
                    .map_err(|e| api_problems(&e))?;
                Ok(out["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                        (field("object"), field("outcome"))
                    })
                    .collect())
            }
        }
    }

    /// Objects of a kind, in one namespace or all, optionally only one name.
    pub fn list(
        &self,
        rt: &tokio::runtime::Runtime,
        info: &strait_api::kinds::KindInfo,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<strait_api::Object>, String> {
        match self {
            LocalCluster::Direct(store) => {
                let mut items = store.list_objects(info.id, namespace);
                if let Some(n) = name {
                    items.retain(|o| o.meta().name.as_deref() == Some(n));
                }
                Ok(items)
            }
            LocalCluster::Api(client) => {
                let mut query = Vec::new();
                if let Some(ns) = namespace {
                    query.push(format!("namespace={ns}"));
                }
                if let Some(n) = name {
                    query.push(format!("name={n}"));
                }
                let path = format!("/v1/objects/{}?{}", info.plural, query.join("&"));
                let body = rt
                    .block_on(client.request(Method::GET, &path, Vec::new()))
                    .map_err(|e| e.to_string())?;
                Ok(decode_items(&body))
            }
        }
    }

    /// Deletes one object; whether it existed.
    pub fn delete(&self, rt: &tokio::runtime::Runtime, key: &strait_api::ObjectKey) -> Result<bool, String> {
        use strait_api::Store;
        use strait_controller::api::client::ClientError;
        match self {
            LocalCluster::Direct(store) => rt
                .block_on(store.delete(key))
                .map(|o| o.is_some())
                .map_err(|e| e.to_string()),
            LocalCluster::Api(client) => {
                let ns = if key.namespace.is_empty() {
                    "_"
                } else {
                    &key.namespace
                };
                let path = format!("/v1/objects/{}/{ns}/{}", key.kind.info().plural, key.name);
                match rt.block_on(client.request(Method::DELETE, &path, Vec::new())) {
                    Ok(_) => Ok(true),
                    Err(ClientError::Status {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }) => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// The API's problems, one per line, or its message.
fn api_problems(e: &strait_controller::api::client::ClientError) -> String {
    match e {
        strait_controller::api::client::ClientError::Status { body, message, .. } => {
            let problems: Vec<&str> = body["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            if problems.is_empty() {
                message.clone()
            } else {
                problems.join("\nerror: ")
            }
        }
        other => other.to_string(),
    }
}

/// Opens `--state-dir`: directly if no controller runs, otherwise through its API.
pub fn open_local(g: &Global) -> Result<LocalCluster, ExitCode> {
    match open_store_quiet(g) {
        Ok(s) => Ok(LocalCluster::Direct(s)),
        Err(Some(StoreError::Locked { .. })) => {
            let dir = g.state_dir.as_deref().expect("a lock implies a state directory");
            api_client(dir).map(LocalCluster::Api).map_err(|e| {
                eprintln!(
                    "error: a controller holds {} but its API cannot be used: {e}
                     Check that `strait controller` is running there, or stop it to work on the directory directly.",
                    dir.display()
                );
                exit::code(exit::FAILURE)
            })
        }
        Err(Some(e)) => {
            eprintln!("error: {e}");
            Err(exit::code(exit::FAILURE))
        }
        Err(None) => open_store(g).map(LocalCluster::Direct),
    }
}

fn open_store_quiet(g: &Global) -> Result<LocalStore, Option<StoreError>> {
    match (&g.cluster, &g.state_dir) {
        (None, Some(dir)) => LocalStore::open(dir).map_err(Some),
        _ => Err(None),
    }
}

fn api_client(dir: &std::path::Path) -> Result<strait_controller::api::client::ApiClient, String> {
    strait_controller::api::client::ApiClient::from_state_dir(dir)
}

/// Turns objects the API returned into typed objects.
pub fn decode_items(body: &serde_json::Value) -> Vec<strait_api::Object> {
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let info = strait_api::kinds::lookup(v["apiVersion"].as_str()?, v["kind"].as_str()?).ok()?;
            strait_api::Object::from_value(info.id, v.clone()).ok()
        })
        .collect()
}

pub enum ClusterStore {
    /// `--state-dir DIR` (or `--cluster`, once `strait up` runs clusters).
    Local(LocalStore),
    /// The Kubernetes API of the current kubeconfig context (or the pod's service account).
    Kube(KubeStore),
}

/// Opens the cluster a command reads: `--state-dir` when given, otherwise the Kubernetes
/// cluster of the kubeconfig, as `linkerd upgrade` reads it.
pub fn open_cluster(g: &Global, rt: &tokio::runtime::Runtime) -> Result<ClusterStore, ExitCode> {
    if g.cluster.is_some() || g.state_dir.is_some() {
        return open_store(g).map(ClusterStore::Local);
    }
    match rt.block_on(kube::Client::try_default()) {
        Ok(client) => Ok(ClusterStore::Kube(KubeStore::new(client))),
        Err(e) => {
            eprintln!(
                "error: no Kubernetes cluster to read ({e}).\n\
                 Check your kubeconfig, or pass --state-dir DIR to use a local cluster's state directory."
            );
            Err(exit::code(exit::FAILURE))
        }
    }
}

/// A current-thread runtime for commands that talk to a store.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}
