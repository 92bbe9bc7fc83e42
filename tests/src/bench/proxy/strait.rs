//! The pair under test: two `strait proxy` child processes in explicit mode, one per pod
//! address of the layout, with Linkerd's proxy environment pointing at the in-process
//! controller. They certify with the identity service, discover `myapp` through
//! `Destination/Get` (its endpoint is the server pod, meshed, so the hop is mTLS with the
//! server's identity verified, HTTP/1 carried over HTTP/2), and — when the context asks —
//! follow `OutboundPolicies` like a sidecar in a cluster with the policy controller.

use std::net::IpAddr;

use super::mesh::NAMESPACE;
use super::pki::{CLIENT_SA, SERVER_SA};
use super::{BuildContext, Error, Layout, PairSpec, ProcessSpec};

/// The pod name of `sa` at `ip` (unique per layout).
pub fn pod_name(sa: &str, ip: IpAddr) -> String {
    format!("{sa}-{}", ip.to_string().replace(['.', ':'], "-"))
}

/// The two pods, meshed (the injector's label), `myapp`'s selected by the Service.
pub fn objects(layout: &Layout) -> String {
    let pod = |sa: &str, ip: IpAddr| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {NAMESPACE}\n  labels: {{app: {sa}, linkerd.io/proxy-deployment: {sa}, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: {ip}}}\n",
            pod_name(sa, ip)
        )
    };
    format!(
        "{}---\n{}",
        pod(CLIENT_SA, layout.client_ip),
        pod(SERVER_SA, layout.server_ip)
    )
}

/// Linkerd's proxy environment for pod `pod` (service account `sa`) at `ip`.
pub fn env(
    layout: &Layout,
    ctx: &BuildContext<'_>,
    sa: &str,
    ip: IpAddr,
) -> Result<Vec<(String, String)>, Error> {
    let pod = pod_name(sa, ip);
    let token = layout.dir.join(format!("{pod}.token"));
    std::fs::write(&token, ctx.mesh.token(sa, &pod))
        .map_err(Error::io(format!("cannot write {}", token.display())))?;
    let b = &ctx.mesh.bound;
    let mut vars = vec![
        ("STRAIT_PROXY_CAPTURE", "explicit".to_string()),
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", b.destination.to_string()),
        ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", b.identity.to_string()),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            ctx.mesh.id.anchors.to_pem(),
        ),
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            format!("{sa}.{NAMESPACE}.serviceaccount.identity.linkerd.cluster.local"),
        ),
        ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", format!("{ip}:4143")),
        ("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", format!("{ip}:4140")),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", format!("{ip}:4191")),
        ("LINKERD2_PROXY_LOG", "warn".to_string()),
    ];
    if ctx.policy {
        vars.push(("LINKERD2_PROXY_POLICY_SVC_ADDR", b.policy.to_string()));
        vars.push((
            "LINKERD2_PROXY_POLICY_WORKLOAD",
            format!("{{\"ns\":\"{NAMESPACE}\",\"pod\":\"{pod}\"}}"),
        ));
    }
    Ok(vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The `strait proxy` pair for `layout`.
pub fn pair(layout: &Layout, ctx: &BuildContext<'_>) -> Result<PairSpec, Error> {
    let spec = |side: &str, sa: &str, ip: IpAddr| -> Result<ProcessSpec, Error> {
        Ok(ProcessSpec {
            name: format!("{side}-side strait proxy"),
            program: ctx.strait.to_path_buf(),
            args: vec!["proxy".into()],
            env: env(layout, ctx, sa, ip)?,
        })
    };
    Ok(PairSpec {
        label: "strait pair".into(),
        objects: objects(layout),
        client: spec("client", CLIENT_SA, layout.client_ip)?,
        server: spec("server", SERVER_SA, layout.server_ip)?,
        notes: format!(
            "two `strait proxy` child processes ({} build), explicit mode, one runtime worker each (the default), \
             identity from the controller's identity service, `myapp` discovered through Destination/Get{}; \
             mutual TLS 1.3, HTTP/1.1 carried over HTTP/2 between them",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            if ctx.policy {
                ", outbound policy followed (no routes: the default route)"
            } else {
                ""
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_by_address_and_meshed() {
        let (c, s) = Layout::addresses(7);
        assert_eq!(pod_name("web", c), "web-127-46-7-2");
        let dir = std::path::PathBuf::from("/nowhere");
        let pki = super::super::pki::Pki {
            anchors: dir.clone(),
            server_identity: strait_identity::TrustDomain::default()
                .identity("myapp", "production")
                .unwrap(),
            server_chain: dir.clone(),
            server_key: dir.clone(),
            client_identity: strait_identity::TrustDomain::default()
                .identity("web", "production")
                .unwrap(),
            client_chain: dir.clone(),
            client_key: dir.clone(),
        };
        let y = objects(&Layout::new(7, dir, pki));
        assert!(
            y.contains("name: myapp-127-46-7-3\n") && y.contains(&format!("podIP: {s}")),
            "{y}"
        );
        assert_eq!(y.matches("linkerd.io/control-plane-ns: linkerd").count(), 2);
    }
}
