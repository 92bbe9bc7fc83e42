//! `strait get` and `strait delete`: read and remove objects of a local cluster.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use serde_json::Value;
use strait_api::kinds::{self, KindInfo, Object, ObjectKey};

use crate::exit;
use crate::{Global, Output};

/// Arguments of `get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The kind: plural, singular or short name (`svc`, `srv`, `httproutes.policy.linkerd.io`).
    pub kind: String,
    /// Object names; all objects of the kind when omitted.
    pub names: Vec<String>,
    /// Namespace to look in.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Look in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Arguments of `delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The kind, then names; or nothing with -f.
    pub kind_and_names: Vec<String>,
    /// Delete the objects named in these manifests.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace of the objects.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Succeed when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
}

fn kind_of(name: &str) -> Result<&'static KindInfo, ExitCode> {
    kinds::lookup_name(name).map_err(|e| {
        eprintln!("error: {e}");
        exit::code(exit::FAILURE)
    })
}

/// Runs `get`.
pub fn get(g: &Global, args: &GetArgs) -> ExitCode {
    let info = match kind_of(&args.kind) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let cluster = match super::open_local(g) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let rt = super::runtime();
    let ns = (!args.all_namespaces && info.namespaced).then_some(args.namespace.as_str());
    let mut objects = Vec::new();
    let mut missing = Vec::new();
    let names: Vec<Option<&str>> = if args.names.is_empty() {
        vec![None]
    } else {
        args.names.iter().map(|n| Some(n.as_str())).collect()
    };
    for name in names {
        match cluster.list(&rt, info, ns, name) {
            Ok(found) if found.is_empty() && name.is_some() => {
                missing.push(name.unwrap_or_default().to_string())
            }
            Ok(found) => objects.extend(found),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::code(exit::FAILURE);
            }
        }
    }
    print_objects(info, &objects, args.output, args.all_namespaces);
    if objects.is_empty() && missing.is_empty() && args.output == Output::Table {
        match ns {
            Some(ns) => eprintln!("No {} found in namespace {ns}.", info.plural),
            None => eprintln!("No {} found.", info.plural),
        }
    }
    for name in &missing {
        eprintln!(
            "error: {} {name:?} not found{}",
            info.plural,
            ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        );
    }
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        exit::code(exit::FAILURE)
    }
}

fn print_objects(info: &KindInfo, objects: &[Object], output: Output, all_namespaces: bool) {
    match output {
        Output::Yaml => {
            let values: Vec<Value> = objects.iter().map(Object::to_value).collect();
            if !values.is_empty() {
                print!("{}", strait_api::yaml::to_yaml(&values));
            }
        }
        Output::Json => {
            let v = match objects {
                [one] => one.to_value(),
                many => serde_json::json!({
                    "apiVersion": "v1", "kind": "List",
                    "items": many.iter().map(Object::to_value).collect::<Vec<_>>(),
                }),
            };
            println!("{}", serde_json::to_string_pretty(&v).expect("values serialize"));
        }
        Output::Name => {
            for o in objects {
                println!(
                    "{}/{}",
                    info.qualified_lowercase(),
                    o.meta().name.as_deref().unwrap_or_default()
                );
            }
        }
        Output::Table => {
            if objects.is_empty() {
                return;
            }
            let now = SystemTime::now();
            let pods = info.id == kinds::KindId::Pod;
            let services = info.id == kinds::KindId::Service;
            let mut header = vec!["NAMESPACE".to_string(), "NAME".into()];
            if pods {
                header.extend(["READY".into(), "STATUS".into()]);
            }
            if services {
                header.extend(["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"].map(String::from));
            }
            header.push("AGE".into());
            if pods {
                header.push("IP".into());
            }
            let mut rows = vec![header];
            for o in objects {
                let m = o.meta();
                let age = m
                    .creation_timestamp
                    .as_ref()
                    .map(|t| age(now, t.0.as_second()))
                    .unwrap_or_else(|| "<unknown>".into());
                let mut row = vec![
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default(),
                ];
                let pod = match o {
                    Object::Pod(p) => Some(pod_columns(p)),
                    _ => None,
                };
                if let Some((ready, status, _)) = &pod {
                    row.extend([ready.clone(), status.clone()]);
                }
                if let Object::Service(svc) = o {
                    row.extend(service_columns(svc));
                }
                row.push(age);
                if let Some((_, _, ip)) = pod {
                    row.push(ip);
                }
                rows.push(row);
            }
            let skip_ns = !(all_namespaces && info.namespaced);
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| r.into_iter().skip(usize::from(skip_ns)).collect())
                .collect();
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
    }
}

/// A pod's READY (containers ready / containers, the proxy counted when the pod is
/// meshed), STATUS and IP columns.
fn pod_columns(p: &k8s_openapi::api::core::v1::Pod) -> (String, String, String) {
    let meshed = p
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(strait_api::labels::CONTROL_PLANE_NS_LABEL));
    let containers = p.spec.as_ref().map_or(0, |s| s.containers.len()) + usize::from(meshed);
    let status = p.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    (
        format!("{}/{containers}", if ready { containers } else { 0 }),
        status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        status
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| "<none>".into()),
    )
}

/// A Service's TYPE, CLUSTER-IP, EXTERNAL-IP and PORT(S), as kubectl shows them.
fn service_columns(svc: &k8s_openapi::api::core::v1::Service) -> [String; 4] {
    let spec = svc.spec.as_ref();
    let kind = spec
        .and_then(|s| s.type_.clone())
        .unwrap_or_else(|| "ClusterIP".into());
    let cluster_ip = spec
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    // kubectl: an ExternalName's name; else the load balancer's ingress (or `<pending>`
    // for a LoadBalancer without one and without external IPs) and `spec.externalIPs`.
    let mut external: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    external.extend(spec.and_then(|s| s.external_ips.clone()).unwrap_or_default());
    let external = match kind.as_str() {
        "ExternalName" => spec
            .and_then(|s| s.external_name.clone())
            .unwrap_or_else(|| "<none>".into()),
        "LoadBalancer" if external.is_empty() => "<pending>".into(),
        _ if external.is_empty() => "<none>".into(),
        _ => external.join(","),
    };
    let ports: Vec<String> = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(node) => format!("{}:{node}/{protocol}", p.port),
                None => format!("{}/{protocol}", p.port),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    };
    [kind, cluster_ip, external, ports]
}

/// kubectl's compact age: `45s`, `12m`, `5h`, `3d`.
fn age(now: SystemTime, created_secs: i64) -> String {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - created_secs).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Runs `delete`.
pub fn delete(g: &Global, args: &DeleteArgs) -> ExitCode {
    let keys: Vec<ObjectKey> = if !args.files.is_empty() {
        if !args.kind_and_names.is_empty() {
            eprintln!("error: give either -f FILE or a kind and names, not both");
            return exit::code(exit::FAILURE);
        }
        match super::apply::load_manifests(&args.files, args.recursive, &args.namespace) {
            Ok(l) => l.iter().map(|l| l.object.key()).collect(),
            Err(c) => return c,
        }
    } else {
        let [kind, names @ ..] = args.kind_and_names.as_slice() else {
            eprintln!("error: name what to delete: `strait delete KIND NAME...` or `strait delete -f FILE`");
            return exit::code(exit::FAILURE);
        };
        if names.is_empty() {
            eprintln!("error: name the {kind} to delete: `strait delete {kind} NAME...`");
            return exit::code(exit::FAILURE);
        }
        let info = match kind_of(kind) {
            Ok(i) => i,
            Err(c) => return c,
        };
        names
            .iter()
            .map(|n| ObjectKey::new(info.id, args.namespace.clone(), n.clone()))
            .collect()
    };
    let cluster = match super::open_local(g) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let rt = super::runtime();
    let mut failed = false;
    for key in keys {
        match cluster.delete(&rt, &key) {
            Ok(true) => println!("{key} deleted"),
            Ok(false) if args.ignore_not_found => {}
            Ok(false) => {
                eprintln!("error: {key} not found");
                failed = true;
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
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

    fn columns(v: serde_json::Value) -> [String; 4] {
        service_columns(&serde_json::from_value(v).unwrap())
    }

    /// The Service columns read as kubectl's.
    #[test]
    fn service_columns_are_kubectls() {
        assert_eq!(
            columns(
                serde_json::json!({"spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}})
            ),
            ["ClusterIP", "10.96.0.5", "<none>", "80/TCP,53/UDP"]
        );
        assert_eq!(
            columns(
                serde_json::json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.6", "ports": [{"port": 443, "nodePort": 30443}]}})
            ),
            ["LoadBalancer", "10.96.0.6", "<pending>", "443:30443/TCP"]
        );
        assert_eq!(
            columns(serde_json::json!({
                "spec": {"type": "LoadBalancer", "externalIPs": ["198.18.9.9"], "ports": [{"port": 443}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "198.18.9.1"}, {"hostname": "lb.example"}]}},
            }))[2],
            "198.18.9.1,lb.example,198.18.9.9"
        );
        assert_eq!(
            columns(serde_json::json!({"spec": {"type": "ExternalName", "externalName": "db.example.org"}})),
            ["ExternalName", "<none>", "db.example.org", "<none>"]
        );
    }
}
