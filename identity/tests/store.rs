//! CertStore: what it accepts, and what it keeps on failure.

mod common;

use common::{generated_ca, id, leaf};
use strait_identity::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use strait_identity::{CertStore, StoreError, generate_key_and_csr};

#[test]
fn starts_empty_and_holds_the_latest_certificate() {
    let (_, issuer) = generated_ca();
    let store = CertStore::new();
    assert!(store.current().is_none());
    assert_eq!(store.identity(), None);

    let (chain, key) = leaf(&issuer, &id("web", "ns"));
    store.set(chain.clone(), key).expect("set");
    let clone = store.clone();
    assert_eq!(clone.identity(), Some(id("web", "ns")));
    assert_eq!(clone.current().expect("cert").cert, chain);

    let (chain, key) = leaf(&issuer, &id("web-v2", "ns"));
    clone.set(chain, key).expect("set through a clone");
    assert_eq!(store.identity(), Some(id("web-v2", "ns")), "clones share state");

    store.clear();
    assert!(clone.current().is_none());
}

#[test]
fn debug_output_names_the_identity_not_the_key() {
    let (_, issuer) = generated_ca();
    let (chain, key) = leaf(&issuer, &id("web", "ns"));
    let store = CertStore::with_cert(chain, key).expect("store");
    let debug = format!("{store:?}");
    assert!(debug.contains("web.ns.serviceaccount"), "{debug}");
    assert!(!debug.to_lowercase().contains("key"), "{debug}");
}

#[test]
fn refuses_bad_input_and_keeps_the_previous_certificate() {
    let (_, issuer) = generated_ca();
    let (chain, key) = leaf(&issuer, &id("web", "ns"));
    let store = CertStore::with_cert(chain.clone(), key).expect("store");

    let (_, other_key) = leaf(&issuer, &id("other", "ns"));
    let err = store.set(chain.clone(), other_key).expect_err("key mismatch");
    assert!(matches!(err, StoreError::KeyMismatch), "{err:?}");

    let (fresh_key, _) = generate_key_and_csr(&id("web", "ns")).expect("key");
    let err = store
        .set(vec![], PrivateKeyDer::Pkcs8(fresh_key))
        .expect_err("empty chain");
    assert!(matches!(err, StoreError::EmptyChain), "{err:?}");

    let (fresh_key, _) = generate_key_and_csr(&id("web", "ns")).expect("key");
    let err = store
        .set(
            vec![b"not a certificate".to_vec().into()],
            PrivateKeyDer::Pkcs8(fresh_key),
        )
        .expect_err("garbage leaf");
    assert!(matches!(err, StoreError::InvalidLeaf(_)), "{err:?}");

    let err = store
        .set(
            chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0x30, 0x00])),
        )
        .expect_err("garbage key");
    assert!(matches!(err, StoreError::UnusableKey(_)), "{err:?}");

    // The issuer certificate is not a workload certificate: no identity.
    let issuer_key = rcgen::KeyPair::from_pem(&issuer.key_pem()).expect("key");
    let err = store
        .set(
            vec![issuer.cert_der().clone()],
            PrivateKeyDer::Pkcs8(issuer_key.serialize_der().into()),
        )
        .expect_err("no identity");
    assert!(matches!(err, StoreError::NoIdentity { .. }), "{err:?}");
    assert!(
        err.to_string().contains("identity.linkerd.cluster.local"),
        "{err}"
    );

    assert_eq!(store.identity(), Some(id("web", "ns")));
    assert_eq!(store.current().expect("still there").cert, chain);
}
