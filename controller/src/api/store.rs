//! A [`Store`] over another local cluster's public API: what the service mirror uses to
//! read a linked cluster (with read-only remote-access credentials) and to write its own
//! cluster while the controller owns the state directory.
//!
//! The API has no streaming watch, so [`ApiStore::watch`] polls: a complete list every
//! poll period, diffed by resourceVersion into `Applied`/`Deleted` events. A failed list
//! yields an error and the next successful one a `Restarted`, so a consumer sees a
//! disconnect and an atomic resynchronisation exactly as with the other backends.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hyper::{Method, StatusCode};
use serde_json::Value;
use strait_api::{Kind, KindId, Object, ObjectKey, Store, StoreError, WatchEvent, kinds};

use super::client::{ApiClient, ClientError};

/// Default poll period of watches.
pub const POLL: Duration = Duration::from_millis(200);

/// A store reached through a cluster's public API.
#[derive(Clone)]
pub struct ApiStore {
    client: ApiClient,
    poll: Duration,
}

impl ApiStore {
    /// A store over `client`, polling watches every `poll`.
    pub fn new(client: ApiClient, poll: Duration) -> Self {
        Self { client, poll }
    }

    /// Posts `objects` as one List to `path`; a refusal names the first object, a failure
    /// to reach the controller says what it was doing (`action`).
    async fn post(&self, path: &str, objects: &[Object], action: &str) -> Result<Value, StoreError> {
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "List",
            "items": objects.iter().map(Object::to_value).collect::<Vec<_>>(),
        });
        self.client
            .request(
                Method::POST,
                path,
                serde_json::to_vec(&list).expect("JSON values serialize"),
            )
            .await
            .map_err(|e| match e {
                ClientError::Status { body, message, .. } => StoreError::Invalid {
                    key: objects
                        .first()
                        .map(Object::key)
                        .unwrap_or_else(|| ObjectKey::new(KindId::Namespace, "", "")),
                    problems: body["problems"]
                        .as_array()
                        .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                        .unwrap_or(message),
                },
                other => StoreError::Remote {
                    address: self.client.address().to_string(),
                    action: action.into(),
                    detail: other.to_string(),
                },
            })
    }

    fn err(&self, action: String) -> impl FnOnce(ClientError) -> StoreError + '_ {
        move |e| StoreError::Remote {
            address: self.client.address().to_string(),
            action,
            detail: e.to_string(),
        }
    }

    async fn items(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Object>, StoreError> {
        let mut q = Vec::new();
        if let Some(ns) = namespace {
            q.push(format!("namespace={ns}"));
        }
        if let Some(n) = name {
            q.push(format!("name={n}"));
        }
        let body = self
            .client
            .request(
                Method::GET,
                &format!("/v1/objects/{plural}?{}", q.join("&")),
                Vec::new(),
            )
            .await
            .map_err(self.err(format!("list {plural}")))?;
        decode_items(&body).map_err(|detail| StoreError::Decode {
            what: format!("{plural} from {}", self.client.address()),
            detail,
        })
    }
}

/// Typed objects of an API answer.
pub fn decode_items(body: &Value) -> Result<Vec<Object>, String> {
    body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let info = kinds::lookup(
                v["apiVersion"].as_str().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
            Object::from_value(info.id, v.clone()).map_err(|e| e.to_string())
        })
        .collect()
}

fn typed<K: Kind>(objects: Vec<Object>) -> Vec<K> {
    objects.into_iter().filter_map(K::from_object).collect()
}

fn rv_key<K: Kind>(k: &K) -> (String, String) {
    let m = k.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl Store for ApiStore {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let info = K::info();
        let ns = info.namespaced.then_some(namespace);
        Ok(typed::<K>(self.items(info.plural, ns, Some(name)).await?)
            .into_iter()
            .next())
    }

    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        Ok(typed(self.items(K::info().plural, namespace, None).await?))
    }

    fn watch<K: Kind>(&self) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        struct State<K> {
            store: ApiStore,
            known: Option<BTreeMap<(String, String), K>>,
            pending: Vec<Result<WatchEvent<K>, StoreError>>,
            first: bool,
        }
        let state = State {
            store: self.clone(),
            known: None,
            pending: Vec::new(),
            first: true,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(ev) = s.pending.pop() {
                    return Some((ev, s));
                }
                if !s.first {
                    tokio::time::sleep(s.store.poll).await;
                }
                s.first = false;
                match s.store.list::<K>(None).await {
                    Err(e) => {
                        // The next good list is a resynchronisation.
                        s.known = None;
                        s.pending.push(Err(e));
                    }
                    Ok(all) => {
                        let now: BTreeMap<_, K> = all.into_iter().map(|k| (rv_key(&k), k)).collect();
                        match s.known.take() {
                            None => s
                                .pending
                                .push(Ok(WatchEvent::Restarted(now.values().cloned().collect()))),
                            Some(before) => {
                                let mut evs = Vec::new();
                                for (key, k) in &now {
                                    let changed = before.get(key).is_none_or(|b| {
                                        b.metadata().resource_version != k.metadata().resource_version
                                    });
                                    if changed {
                                        evs.push(Ok(WatchEvent::Applied(k.clone())));
                                    }
                                }
                                for (key, k) in before {
                                    if !now.contains_key(&key) {
                                        evs.push(Ok(WatchEvent::Deleted(k)));
                                    }
                                }
                                evs.reverse();
                                s.pending = evs;
                            }
                        }
                        s.known = Some(now);
                    }
                }
            }
        })
        .boxed()
    }

    /// Only the status: the controller writes it onto the object as stored, keeping a
    /// spec written since the caller read it (`POST /v1/status`).
    async fn apply_status(&self, object: Object) -> Result<(), StoreError> {
        self.post("/v1/status", std::slice::from_ref(&object), "write the status of")
            .await
            .map(drop)
    }

    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        let keys: Vec<ObjectKey> = objects.iter().map(Object::key).collect();
        self.post("/v1/apply", &objects, "apply").await?;
        // The objects as stored: one list per kind and namespace, not one request per
        // object (a batch of thousands would otherwise pay thousands of round trips).
        let mut groups: BTreeMap<(KindId, String), Vec<&ObjectKey>> = BTreeMap::new();
        for k in &keys {
            groups.entry((k.kind, k.namespace.clone())).or_default().push(k);
        }
        let mut out = Vec::with_capacity(keys.len());
        for ((kind, ns), wanted) in groups {
            let info = kind.info();
            let ns = info.namespaced.then_some(ns.as_str());
            let found: Vec<Object> = if wanted.len() == 1 {
                self.items(info.plural, ns, Some(&wanted[0].name)).await?
            } else {
                let names: std::collections::BTreeSet<&str> =
                    wanted.iter().map(|k| k.name.as_str()).collect();
                let mut all = self.items(info.plural, ns, None).await?;
                all.retain(|o| o.meta().name.as_deref().is_some_and(|n| names.contains(n)));
                all
            };
            out.extend(found);
        }
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        let info = key.kind.info();
        let ns = info.namespaced.then_some(key.namespace.as_str());
        let Some(last) = self
            .items(info.plural, ns, Some(&key.name))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let ns = if key.namespace.is_empty() {
            "_"
        } else {
            &key.namespace
        };
        match self
            .client
            .request(
                Method::DELETE,
                &format!("/v1/objects/{}/{ns}/{}", info.plural, key.name),
                Vec::new(),
            )
            .await
        {
            Ok(_) => Ok(Some(last)),
            Err(ClientError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(self.err(format!("delete {key}"))(e)),
        }
    }
}
