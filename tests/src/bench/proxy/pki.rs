//! Certificates for the pairs that do not ask the identity service (HAProxy): two workload
//! leaves issued from CSRs by the mesh's own issuer, exactly as the identity service
//! issues them to `strait proxy`, so every pair does the same TLS hop with the same
//! trust anchor, key type (ECDSA P-256) and identities.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strait_identity::{IdentityName, Issuer, TrustAnchors, TrustDomain, encode_pem, generate_key_and_csr};

use super::Error;
use super::mesh::NAMESPACE;

/// The client pod's service account in every pair.
pub const CLIENT_SA: &str = "web";
/// The server pod's service account.
pub const SERVER_SA: &str = "myapp";

/// PEM files in a path's directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The trust anchor.
    pub anchors: PathBuf,
    /// The server side's identity.
    pub server_identity: IdentityName,
    /// Its chain (leaf, issuer).
    pub server_chain: PathBuf,
    /// Its key (PKCS#8).
    pub server_key: PathBuf,
    /// The client side's identity.
    pub client_identity: IdentityName,
    /// Its chain.
    pub client_chain: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(format!("cannot write {}", path.display())))
}

/// Issues both leaves into `dir`.
pub fn issue_into(dir: &Path, anchors: &TrustAnchors, issuer: &Issuer) -> Result<Pki, Error> {
    let now = SystemTime::now();
    let td = TrustDomain::default();
    let file = |n: &str| dir.join(n);
    write(&file("anchors.pem"), &anchors.to_pem())?;
    let leaf = |sa: &str| -> Result<(IdentityName, PathBuf, PathBuf), Error> {
        let id = td
            .identity(sa, NAMESPACE)
            .map_err(|e| Error::Pki(e.to_string()))?;
        let (key, csr) = generate_key_and_csr(&id).map_err(|e| Error::Pki(e.to_string()))?;
        let cert = issuer
            .issue(csr.as_ref(), &id, Duration::from_secs(24 * 3600), now)
            .map_err(|e| Error::Pki(e.to_string()))?;
        let chain: String = cert
            .chain
            .iter()
            .map(|c| encode_pem("CERTIFICATE", c.as_ref()))
            .collect();
        let (chain_path, key_path) = (file(&format!("{sa}.crt")), file(&format!("{sa}.key")));
        write(&chain_path, &chain)?;
        write(&key_path, &encode_pem("PRIVATE KEY", key.secret_pkcs8_der()))?;
        Ok((id, chain_path, key_path))
    };
    let (server_identity, server_chain, server_key) = leaf(SERVER_SA)?;
    let (client_identity, client_chain, client_key) = leaf(CLIENT_SA)?;
    Ok(Pki {
        anchors: file("anchors.pem"),
        server_identity,
        server_chain,
        server_key,
        client_identity,
        client_chain,
        client_key,
    })
}
