//! Reading a linked cluster through the gateway link instead of its API server.
//!
//! The target cluster's gateway serves a catalog ([`serve`]): a watch of its Services,
//! and of its meshed pods reduced to their service accounts and addresses ([`project_pod`]),
//! both as [`WatchEvent`]s. The linking cluster's mirror reads it with a
//! [`GatewayStore`]: a read-only [`Store`] whose watches are `watch` streams opened at
//! the local gateway's proxy entry, which carries them over the link. The link is
//! mutually authenticated by the gateways' identities, so the target needs neither an
//! exposed API server nor credentials for the linking cluster.
//!
//! On the stream, after the gateways' `strt` request and acceptance, each event is one
//! frame (sans-IO, [`encode`] / [`FrameDecoder`]):
//!
//! ```text
//! length u32 (big-endian) | JSON: {"restarted":[..]} | {"applied":{..}} | {"deleted":{..}} | {"error":".."}
//! ```
//!
//! The first frame of a watch is `restarted` (the whole current set). An `error` frame
//! reports a failure of the target's store; the watch goes on. A frame longer than
//! [`MAX_FRAME`] is refused before it is buffered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strait_api::{Kind, KindId, Object, ObjectKey, Store, StoreError, WatchEvent};
use strait_proxy::stream_header::{self as header, Progress, Reply, Request, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Largest frame accepted: a `restarted` frame of many thousands of Services fits.
pub const MAX_FRAME: usize = 64 << 20;
/// How long the local gateway has to answer a watch (it opens a stream on the link and
/// waits for the remote gateway's reply).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Annotation a meshed pod keeps in the catalog.
const PROXY_VERSION: &str = strait_api::labels::PROXY_VERSION;

/// One catalog event on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frame<K> {
    /// The whole current set.
    Restarted(Vec<K>),
    /// An object was created or changed.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The target's store failed; the watch continues.
    Error(String),
}

/// Why a catalog stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length is over [`MAX_FRAME`].
    #[error("catalog frame of {len} bytes exceeds the limit of {MAX_FRAME}")]
    TooLong {
        /// The declared length.
        len: usize,
    },
    /// The JSON is not an event of the expected kind.
    #[error("catalog frame is not a {kind} event: {detail}")]
    Decode {
        /// The kind expected.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Appends the frame of `frame` to `out`.
pub fn encode<K: Serialize>(frame: &Frame<K>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, frame).expect("catalog objects serialize");
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame<K: DeserializeOwned>(&mut self) -> Result<Option<Frame<K>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong { len });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = serde_json::from_slice(&self.buf[4..4 + len]).map_err(|e| FrameError::Decode {
            kind: std::any::type_name::<K>().rsplit("::").next().unwrap_or("object"),
            detail: e.to_string(),
        });
        self.buf.drain(..4 + len);
        frame.map(Some)
    }

    /// Bytes received and not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Reads what `io` has into the buffer (no intermediate copy); 0 at its end.
    pub async fn read_from<R: tokio::io::AsyncRead + Unpin>(&mut self, io: &mut R) -> std::io::Result<usize> {
        self.buf.reserve(64 << 10);
        io.read_buf(&mut self.buf).await
    }
}

/// What a linked cluster learns of a pod: nothing, unless it is meshed; then its name,
/// namespace, labels (services select on them), proxy version, service account and
/// phase — what names the identity of a service's workloads — and its address and
/// `Ready` condition, which make it one of the endpoints a linked cluster's proxies
/// balance over ([`crate::reconcile::remote_workload`]; Linkerd's remote-discovery
/// mode shares endpoints' addresses too). Its node, containers, other conditions and
/// everything else stay in the cluster.
pub fn project_pod(pod: &Pod) -> Option<Pod> {
    let meta = &pod.metadata;
    if !strait_api::core::pod_is_meshed(meta) {
        return None;
    }
    let status = pod.status.as_ref();
    Some(Pod {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROXY_VERSION))
                .map(|v| BTreeMap::from([(PROXY_VERSION.to_string(), v.clone())])),
            resource_version: meta.resource_version.clone(),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: status.and_then(|s| s.phase.clone()),
            pod_ip: status.and_then(|s| s.pod_ip.clone()),
            // Only whether it is ready: no times, reasons or messages (they would leak
            // and churn the watch).
            conditions: status.and_then(|s| s.conditions.as_ref()).map(|c| {
                c.iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
    })
}

/// How many frames a slow watcher may fall behind before the source waits.
const QUEUE: usize = 64;

/// Serves a watch of `resource` from `store`: the frames to write to the stream. Ends
/// when the receiver is dropped or the store's watch ends.
pub fn serve<S: Store>(store: &S, resource: Resource) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(QUEUE);
    match resource {
        Resource::Services => {
            tokio::spawn(forward(store.watch::<Service>(), |s| Some(s.clone()), tx));
        }
        Resource::Pods => {
            tokio::spawn(forward(store.watch::<Pod>(), project_pod, tx));
        }
    }
    rx
}

async fn forward<K: Kind>(
    mut watch: BoxStream<'static, Result<WatchEvent<K>, StoreError>>,
    project: fn(&K) -> Option<K>,
    tx: mpsc::Sender<Bytes>,
) {
    // A pod that stops being meshed (or never was) must leave the watcher's view: track
    // what was sent, and turn an update that projects to nothing into a deletion.
    let mut sent: BTreeMap<(String, String), K> = BTreeMap::new();
    let key = |o: &K| {
        let m = o.metadata();
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    loop {
        let frame = tokio::select! {
            () = tx.closed() => return,
            ev = watch.next() => match ev {
                None => return,
                Some(Err(e)) => Frame::Error(e.to_string()),
                Some(Ok(WatchEvent::Restarted(all))) => {
                    sent = all.iter().filter_map(project).map(|o| (key(&o), o)).collect();
                    Frame::Restarted(sent.values().cloned().collect())
                }
                Some(Ok(WatchEvent::Applied(o))) => match project(&o) {
                    Some(p) => {
                        sent.insert(key(&p), p.clone());
                        Frame::Applied(p)
                    }
                    None => match sent.remove(&key(&o)) {
                        Some(last) => Frame::Deleted(last),
                        None => continue,
                    },
                },
                Some(Ok(WatchEvent::Deleted(o))) => match sent.remove(&key(&o)) {
                    Some(last) => Frame::Deleted(last),
                    None => continue,
                },
            },
        };
        let mut out = Vec::new();
        encode(&frame, &mut out);
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}

/// A linked cluster read through the local gateway's proxy entry for its link: watches
/// of Services and Pods only, read-only.
#[derive(Clone, Debug)]
pub struct GatewayStore {
    entry: SocketAddr,
    cluster: String,
    /// Whether requests name the link (`cluster`): the entry serves every link.
    name_link: bool,
}

impl GatewayStore {
    /// The cluster `cluster` behind the proxy entry of its link alone at `entry`.
    pub fn new(entry: SocketAddr, cluster: impl Into<String>) -> Self {
        GatewayStore {
            entry,
            cluster: cluster.into(),
            name_link: false,
        }
    }

    /// The cluster `cluster` behind `entry`, naming the link in each request when the
    /// entry serves every link of the gateway.
    pub fn at(entry: &crate::reconcile::Entry, cluster: impl Into<String>) -> Self {
        GatewayStore {
            entry: entry.addr,
            cluster: cluster.into(),
            name_link: entry.link.is_some(),
        }
    }

    fn error(&self, action: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Remote {
            address: format!(
                "{} (cluster {} through the gateway link)",
                self.entry, self.cluster
            ),
            action: action.into(),
            detail: detail.into(),
        }
    }

    /// Opens a watch stream and reads the gateways' reply.
    async fn open(&self, resource: Resource) -> Result<(TcpStream, FrameDecoder), StoreError> {
        let action = format!("watch {resource}");
        let mut tcp = TcpStream::connect(self.entry).await.map_err(|e| {
            self.error(
                &action,
                format!(
                    "cannot reach the local gateway's proxy entry: {e}; is `strait gateway --proxy-entry {}{}` running?",
                    if self.name_link { String::new() } else { format!("{}=", self.cluster) },
                    self.entry
                ),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        let link = if self.name_link {
            let name = header::LinkName::new(self.cluster.as_str())
                .map_err(|e| self.error(&action, format!("the cluster name cannot name a link: {e}")))?;
            Some(name)
        } else {
            None
        };
        let mut frame = Vec::with_capacity(16);
        header::encode_entry_request(link.as_ref(), &Request::Watch(resource), &mut frame);
        tcp.write_all(&frame)
            .await
            .map_err(|e| self.error(&action, e.to_string()))?;
        let mut buf = Vec::with_capacity(header::MAX_FRAME_LEN);
        let read_reply = async {
            loop {
                match header::decode_reply(&buf) {
                    Ok(Progress::Complete(d)) => return Ok((d.frame, d.consumed)),
                    Ok(Progress::Incomplete { .. }) => {}
                    Err(e) => return Err(format!("the gateway answered with a bad reply: {e}")),
                }
                let mut chunk = [0u8; 512];
                match tcp.read(&mut chunk).await {
                    Ok(0) => return Err("the gateway closed the connection before replying".to_string()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let (reply, consumed) = tokio::time::timeout(REPLY_TIMEOUT, read_reply)
            .await
            .map_err(|_| self.error(&action, format!("no reply within {REPLY_TIMEOUT:?}")))?
            .map_err(|e| self.error(&action, e))?;
        if let Reply::Refused { reason, message } = reply {
            let hint = match reason {
                header::RefusalReason::NotServed => {
                    "; start the target cluster's gateway with --serve-exports"
                }
                header::RefusalReason::LinkDown => "; the mirror keeps the last known mirrors and retries",
                _ => "",
            };
            return Err(self.error(&action, format!("refused ({reason}): {message}{hint}")));
        }
        let mut decoder = FrameDecoder::default();
        decoder.push(&buf[consumed..]);
        Ok((tcp, decoder))
    }
}

fn resource_of(kind: KindId) -> Option<Resource> {
    match kind {
        KindId::Service => Some(Resource::Services),
        KindId::Pod => Some(Resource::Pods),
        _ => None,
    }
}

impl Store for GatewayStore {
    async fn get<K: Kind>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let all = self.list::<K>(Some(namespace)).await?;
        Ok(all
            .into_iter()
            .find(|o| o.metadata().name.as_deref() == Some(name)))
    }

    async fn list<K: Kind>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError> {
        let mut watch = self.watch::<K>();
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Restarted(all))) => {
                    return Ok(all
                        .into_iter()
                        .filter(|o| namespace.is_none() || o.metadata().namespace.as_deref() == namespace)
                        .collect());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(self.error(
                        format!("list {}", K::info().plural),
                        "the watch ended before its first list",
                    ));
                }
            }
        }
    }

    fn watch<K: Kind>(&self) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        let this = self.clone();
        let Some(resource) = resource_of(K::ID) else {
            let e = this.error(
                format!("watch {}", K::info().plural),
                "only Services and Pods are served through the gateway link",
            );
            return futures::stream::iter([Err(e)]).boxed();
        };
        enum State {
            Start,
            Open(TcpStream, FrameDecoder),
            Done,
        }
        futures::stream::unfold(State::Start, move |state| {
            let this = this.clone();
            async move {
                let (mut tcp, mut decoder) = match state {
                    State::Done => return None,
                    State::Start => match this.open(resource).await {
                        Ok(s) => s,
                        Err(e) => return Some((Err(e), State::Done)),
                    },
                    State::Open(tcp, decoder) => (tcp, decoder),
                };
                loop {
                    match decoder.next_frame::<K>() {
                        Ok(Some(frame)) => {
                            let ev = match frame {
                                Frame::Restarted(all) => Ok(WatchEvent::Restarted(all)),
                                Frame::Applied(o) => Ok(WatchEvent::Applied(o)),
                                Frame::Deleted(o) => Ok(WatchEvent::Deleted(o)),
                                Frame::Error(e) => Err(this.error(
                                    format!("watch {resource}"),
                                    format!("the target cluster's store: {e}"),
                                )),
                            };
                            return Some((ev, State::Open(tcp, decoder)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            return Some((
                                Err(this.error(format!("watch {resource}"), e.to_string())),
                                State::Done,
                            ));
                        }
                    }
                    match decoder.read_from(&mut tcp).await {
                        // The link or a gateway ended the watch: the caller re-watches.
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) => {
                            let e =
                                this.error(format!("watch {resource}"), format!("the stream failed: {e}"));
                            return Some((Err(e), State::Done));
                        }
                    }
                }
            }
        })
        .boxed()
    }

    async fn apply(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        let what = objects.first().map(|o| o.key().to_string()).unwrap_or_default();
        Err(self.error(
            format!("apply {what}"),
            "a cluster read through its gateway link is read-only",
        ))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<Option<Object>, StoreError> {
        Err(self.error(
            format!("delete {key}"),
            "a cluster read through its gateway link is read-only",
        ))
    }
}

#[cfg(test)]
mod tests;
