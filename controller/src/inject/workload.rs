//! Workloads and their pod templates, and the reversible edit injection makes to one.
//!
//! Injection writes, in the annotation [`RECORD`], what it changed in the template's
//! metadata: the previous value (or absence) of every annotation and label it set, and
//! which collections it had to create. Containers and volumes need no record: their names
//! are the injector's ([`super::containers`]) and injection refuses templates that already
//! use them. With the record, `uninject` gives back the original template exactly, even when
//! the original already carried one of the keys injection sets. A template injected by
//! someone else (no record) is uninjected the way Linkerd does it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use strait_api::kinds::{KindId, Object};
use strait_api::labels;

use super::containers::{CONTAINERS, PROXY_CONTAINER, VOLUMES};
use k8s_openapi::api::core::v1::{Container, Volume};

/// The annotation holding what injection changed in a pod template's metadata.
pub const RECORD: &str = "strait.io/uninject";

/// The kinds that carry a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob.
    CronJob,
    /// v1 Pod.
    Pod,
}

impl WorkloadKind {
    /// The workload kind of a registry kind, if it has a pod template.
    pub fn of(kind: KindId) -> Option<Self> {
        Some(match kind {
            KindId::Deployment => Self::Deployment,
            KindId::StatefulSet => Self::StatefulSet,
            KindId::DaemonSet => Self::DaemonSet,
            KindId::ReplicaSet => Self::ReplicaSet,
            KindId::Job => Self::Job,
            KindId::CronJob => Self::CronJob,
            KindId::Pod => Self::Pod,
            _ => return None,
        })
    }

    /// The label naming the owning workload on its pods (`linkerd.io/proxy-deployment`).
    pub fn proxy_label(self) -> Option<&'static str> {
        match self {
            Self::Deployment => Some(labels::PROXY_DEPLOYMENT_LABEL),
            Self::StatefulSet => Some(labels::PROXY_STATEFULSET_LABEL),
            Self::DaemonSet => Some(labels::PROXY_DAEMONSET_LABEL),
            Self::ReplicaSet => Some(labels::PROXY_REPLICASET_LABEL),
            Self::Job => Some(labels::PROXY_JOB_LABEL),
            Self::CronJob => Some(labels::PROXY_CRONJOB_LABEL),
            Self::Pod => None,
        }
    }
}

/// The pod template of a workload, read-only: its metadata and spec, either possibly absent.
pub(crate) fn template(obj: &Object) -> Option<(Option<&ObjectMeta>, Option<&PodSpec>)> {
    Some(match obj {
        Object::Pod(p) => (Some(&p.metadata), p.spec.as_ref()),
        Object::Deployment(d) => (d.spec.template.metadata.as_ref(), d.spec.template.spec.as_ref()),
        Object::StatefulSet(s) => (s.spec.template.metadata.as_ref(), s.spec.template.spec.as_ref()),
        Object::DaemonSet(d) => (d.spec.template.metadata.as_ref(), d.spec.template.spec.as_ref()),
        Object::ReplicaSet(r) => match &r.spec.template {
            Some(t) => (t.metadata.as_ref(), t.spec.as_ref()),
            None => (None, None),
        },
        Object::Job(j) => match &j.spec {
            Some(s) => (s.template.metadata.as_ref(), s.template.spec.as_ref()),
            None => (None, None),
        },
        Object::CronJob(c) => match &c.spec.job_template.spec {
            Some(s) => (s.template.metadata.as_ref(), s.template.spec.as_ref()),
            None => (None, None),
        },
        _ => return None,
    })
}

/// Runs `f` on the workload's template metadata and spec, in place. A Pod's metadata is
/// lent as `Some` and put back; `None` when the object has no pod template at all.
pub(crate) fn with_template<R>(
    obj: &mut Object,
    f: impl FnOnce(&mut Option<ObjectMeta>, &mut Option<PodSpec>) -> R,
) -> Option<R> {
    let t = match obj {
        Object::Pod(p) => {
            let mut meta = Some(std::mem::take(&mut p.metadata));
            let r = f(&mut meta, &mut p.spec);
            p.metadata = meta.unwrap_or_default();
            return Some(r);
        }
        Object::Deployment(d) => &mut d.spec.template,
        Object::StatefulSet(s) => &mut s.spec.template,
        Object::DaemonSet(d) => &mut d.spec.template,
        Object::ReplicaSet(r) => r.spec.template.as_mut()?,
        Object::Job(j) => &mut j.spec.as_mut()?.template,
        Object::CronJob(c) => &mut c.spec.job_template.spec.as_mut()?.template,
        _ => return None,
    };
    Some(f(&mut t.metadata, &mut t.spec))
}

/// What injection adds to one template.
#[derive(Clone, Debug, Default)]
pub(crate) struct Edit {
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub init_container: Option<Container>,
    /// The proxy, and whether it goes first (so it starts before the application).
    pub proxy: Option<(Container, bool)>,
    pub volumes: Vec<Volume>,
}

/// A collection injection may have had to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Field {
    Metadata,
    Annotations,
    Labels,
    InitContainers,
    Volumes,
}

/// The content of [`RECORD`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// Every annotation set, with its previous value (`null`: absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, Option<String>>,
    /// Every label set, with its previous value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, Option<String>>,
    /// Collections that did not exist before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    absent: Vec<Field>,
}

/// Applies `edit` to a template and records how to undo it.
pub(crate) fn apply(meta: &mut Option<ObjectMeta>, spec: &mut PodSpec, edit: Edit) {
    let mut record = Record::default();
    if meta.is_none() {
        record.absent.push(Field::Metadata);
    }
    let meta = meta.get_or_insert_with(Default::default);
    if meta.labels.is_none() && !edit.labels.is_empty() {
        record.absent.push(Field::Labels);
    }
    if !edit.labels.is_empty() {
        let l = meta.labels.get_or_insert_with(Default::default);
        for (k, v) in edit.labels {
            record.labels.insert(k.clone(), l.insert(k, v));
        }
    }
    if meta.annotations.is_none() {
        record.absent.push(Field::Annotations);
    }
    let a = meta.annotations.get_or_insert_with(Default::default);
    for (k, v) in edit.annotations {
        record.annotations.insert(k.clone(), a.insert(k, v));
    }
    if let Some(init) = edit.init_container {
        if spec.init_containers.is_none() {
            record.absent.push(Field::InitContainers);
        }
        spec.init_containers.get_or_insert_with(Vec::new).push(init);
    }
    if let Some((proxy, first)) = edit.proxy {
        let at = if first { 0 } else { spec.containers.len() };
        spec.containers.insert(at, proxy);
    }
    if !edit.volumes.is_empty() {
        if spec.volumes.is_none() {
            record.absent.push(Field::Volumes);
        }
        spec.volumes.get_or_insert_with(Vec::new).extend(edit.volumes);
    }
    // The record's own previous value is part of the record: undoing an injection of a pod
    // whose template was annotated by `strait inject` gives back that annotated pod.
    record
        .annotations
        .insert(RECORD.to_string(), a.get(RECORD).cloned());
    let text = serde_json::to_string(&record).expect("records serialize");
    a.insert(RECORD.to_string(), text);
}

/// What `undo` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    /// The template is back to what it was before injection.
    Restored,
    /// No record, but a proxy: removed the way Linkerd's `uninject` does.
    Stripped,
    /// Nothing was injected.
    NotInjected,
    /// The record cannot be read; nothing was changed.
    BadRecord(String),
}

/// Undoes an injection of a template.
pub(crate) fn undo(meta: &mut Option<ObjectMeta>, spec: &mut Option<PodSpec>) -> Undo {
    let raw = meta
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RECORD))
        .cloned();
    let Some(raw) = raw else {
        let injected = spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER));
        if !injected {
            return Undo::NotInjected;
        }
        if let Some(s) = spec {
            remove_injected(s);
            drop_if_empty(&mut s.init_containers);
            drop_if_empty(&mut s.volumes);
        }
        if let Some(m) = meta {
            strip_linkerd_metadata(m);
        }
        return Undo::Stripped;
    };
    let record: Record = match serde_json::from_str(&raw) {
        Ok(r) => r,
        Err(e) => {
            return Undo::BadRecord(format!(
                "annotation {RECORD} is not a record injection wrote: {e}"
            ));
        }
    };
    if let Some(s) = spec {
        remove_injected(s);
        if record.absent.contains(&Field::InitContainers) {
            drop_if_empty(&mut s.init_containers);
        }
        if record.absent.contains(&Field::Volumes) {
            drop_if_empty(&mut s.volumes);
        }
    }
    let m = meta.get_or_insert_with(Default::default);
    restore(&mut m.annotations, &record.annotations);
    restore(&mut m.labels, &record.labels);
    if record.absent.contains(&Field::Annotations) {
        drop_if_empty_map(&mut m.annotations);
    }
    if record.absent.contains(&Field::Labels) {
        drop_if_empty_map(&mut m.labels);
    }
    if record.absent.contains(&Field::Metadata) && *m == ObjectMeta::default() {
        *meta = None;
    }
    Undo::Restored
}

fn restore(map: &mut Option<BTreeMap<String, String>>, previous: &BTreeMap<String, Option<String>>) {
    if previous.is_empty() {
        return;
    }
    let m = map.get_or_insert_with(Default::default);
    for (k, old) in previous {
        match old {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
}

fn remove_injected(s: &mut PodSpec) {
    s.containers.retain(|c| !CONTAINERS.contains(&c.name.as_str()));
    if let Some(init) = &mut s.init_containers {
        init.retain(|c| !CONTAINERS.contains(&c.name.as_str()));
    }
    if let Some(v) = &mut s.volumes {
        v.retain(|v| !VOLUMES.contains(&v.name.as_str()));
    }
}

fn drop_if_empty<T>(v: &mut Option<Vec<T>>) {
    if v.as_ref().is_some_and(Vec::is_empty) {
        *v = None;
    }
}

fn drop_if_empty_map(m: &mut Option<BTreeMap<String, String>>) {
    if m.as_ref().is_some_and(BTreeMap::is_empty) {
        *m = None;
    }
}

/// Linkerd's rule for templates it cannot know the history of: every `linkerd.io` label and
/// annotation goes, except an explicit `linkerd.io/inject: disabled`.
fn strip_linkerd_metadata(m: &mut ObjectMeta) {
    let linkerd = |k: &str| k.starts_with("linkerd.io/");
    if let Some(a) = &mut m.annotations {
        a.retain(|k, v| !linkerd(k) || (k == labels::INJECT && v == labels::INJECT_DISABLED));
    }
    if let Some(l) = &mut m.labels {
        l.retain(|k, _| !linkerd(k));
    }
    drop_if_empty_map(&mut m.annotations);
    drop_if_empty_map(&mut m.labels);
}

/// For a Pod, the workload that owns it, from its controller reference: a ReplicaSet named
/// `<deployment>-<pod-template-hash>` stands for its Deployment, as Linkerd labels it.
pub(crate) fn pod_owner(meta: &ObjectMeta) -> Option<(WorkloadKind, String)> {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let kind = match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = meta.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
            if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
                return Some((WorkloadKind::Deployment, deployment.to_string()));
            }
            WorkloadKind::ReplicaSet
        }
        "StatefulSet" => WorkloadKind::StatefulSet,
        "DaemonSet" => WorkloadKind::DaemonSet,
        "Job" => WorkloadKind::Job,
        _ => return None,
    };
    Some((kind, owner.name.clone()))
}
