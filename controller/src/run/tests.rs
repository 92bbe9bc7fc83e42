use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{GetDestination, update::Update as U};
use linkerd2_proxy_api::identity::{CertifyRequest, identity_client::IdentityClient};
use strait_api::loader::{LoadOptions, load_str};
use strait_api::store::local::LocalStore;
use strait_identity::{IdentityName, generate_key_and_csr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[test]
fn local_identity_is_created_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let first = LocalIdentity::load_or_create(dir.path(), &TrustDomain::default(), now).unwrap();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let second = LocalIdentity::load_or_create(dir.path(), &TrustDomain::default(), now).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        ca,
        "the anchor is reused, not regenerated"
    );
    assert_eq!(first.issuer.cert_pem(), second.issuer.cert_pem());
    let token = first.tokens.mint("production", "frontend", "p");
    assert!(
        second.tokens.verify(token.as_bytes()).is_ok(),
        "tokens survive a restart"
    );
    for secret in ["issuer.key", "token.key"] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret} is private");
    }
    // A damaged issuer is reported with what to check, not silently replaced.
    std::fs::write(dir.path().join("issuer.crt"), "garbage").unwrap();
    let err = LocalIdentity::load_or_create(dir.path(), &TrustDomain::default(), now)
        .err()
        .unwrap();
    assert!(err.to_string().contains("issuer"), "{err}");
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn local(port: u16) -> SocketAddr {
    let _ = port;
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[test]
fn an_ephemeral_config_listens_on_its_ip_with_kernel_picked_ports() {
    let cfg = ControllerConfig::ephemeral(IpAddr::from([127, 0, 0, 9]));
    for addr in [
        cfg.destination_addr,
        cfg.identity_addr,
        cfg.policy_addr,
        cfg.admin_addr,
    ] {
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 9], 0)));
    }
    assert!(cfg.local_endpoints, "local mode runs the endpoint controller");
}

#[tokio::test]
async fn a_local_control_plane_serves_identity_discovery_and_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let id = LocalIdentity::load_or_create(dir.path(), &TrustDomain::default(), SystemTime::now()).unwrap();
    let store = LocalStore::in_memory();
    let cfg = ControllerConfig::ephemeral(IpAddr::from([127, 0, 0, 1]));
    let tokens = id.tokens.clone();
    let mut controller = InProcess::start(cfg, store.clone(), &id).await.unwrap();
    let bound = controller.bound;
    // Ready once every index holds the store's state (at once, from a local store).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !http_get(bound.admin, "/ready").await.starts_with("HTTP/1.1 200") {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(http_get(bound.admin, "/live").await.starts_with("HTTP/1.1 200"));

    // Identity.
    let name = IdentityName::new("myapp", "production", "cluster.local").unwrap();
    let (_key, csr) = generate_key_and_csr(&name).unwrap();
    let mut idc = IdentityClient::connect(format!("http://{}", bound.identity))
        .await
        .unwrap();
    idc.certify(CertifyRequest {
        identity: name.to_string(),
        token: tokens.mint("production", "myapp", "myapp-1").into_bytes(),
        certificate_signing_request: csr.to_vec(),
    })
    .await
    .expect("a certificate for a registered pod's token");

    // Discovery through the local endpoint controller: no EndpointSlice is written by hand.
    let mut dst = DestinationClient::connect(format!("http://{}", bound.destination))
        .await
        .unwrap();
    let mut stream = dst
        .get(GetDestination {
            scheme: "k8s".into(),
            path: "myapp.production.svc.cluster.local:80".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: myapp-1\n  namespace: production\n  labels: {{app: myapp, linkerd.io/control-plane-ns: linkerd}}\nspec:\n  serviceAccountName: myapp\n  containers: [{{name: app, image: x}}]\nstatus: {{phase: Running, podIP: 198.18.0.5}}\n",
        include_str!("../../../examples/linkerd-seed/01-namespace-injection.yaml").to_string()
            + "---\n"
            + include_str!("../../../examples/linkerd-seed/03-services.yaml")
    );
    let objs = load_str("t.yaml", &yaml, &LoadOptions::default())
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect();
    store.apply(objs).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("endpoints within 5s")
            .unwrap()
            .unwrap();
        if let Some(U::Add(set)) = msg.update {
            assert_eq!(set.addrs[0].addr.as_ref().unwrap().port, 8080);
            break;
        }
    }

    // Outbound policy is served on the policy port beside inbound policy.
    use linkerd2_proxy_api::outbound::{
        TrafficSpec, outbound_policies_client::OutboundPoliciesClient, traffic_spec,
    };
    let mut pol = OutboundPoliciesClient::connect(format!("http://{}", bound.policy))
        .await
        .unwrap();
    let policy = pol
        .get(TrafficSpec {
            source_workload: "production:frontend".into(),
            target: Some(traffic_spec::Target::Authority(
                "myapp.production.svc.cluster.local:80".into(),
            )),
        })
        .await
        .expect("an outbound policy for a known service")
        .into_inner();
    assert!(policy.protocol.is_some());

    // Off loopback, stock proxies speak TLS and expect Linkerd's control-plane identities;
    // the same ports take both.
    let tls_get = |addr: SocketAddr, server: &'static str| {
        let anchors = id.anchors.clone();
        async move {
            let mut cfg = Arc::unwrap_or_clone(strait_identity::client_config(
                &strait_identity::CertStore::new(),
                &anchors,
            ));
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
            let name = rustls_pki_types::ServerName::try_from(server.to_string()).unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(name, tcp).await?;
            let mut slot = Some(tls);
            let channel = tonic::transport::Endpoint::from_static("http://control-plane")
                .connect_with_connector(tower::service_fn(move |_| {
                    let io = slot.take().map(hyper_util::rt::TokioIo::new);
                    async move { io.ok_or_else(|| std::io::Error::other("one connection only")) }
                }))
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(channel)
        }
    };
    let channel = tls_get(
        bound.destination,
        "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
    )
    .await
    .expect("TLS to the destination identity");
    let mut tls_dst = DestinationClient::new(channel);
    let mut s = tls_dst
        .get(GetDestination {
            scheme: "k8s".into(),
            path: "myapp.production.svc.cluster.local:80".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        s.message().await.unwrap().unwrap().update,
        Some(U::Add(_))
    ));
    tls_get(
        bound.identity,
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
    )
    .await
    .expect("TLS to the identity service's identity");
    assert!(
        tls_get(
            bound.identity,
            "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local"
        )
        .await
        .is_err(),
        "the identity port does not present the destination identity"
    );

    tokio::time::timeout(Duration::from_secs(5), controller.stop())
        .await
        .expect("drains within 5s")
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ControllerConfig {
        destination_addr: taken.local_addr().unwrap(),
        ..Default::default()
    };
    let (anchors, issuer) = strait_identity::generate(&TrustDomain::default(), SystemTime::now()).unwrap();
    let err = run(
        cfg,
        LocalStore::in_memory(),
        anchors,
        issuer,
        LocalTokens::new(&[1; 32]),
        |_| {},
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Bind {
                what: "destination",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("is another process using the port"),
        "{err}"
    );
}

#[tokio::test]
async fn an_in_process_controller_reports_a_failed_start_and_stops_once() {
    let dir = tempfile::tempdir().unwrap();
    let id = LocalIdentity::load_or_create(dir.path(), &TrustDomain::default(), SystemTime::now()).unwrap();
    let any = local(0);
    let taken = TcpListener::bind(any).await.unwrap();
    let cfg = |identity_addr| ControllerConfig {
        destination_addr: any,
        identity_addr,
        policy_addr: any,
        admin_addr: any,
        ..Default::default()
    };
    let err = InProcess::start(cfg(taken.local_addr().unwrap()), LocalStore::in_memory(), &id)
        .await
        .err()
        .expect("the identity port is taken");
    assert!(matches!(err, RunError::Bind { what: "identity", .. }), "{err}");

    let mut c = InProcess::start(cfg(any), LocalStore::in_memory(), &id)
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(c.bound.identity).await.is_ok());
    tokio::time::timeout(Duration::from_secs(15), c.stop())
        .await
        .expect("stops within 15s")
        .unwrap();
    assert!(c.stop().await.is_ok(), "a second stop is a no-op");
    assert!(
        tokio::net::TcpStream::connect(c.bound.identity).await.is_err(),
        "nothing listens after the stop"
    );
}
