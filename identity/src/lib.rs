//! Mesh identity: Linkerd identity names, trust anchors, issuance, and mTLS.
//!
//! This crate owns everything that decides *who* a peer is: parsing and
//! validating identity names, loading and validating the trust bundle and the
//! issuer (or generating them like `linkerd install`), issuing leaf
//! certificates from proxy CSRs, and building rustls client/server
//! configurations that authenticate peers by mesh identity, with certificates
//! that can be swapped at runtime. Time is always an input (`now`); nothing
//! here reads the clock except rustls during handshakes.
//!
//! Typical flow:
//! - control plane: [`TrustAnchors::load`] + [`Issuer::load_files`] (or
//!   [`generate`]), then [`Issuer::issue`] for each proxy CSR;
//! - proxy: [`generate_key_and_csr`], send the CSR, put the returned chain and
//!   the key in a [`CertStore`], and build [`client_config`] /
//!   [`server_config`] once; [`peer_identity`] tells who is on the other end.
//!
//! ```
//! use std::time::SystemTime;
//! use strait_identity::*;
//!
//! let now = SystemTime::now();
//! // Control plane: a fresh PKI, as `strait install` would print it.
//! let (anchors, issuer) = generate(&TrustDomain::default(), now)?;
//!
//! // Proxy: key + CSR for its identity; the controller issues a leaf.
//! let me: IdentityName = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local".parse()?;
//! let (key, csr) = generate_key_and_csr(&me)?;
//! let issued = issuer.issue(&csr, &me, DEFAULT_LEAF_LIFETIME, now)?;
//!
//! // The proxy serves and dials with the issued certificate.
//! let store = CertStore::with_cert(issued.chain, pki_types::PrivateKeyDer::Pkcs8(key))?;
//! let server = server_config(&store, &anchors, ClientAuth::Required);
//! let client = client_config(&store, &anchors);
//! # let _ = (server, client);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod anchors;
mod csr;
#[macro_use]
mod delegate;
mod issuer;
mod load;
mod name;
mod pem;
mod store;
mod tls;
mod x509;

pub use anchors::TrustAnchors;
pub use csr::{CsrError, generate_key_and_csr};
pub use issuer::{
    DEFAULT_LEAF_LIFETIME, GENERATED_ANCHOR_LIFETIME, GENERATED_ISSUER_LIFETIME, GenerateError, IssueError,
    IssuedCert, Issuer, generate,
};
pub use load::LoadError;
pub use name::{DEFAULT_TRUST_DOMAIN, IdentityName, LabelProblem, NameError, Part, TrustDomain};
/// PEM-encodes DER (`CERTIFICATE`, `PRIVATE KEY`), for writing credentials to files.
pub use pem::encode as encode_pem;
pub use store::{CertStore, StoreError};
pub use tls::{
    ClientAuth, NoMeshIdentity, certificate_identity, client_config, peer_identity, server_config,
};

/// Re-exported so callers name the exact rustls types these APIs use.
pub use rustls;
pub use rustls_pki_types as pki_types;
