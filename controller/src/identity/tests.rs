use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::{Request as HttpRequest, Response as HttpResponse};
use kube::client::Body;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use serde_json::{Value, json};
use strait_identity::{CertStore, IdentityName, TrustDomain, generate, generate_key_and_csr};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;

use super::*;

fn name(sa: &str, ns: &str) -> IdentityName {
    IdentityName::new(sa, ns, "cluster.local").unwrap()
}

#[tokio::test]
async fn local_tokens_bind_namespace_and_service_account() {
    let tokens = LocalTokens::new(&LocalTokens::generate_secret().unwrap());
    let t = tokens.mint("production", "frontend", "frontend-7d9f");
    assert_eq!(
        tokens.verify(t.as_bytes()).unwrap(),
        ("production".into(), "frontend".into(), "frontend-7d9f".into())
    );
    assert_eq!(
        tokens
            .validate(t.as_bytes(), &name("frontend", "production"))
            .await,
        Ok(())
    );
    assert!(matches!(
        tokens.validate(t.as_bytes(), &name("api", "production")).await,
        Err(TokenError::WrongIdentity { .. })
    ));

    // Tampering with the payload (claiming another service account) breaks the signature.
    let forged = t.replacen(&hex(b"production/frontend"), &hex(b"production/api12345"), 1);
    assert_ne!(forged, t);
    assert!(matches!(
        tokens.verify(forged.as_bytes()),
        Err(TokenError::Invalid(_))
    ));
    // Another cluster's secret does not verify.
    let other = LocalTokens::new(&[7u8; 32]);
    assert!(matches!(other.verify(t.as_bytes()), Err(TokenError::Invalid(_))));
    assert!(matches!(
        tokens.verify(b"eyJhbGciOi..."),
        Err(TokenError::Invalid(_))
    ));
}

struct Fixture {
    addr: SocketAddr,
    tokens: LocalTokens,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn serve() -> Fixture {
    let now = SystemTime::now();
    let (_anchors, issuer) = generate(&TrustDomain::default(), now).unwrap();
    let tokens = LocalTokens::new(&LocalTokens::generate_secret().unwrap());
    let svc = IdentityService::new(
        Arc::new(RwLock::new(issuer)),
        tokens.clone(),
        Duration::from_secs(24 * 3600),
        Arc::new(SystemTime::now),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            }),
    );
    Fixture {
        addr,
        tokens,
        _shutdown: tx,
    }
}

async fn client(addr: SocketAddr) -> IdentityClient<tonic::transport::Channel> {
    IdentityClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test]
async fn certify_issues_a_leaf_for_the_tokens_identity() {
    let f = serve().await;
    let id = name("frontend", "production");
    let (key, csr) = generate_key_and_csr(&id).unwrap();
    let before = SystemTime::now();
    let rsp = client(f.addr)
        .await
        .certify(linkerd2_proxy_api::identity::CertifyRequest {
            identity: id.to_string(),
            token: f.tokens.mint("production", "frontend", "frontend-1").into_bytes(),
            certificate_signing_request: csr.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rsp.intermediate_certificates.len(),
        1,
        "the issuer certificate is the one intermediate"
    );
    let mut chain = vec![rsp.leaf_certificate.clone().into()];
    chain.extend(rsp.intermediate_certificates.iter().map(|c| c.clone().into()));
    let store = CertStore::with_cert(chain, key.into()).expect("the leaf matches the proxy's key");
    assert_eq!(store.identity(), Some(id));
    let until = rsp.valid_until.unwrap().seconds as u64;
    let lifetime = until - before.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        (23 * 3600..=24 * 3600 + 60).contains(&lifetime),
        "24h lifetime, got {lifetime}s"
    );
}

#[tokio::test]
async fn certify_refuses_bad_tokens_and_csrs_with_the_right_status() {
    let f = serve().await;
    let mut c = client(f.addr).await;
    let id = name("frontend", "production");
    let (_key, csr) = generate_key_and_csr(&id).unwrap();
    let good_token = f.tokens.mint("production", "frontend", "p").into_bytes();
    let req = |identity: &str, token: Vec<u8>, csr: Vec<u8>| linkerd2_proxy_api::identity::CertifyRequest {
        identity: identity.to_string(),
        token,
        certificate_signing_request: csr,
    };

    let err = c
        .certify(req(id.as_str(), b"garbage".to_vec(), csr.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let other = f.tokens.mint("production", "api", "p").into_bytes();
    let err = c
        .certify(req(id.as_str(), other, csr.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("production/api"), "{}", err.message());

    let err = c
        .certify(req(id.as_str(), good_token.clone(), b"not a csr".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed CSR"), "{}", err.message());

    // A CSR for another identity than the one the token proves.
    let (_k, other_csr) = generate_key_and_csr(&name("api", "production")).unwrap();
    let err = c
        .certify(req(id.as_str(), good_token.clone(), other_csr.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("api.production"), "{}", err.message());

    let err = c
        .certify(req("frontend.production", good_token, csr.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not a mesh identity"), "{}", err.message());
}

type Handle = tower_test::mock::Handle<HttpRequest<Body>, HttpResponse<Body>>;

fn review_client() -> (TokenReviewValidator, Handle) {
    let (svc, handle) = tower_test::mock::pair::<HttpRequest<Body>, HttpResponse<Body>>();
    (
        TokenReviewValidator::new(kube::Client::new(svc, "default")),
        handle,
    )
}

async fn answer(handle: &mut Handle, status: Value) -> Value {
    let (req, send) = handle.next_request().await.expect("a TokenReview");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri().path(), "/apis/authentication.k8s.io/v1/tokenreviews");
    let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    let mut rsp = body.clone();
    rsp["status"] = status;
    send.send_response(
        HttpResponse::builder()
            .status(201)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&rsp).unwrap()))
            .unwrap(),
    );
    body
}

#[tokio::test]
async fn token_review_decides_in_kubernetes_mode() {
    let (v, mut handle) = review_client();
    let id = name("frontend", "production");
    let server = tokio::spawn(async move {
        let sent = answer(
            &mut handle,
            json!({"authenticated": true, "audiences": ["identity.l5d.io"],
                   "user": {"username": "system:serviceaccount:production:frontend"}}),
        )
        .await;
        assert_eq!(sent["spec"]["token"], "projected-token");
        assert_eq!(sent["spec"]["audiences"], json!(["identity.l5d.io"]));
        answer(
            &mut handle,
            json!({"authenticated": true, "audiences": ["identity.l5d.io"],
                   "user": {"username": "system:serviceaccount:production:api"}}),
        )
        .await;
        answer(
            &mut handle,
            json!({"authenticated": false, "error": "token expired"}),
        )
        .await;
        answer(
            &mut handle,
            json!({"authenticated": true, "audiences": ["kubernetes"],
                   "user": {"username": "system:serviceaccount:production:frontend"}}),
        )
        .await;
    });
    assert_eq!(v.validate(b"projected-token", &id).await, Ok(()));
    assert_eq!(
        v.validate(b"t", &id).await,
        Err(TokenError::WrongIdentity {
            actual: "production/api".into(),
            requested: "production/frontend".into()
        })
    );
    assert_eq!(
        v.validate(b"t", &id).await,
        Err(TokenError::Invalid("token expired".into()))
    );
    assert!(matches!(v.validate(b"t", &id).await, Err(TokenError::Invalid(m)) if m.contains("audience")));
    server.await.unwrap();
}
