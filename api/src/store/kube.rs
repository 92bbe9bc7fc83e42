//! The Kubernetes backend: the same [`Store`] over the API server, with kube-rs.
//!
//! Objects travel as `DynamicObject`s addressed by the registry's [`KindInfo`] and are
//! typed at this edge, so every kind (core or mesh CRD) takes one code path. Writes use
//! server-side apply with the `strait` field manager; like `kubectl apply`, a batch is
//! validated whole first but is not transactional on the server.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::Value;

use super::{Store, StoreError, WatchEvent, validate_batch};
use crate::kinds::{Kind, KindInfo, Object, ObjectKey};

/// The field manager Strait's writes are recorded under.
pub const FIELD_MANAGER: &str = "strait";

/// A [`Store`] backed by a Kubernetes API server.
#[derive(Clone)]
pub struct KubeStore {
    client: kube::Client,
}

impl KubeStore {
    /// Wraps a client (from the kubeconfig, in-cluster config, or a test service).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn api(&self, info: &KindInfo, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(info);
        match namespace {
            Some(ns) if info.namespaced => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }
}

/// The REST coordinates of a kind, at its storage version.
pub fn api_resource(info: &KindInfo) -> ApiResource {
    ApiResource {
        group: info.group.to_string(),
        version: info.storage.to_string(),
        api_version: info.api_version(),
        kind: info.kind.to_string(),
        plural: info.plural.to_string(),
    }
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> StoreError {
    move |source| StoreError::Kube { action, source }
}

fn decode<K: Kind>(obj: DynamicObject) -> Result<K, StoreError> {
    let info = K::info();
    let what = format!(
        "{}/{}",
        info.qualified_lowercase(),
        obj.metadata.name.clone().unwrap_or_default()
    );
    let mut v = serde_json::to_value(&obj).map_err(|e| StoreError::Decode {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    v["apiVersion"] = Value::String(info.api_version());
    v["kind"] = Value::String(info.kind.to_string());
    let o = Object::from_value(K::ID, v).map_err(|e| StoreError::Decode {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    K::from_object(o).ok_or(StoreError::Decode {
        what,
        detail: "wrong kind".into(),
    })
}

fn decode_object(info: &KindInfo, obj: DynamicObject) -> Result<Object, StoreError> {
    let what = format!(
        "{}/{}",
        info.qualified_lowercase(),
        obj.metadata.name.clone().unwrap_or_default()
    );
    let mut v = serde_json::to_value(&obj).map_err(|e| StoreError::Decode {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    v["apiVersion"] = Value::String(info.api_version());
    v["kind"] = Value::String(info.kind.to_string());
    Object::from_value(info.id, v).map_err(|e| StoreError::Decode {
        what,
        detail: e.to_string(),
    })
}

/// The body of a server-side apply: the object without server-maintained metadata.
fn apply_body(o: &Object) -> Value {
    let mut v = o.to_value();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(f);
        }
    }
    v
}

impl Store for KubeStore {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let info = K::info();
        let api = self.api(info, Some(namespace));
        let found = api.get_opt(name).await.map_err(kube_err(format!(
            "get {} {namespace}/{name}",
            info.qualified_lowercase()
        )))?;
        found.map(decode::<K>).transpose()
    }

    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        let info = K::info();
        let api = self.api(info, namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(kube_err(format!("list {}", info.plural)))?;
        list.items.into_iter().map(decode::<K>).collect()
    }

    fn watch<K: Kind>(&self) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        let info = K::info();
        let api = self.api(info, None);
        let plural = info.plural;
        watcher(api, watcher::Config::default())
            .map_err(move |e| StoreError::Decode {
                what: format!("watch of {plural}"),
                detail: e.to_string(),
            })
            .scan(Vec::new(), |buffer: &mut Vec<K>, event| {
                let out = match event {
                    Err(e) => Some(Err(e)),
                    Ok(watcher::Event::Init) => {
                        buffer.clear();
                        None
                    }
                    Ok(watcher::Event::InitApply(o)) => match decode::<K>(o) {
                        Ok(k) => {
                            buffer.push(k);
                            None
                        }
                        Err(e) => Some(Err(e)),
                    },
                    Ok(watcher::Event::InitDone) => Some(Ok(WatchEvent::Restarted(std::mem::take(buffer)))),
                    Ok(watcher::Event::Apply(o)) => Some(decode::<K>(o).map(WatchEvent::Applied)),
                    Ok(watcher::Event::Delete(o)) => Some(decode::<K>(o).map(WatchEvent::Deleted)),
                };
                futures::future::ready(Some(out))
            })
            .filter_map(futures::future::ready)
            .boxed()
    }

    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        validate_batch(&objects)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let key = o.key();
            let info = key.kind.info();
            let api = self.api(info, Some(&key.namespace));
            let applied = api
                .patch(&key.name, &params, &Patch::Apply(apply_body(&o)))
                .await
                .map_err(kube_err(format!("apply {key}")))?;
            out.push(decode_object(info, applied)?);
        }
        Ok(out)
    }

    async fn apply_status(&self, object: Object) -> Result<(), StoreError> {
        let key = object.key();
        let api = self.api(key.kind.info(), Some(&key.namespace));
        let status = object.to_value().get("status").cloned().unwrap_or(Value::Null);
        // A merge patch replaces the status's lists whole, as the controller means.
        api.patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(kube_err(format!("write the status of {key}")))?;
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        let info = key.kind.info();
        let api = self.api(info, Some(&key.namespace));
        let Some(last) = api
            .get_opt(&key.name)
            .await
            .map_err(kube_err(format!("get {key}")))?
        else {
            return Ok(None);
        };
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => Ok(Some(decode_object(info, last)?)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(kube_err(format!("delete {key}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests;
