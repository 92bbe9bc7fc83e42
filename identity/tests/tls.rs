//! Real TLS handshakes over loopback TCP with the identity-verifying configs.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use common::{fixture, generated_ca, id, leaf, leaf_store};
use strait_identity::rustls::{self, CertificateError, ClientConfig, ServerConfig};
use strait_identity::{
    CertStore, ClientAuth, IdentityName, Issuer, NoMeshIdentity, TrustAnchors, client_config, peer_identity,
    server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector, client};

/// What the server saw for one accepted connection: the client's identity,
/// or the handshake error.
type Accepted = Result<Option<IdentityName>, io::Error>;

/// An echo server: every accepted connection reports its handshake outcome on
/// the channel, then echoes whatever it reads.
async fn echo_server(config: Arc<ServerConfig>) -> (SocketAddr, mpsc::UnboundedReceiver<Accepted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(peer_identity(tls.get_ref().1)));
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    expected_server: &IdentityName,
) -> io::Result<client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(expected_server.server_name(), tcp)
        .await
}

/// Sends `msg` and expects it echoed back.
async fn round_trip(tls: &mut client::TlsStream<TcpStream>, msg: &[u8]) -> io::Result<()> {
    tls.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await?;
    assert_eq!(buf, msg);
    Ok(())
}

fn rustls_error(err: &io::Error) -> &rustls::Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("expected a rustls error, got {err:?}"))
}

/// Both generated PKIs use the default names, so webpki finds a root with
/// the right name and then fails the signature; a differently named root
/// would be an unknown issuer. Either way: refused for the chain.
fn assert_foreign_chain_refused(err: &io::Error) {
    assert!(
        matches!(
            rustls_error(err),
            rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            )
        ),
        "{err:?}"
    );
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Accepted>) -> Accepted {
    rx.recv().await.expect("server reports every connection")
}

#[tokio::test]
async fn mutual_tls_both_sides_see_each_others_identity() {
    let (anchors, issuer) = generated_ca();
    let (server_id, client_id) = (id("web", "emojivoto"), id("vote-bot", "emojivoto"));
    let server_store = leaf_store(&issuer, &server_id);
    let client_store = leaf_store(&issuer, &client_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;

    let mut tls = connect(client_config(&client_store, &anchors), addr, &server_id)
        .await
        .expect("handshake");
    let conn = tls.get_ref().1;
    assert_eq!(peer_identity(conn), Some(server_id));
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    round_trip(&mut tls, b"ping").await.expect("echo");
    assert_eq!(next(&mut accepted).await.expect("accepted"), Some(client_id));
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let (anchors, issuer) = generated_ca();
    let (expected, actual) = (id("web", "emojivoto"), id("voting", "emojivoto"));
    let server_store = leaf_store(&issuer, &actual);
    let client_store = leaf_store(&issuer, &id("vote-bot", "emojivoto"));
    let (addr, _accepted) = echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;

    let err = connect(client_config(&client_store, &anchors), addr, &expected)
        .await
        .expect_err("wrong server identity");
    match rustls_error(&err) {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: e,
            presented,
        }) => {
            assert_eq!(e.to_str(), expected.as_str());
            assert!(
                presented.iter().any(|p| p.contains(actual.as_str())),
                "{presented:?}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn client_refuses_a_server_name_that_is_not_an_identity() {
    let (anchors, issuer) = generated_ca();
    let server_store = leaf_store(&issuer, &id("web", "ns"));
    let (addr, _accepted) = echo_server(server_config(&server_store, &anchors, ClientAuth::Optional)).await;
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let err = TlsConnector::from(client_config(&CertStore::new(), &anchors))
        .connect(name, tcp)
        .await
        .expect_err("not an identity");
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::Other(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_certificate() {
    let (anchors, issuer) = generated_ca();
    let server_id = id("web", "emojivoto");
    let server_store = leaf_store(&issuer, &server_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;

    // In TLS 1.3 the client may finish its side of the handshake before the
    // server rejects it, so the failure can surface on first use.
    let client = client_config(&CertStore::new(), &anchors);
    if let Ok(mut tls) = connect(client, addr, &server_id).await {
        round_trip(&mut tls, b"ping")
            .await
            .expect_err("server must not talk to an anonymous client");
    }
    let err = next(&mut accepted).await.expect_err("server refuses");
    assert!(
        matches!(rustls_error(&err), rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[tokio::test]
async fn optional_client_auth_admits_anonymous_clients_and_verifies_others() {
    let (anchors, issuer) = generated_ca();
    let server_id = id("linkerd-gateway", "linkerd-multicluster");
    let server_store = leaf_store(&issuer, &server_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Optional)).await;

    // Anonymous: admitted, no identity.
    let mut tls = connect(client_config(&CertStore::new(), &anchors), addr, &server_id)
        .await
        .expect("anonymous handshake");
    assert_eq!(peer_identity(tls.get_ref().1), Some(server_id.clone()));
    round_trip(&mut tls, b"hello").await.expect("echo");
    assert_eq!(next(&mut accepted).await.expect("accepted"), None);

    // Meshed: identified.
    let client_id = id("web", "emojivoto");
    let mut tls = connect(
        client_config(&leaf_store(&issuer, &client_id), &anchors),
        addr,
        &server_id,
    )
    .await
    .expect("mTLS handshake");
    round_trip(&mut tls, b"hello").await.expect("echo");
    assert_eq!(next(&mut accepted).await.expect("accepted"), Some(client_id));

    // A certificate from another root is still refused.
    let (_, foreign_issuer) = generated_ca();
    let foreign = leaf_store(&foreign_issuer, &id("intruder", "emojivoto"));
    if let Ok(mut tls) = connect(client_config(&foreign, &anchors), addr, &server_id).await {
        round_trip(&mut tls, b"hello").await.expect_err("refused");
    }
    let err = next(&mut accepted).await.expect_err("server refuses");
    assert_foreign_chain_refused(&err);
}

#[tokio::test]
async fn client_certificate_from_another_root_is_refused() {
    let (anchors, issuer) = generated_ca();
    let (other_anchors, other_issuer) = generated_ca();
    let server_id = id("web", "emojivoto");
    let server_store = leaf_store(&issuer, &server_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;

    // The client trusts both roots, so only the server's check can fail.
    let mut both = anchors.to_pem();
    both.push_str(&other_anchors.to_pem());
    let client_anchors = TrustAnchors::from_pem(both.as_bytes(), "both", SystemTime::now()).expect("bundle");
    let client_store = leaf_store(&other_issuer, &id("web", "emojivoto"));
    if let Ok(mut tls) = connect(client_config(&client_store, &client_anchors), addr, &server_id).await {
        round_trip(&mut tls, b"ping").await.expect_err("refused");
    }
    let err = next(&mut accepted).await.expect_err("server refuses");
    assert_foreign_chain_refused(&err);
}

#[tokio::test]
async fn client_certificate_without_mesh_identity_is_refused() {
    let (anchors, issuer) = generated_ca();
    let server_id = id("web", "emojivoto");
    let server_store = leaf_store(&issuer, &server_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;

    // A certificate signed by the real issuer, but for a plain hostname.
    let issuer_key = rcgen::KeyPair::from_pem(&issuer.key_pem()).expect("issuer key");
    let signer = rcgen::Issuer::from_ca_cert_der(issuer.cert_der(), issuer_key).expect("signer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["example.com".to_owned()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &signer).expect("cert");
    let chain = vec![cert.der().clone(), issuer.cert_der().clone()];

    // CertStore refuses such a certificate, so present it with a plain
    // rustls resolver spliced into our client config.
    assert!(
        CertStore::with_cert(
            chain.clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into())
        )
        .is_err()
    );
    let plain = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(anchors.root_store())
        .with_client_auth_cert(
            chain,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("client cert");
    let mut config = Arc::unwrap_or_clone(client_config(&CertStore::new(), &anchors));
    config.client_auth_cert_resolver = plain.client_auth_cert_resolver.clone();

    if let Ok(mut tls) = connect(Arc::new(config), addr, &server_id).await {
        round_trip(&mut tls, b"ping").await.expect_err("refused");
    }
    let err = next(&mut accepted).await.expect_err("server refuses");
    match rustls_error(&err) {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            let no_id = other.0.downcast_ref::<NoMeshIdentity>().expect("NoMeshIdentity");
            assert_eq!(no_id.presented, ["example.com"]);
        }
        e => panic!("unexpected error {e:?}"),
    }
}

#[tokio::test]
async fn swapping_the_server_certificate_keeps_established_connections() {
    let (anchors, issuer) = generated_ca();
    let (old_id, new_id) = (id("web", "emojivoto"), id("web-v2", "emojivoto"));
    let server_store = leaf_store(&issuer, &old_id);
    let (addr, mut accepted) =
        echo_server(server_config(&server_store, &anchors, ClientAuth::Required)).await;
    let client = client_config(&leaf_store(&issuer, &id("vote-bot", "emojivoto")), &anchors);

    let mut established = connect(client.clone(), addr, &old_id).await.expect("first");
    round_trip(&mut established, b"before").await.expect("echo");
    next(&mut accepted).await.expect("accepted");

    // Rotate: same store, new certificate (here even a new identity, so the
    // effect is observable).
    let (chain, key) = leaf(&issuer, &new_id);
    server_store.set(chain, key).expect("swap");
    assert_eq!(server_store.identity(), Some(new_id.clone()));

    // The established connection is unaffected.
    round_trip(&mut established, b"after the swap")
        .await
        .expect("old connection still works");
    assert_eq!(peer_identity(established.get_ref().1), Some(old_id.clone()));

    // New handshakes get the new certificate.
    let mut fresh = connect(client.clone(), addr, &new_id).await.expect("new cert");
    assert_eq!(peer_identity(fresh.get_ref().1), Some(new_id));
    round_trip(&mut fresh, b"new").await.expect("echo");
    let err = connect(client, addr, &old_id)
        .await
        .expect_err("old identity is gone");
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn swapping_the_client_certificate_changes_what_servers_see() {
    let (anchors, issuer) = generated_ca();
    let server_id = id("web", "emojivoto");
    let (addr, mut accepted) = echo_server(server_config(
        &leaf_store(&issuer, &server_id),
        &anchors,
        ClientAuth::Optional,
    ))
    .await;

    // The client config is built while the store is still empty.
    let client_store = CertStore::new();
    let client = client_config(&client_store, &anchors);
    let mut tls = connect(client.clone(), addr, &server_id).await.expect("anon");
    round_trip(&mut tls, b"x").await.expect("echo");
    assert_eq!(next(&mut accepted).await.expect("accepted"), None);

    let client_id = id("vote-bot", "emojivoto");
    let (chain, key) = leaf(&issuer, &client_id);
    client_store.set(chain, key).expect("set");
    let mut tls = connect(client, addr, &server_id).await.expect("mTLS");
    round_trip(&mut tls, b"x").await.expect("echo");
    assert_eq!(next(&mut accepted).await.expect("accepted"), Some(client_id));
}

#[tokio::test]
async fn alpn_is_configurable_by_the_caller() {
    let (anchors, issuer) = generated_ca();
    let server_id = id("web", "emojivoto");
    let mut server = Arc::unwrap_or_clone(server_config(
        &leaf_store(&issuer, &server_id),
        &anchors,
        ClientAuth::Required,
    ));
    server.alpn_protocols = vec![b"transport.l5d.io/v1".to_vec(), b"h2".to_vec()];
    let (addr, _accepted) = echo_server(Arc::new(server)).await;

    let mut client = Arc::unwrap_or_clone(client_config(
        &leaf_store(&issuer, &id("vote-bot", "emojivoto")),
        &anchors,
    ));
    client.alpn_protocols = vec![b"transport.l5d.io/v1".to_vec()];
    let tls = connect(Arc::new(client), addr, &server_id)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"transport.l5d.io/v1"[..]));
}

#[tokio::test]
async fn rsa_fixture_issuer_works_end_to_end() {
    // Fixtures are valid from when gen.sh ran until a century later; TLS
    // checks them against the real clock.
    let now = SystemTime::now();
    let anchors = TrustAnchors::from_pem(&fixture("rsa-ca.crt"), "rsa-ca.crt", now).expect("ca");
    let issuer = Issuer::load(
        &fixture("rsa-issuer.crt"),
        &fixture("rsa-issuer-pkcs1.key"),
        &anchors,
        now,
    )
    .expect("issuer");
    let (server_id, client_id) = (id("web", "emojivoto"), id("vote-bot", "emojivoto"));
    let (addr, mut accepted) = echo_server(server_config(
        &leaf_store(&issuer, &server_id),
        &anchors,
        ClientAuth::Required,
    ))
    .await;
    let mut tls = connect(
        client_config(&leaf_store(&issuer, &client_id), &anchors),
        addr,
        &server_id,
    )
    .await
    .expect("handshake");
    round_trip(&mut tls, b"rsa").await.expect("echo");
    assert_eq!(peer_identity(tls.get_ref().1), Some(server_id));
    assert_eq!(next(&mut accepted).await.expect("accepted"), Some(client_id));
}

#[tokio::test]
async fn empty_server_store_fails_handshakes() {
    let (anchors, _) = generated_ca();
    let (addr, mut accepted) =
        echo_server(server_config(&CertStore::new(), &anchors, ClientAuth::Optional)).await;
    connect(client_config(&CertStore::new(), &anchors), addr, &id("web", "ns"))
        .await
        .expect_err("no certificate to serve");
    next(&mut accepted).await.expect_err("server fails too");
}

#[tokio::test]
async fn wildcard_server_certificate_does_not_stand_in_for_an_identity() {
    // webpki alone would accept a wildcard SAN for the expected name; a mesh
    // identity must match exactly.
    let (anchors, issuer) = generated_ca();
    let issuer_key = rcgen::KeyPair::from_pem(&issuer.key_pem()).expect("issuer key");
    let signer = rcgen::Issuer::from_ca_cert_der(issuer.cert_der(), issuer_key).expect("signer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let params = rcgen::CertificateParams::new(vec![
        "*.emojivoto.serviceaccount.identity.linkerd.cluster.local".to_owned(),
    ])
    .expect("params");
    let cert = params.signed_by(&key, &signer).expect("cert");
    let plain = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), issuer.cert_der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server cert");
    let mut server = Arc::unwrap_or_clone(server_config(&CertStore::new(), &anchors, ClientAuth::Optional));
    server.cert_resolver = plain.cert_resolver.clone();
    let (addr, _accepted) = echo_server(Arc::new(server)).await;

    let err = connect(
        client_config(&CertStore::new(), &anchors),
        addr,
        &id("web", "emojivoto"),
    )
    .await
    .expect_err("wildcard refused");
    // webpki accepted the wildcard; the refusal is the exact identity check
    // (which reports the raw SANs).
    match rustls_error(&err) {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
            assert_eq!(
                presented,
                &["*.emojivoto.serviceaccount.identity.linkerd.cluster.local"]
            )
        }
        e => panic!("unexpected error {e:?}"),
    }
}
