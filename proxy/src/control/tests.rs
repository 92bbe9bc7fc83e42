use std::time::SystemTime;

use strait_identity::pki_types::{CertificateDer, PrivateKeyDer};
use strait_identity::{ClientAuth, Issuer, TrustDomain};
use tokio::net::TcpListener;

use super::*;

const DESTINATION: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const IDENTITY: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
const PROXY: &str = "web.production.serviceaccount.identity.linkerd.cluster.local";

fn pki() -> (TrustAnchors, Issuer) {
    strait_identity::generate(&TrustDomain::default(), SystemTime::now()).unwrap()
}

/// A fresh key and certificate for `name`.
fn cert(issuer: &Issuer, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let name: IdentityName = name.parse().unwrap();
    let (key, csr) = strait_identity::generate_key_and_csr(&name).unwrap();
    let issued = issuer
        .issue(csr.as_ref(), &name, Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    (issued.chain, PrivateKeyDer::Pkcs8(key))
}

/// A TLS server presenting `name`; each accepted handshake reports the client's leaf
/// certificate (or `None`), and failed handshakes are dropped.
async fn server(
    anchors: &TrustAnchors,
    issuer: &Issuer,
    name: &str,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<Option<CertificateDer<'static>>>,
) {
    let (chain, key) = cert(issuer, name);
    let store = CertStore::with_cert(chain, key).unwrap();
    let config = strait_identity::server_config(&store, anchors, ClientAuth::Optional);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let leaf = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned());
                let _ = tx.send(leaf);
            }
        }
    });
    (addr, rx)
}

fn connector(
    service: Service,
    addr: &str,
    expect: &str,
    anchors: &TrustAnchors,
    cert: ClientCert,
) -> TlsConnector {
    let (store, ready) = match cert {
        ClientCert::None => (CertStore::new(), None),
        ClientCert::Proxy { store, ready } => (store, Some(ready)),
    };
    TlsConnector {
        service,
        addr: addr.to_string(),
        identity: expect.parse().unwrap(),
        tls: strait_identity::client_config(&store, anchors),
        ready,
        last: Arc::default(),
    }
}

#[tokio::test]
async fn identity_is_verified_and_a_renewed_certificate_is_used_by_new_connections() {
    let (anchors, issuer) = pki();
    let (addr, mut seen) = server(&anchors, &issuer, DESTINATION).await;
    let store = CertStore::new();
    let (ready_tx, ready) = watch::channel(false);
    let c = connector(
        Service::Destination,
        &addr,
        DESTINATION,
        &anchors,
        ClientCert::Proxy {
            store: store.clone(),
            ready,
        },
    );

    // No certificate yet: destination connections wait for one instead of going anonymous.
    let early = tokio::spawn({
        let c = c.clone();
        async move { c.connect().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !early.is_finished(),
        "connected before the proxy had a certificate"
    );
    let (chain1, key1) = cert(&issuer, PROXY);
    let first = chain1[0].clone();
    store.set(chain1, key1).unwrap();
    ready_tx.send_replace(true);
    early.await.unwrap().expect("connects once certified");
    assert_eq!(seen.recv().await.unwrap().as_ref(), Some(&first));

    // Renewal: the next connection presents the new certificate.
    let (chain2, key2) = cert(&issuer, PROXY);
    let second = chain2[0].clone();
    assert_ne!(first, second);
    store.set(chain2, key2).unwrap();
    let _tls = c.connect().await.unwrap();
    assert_eq!(seen.recv().await.unwrap().as_ref(), Some(&second));
}

#[tokio::test]
async fn the_identity_service_is_reached_without_a_client_certificate() {
    let (anchors, issuer) = pki();
    let (addr, mut seen) = server(&anchors, &issuer, IDENTITY).await;
    let c = connector(Service::Identity, &addr, IDENTITY, &anchors, ClientCert::None);
    let _tls = c.connect().await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), None);
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_with_the_variable_named() {
    let (anchors, issuer) = pki();
    let (addr, _seen) = server(&anchors, &issuer, DESTINATION).await;
    let c = connector(Service::Identity, &addr, IDENTITY, &anchors, ClientCert::None);
    let e = c.connect().await.map(drop).unwrap_err();
    assert!(matches!(e, ControlError::Tls { .. }), "{e}");
    let msg = e.to_string();
    for part in [
        "identity service",
        addr.as_str(),
        IDENTITY,
        DESTINATION,
        "LINKERD2_PROXY_IDENTITY_SVC_NAME",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }

    // Another mesh's anchors: the chain does not verify either.
    let (other_anchors, _) = pki();
    let c = connector(
        Service::Destination,
        &addr,
        DESTINATION,
        &other_anchors,
        ClientCert::None,
    );
    let e = c.connect().await.map(drop).unwrap_err();
    assert!(matches!(e, ControlError::Tls { .. }), "{e}");
}

#[tokio::test]
async fn plaintext_and_tls_channels_are_built_from_the_config() {
    let (anchors, _) = pki();
    assert!(channel(Service::Destination, "dst:8086", None, &anchors, ClientCert::None).is_ok());
    assert!(
        channel(
            Service::Destination,
            "dst:8086",
            Some(DESTINATION.parse().unwrap()),
            &anchors,
            ClientCert::None
        )
        .is_ok()
    );
    let e = channel(Service::Policy, "not a uri:1", None, &anchors, ClientCert::None).unwrap_err();
    assert!(e.to_string().starts_with("LINKERD2_PROXY_POLICY_SVC_ADDR"), "{e}");
}
