//! The benchmark's certificates: a fresh mesh trust anchor and issuer (as `strait install`
//! generates them), and two workload leaves issued from CSRs exactly as the identity
//! service issues them, so any pair kind can use them. ECDSA P-256.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strait_identity::{IdentityName, TrustDomain, encode_pem, generate, generate_key_and_csr};

use super::Error;

/// PEM files in the benchmark's directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The trust anchor.
    pub anchors: PathBuf,
    /// The issuer's certificate.
    pub issuer_cert: PathBuf,
    /// The issuer's key.
    pub issuer_key: PathBuf,
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

/// Generates everything into `dir`.
pub fn generate_into(dir: &Path) -> Result<Pki, Error> {
    let now = SystemTime::now();
    let td = TrustDomain::new("cluster.local").map_err(|e| Error::Pki(e.to_string()))?;
    let (anchors, issuer) = generate(&td, now).map_err(|e| Error::Pki(e.to_string()))?;
    let file = |n: &str| dir.join(n);
    write(&file("anchors.pem"), &anchors.to_pem())?;
    write(&file("issuer.crt"), &issuer.cert_pem())?;
    write(&file("issuer.key"), &issuer.key_pem())?;
    let leaf = |sa: &str| -> Result<(IdentityName, PathBuf, PathBuf), Error> {
        let id = td.identity(sa, "bench").map_err(|e| Error::Pki(e.to_string()))?;
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
    let (server_identity, server_chain, server_key) = leaf("server")?;
    let (client_identity, client_chain, client_key) = leaf("client")?;
    Ok(Pki {
        anchors: file("anchors.pem"),
        issuer_cert: file("issuer.crt"),
        issuer_key: file("issuer.key"),
        server_identity,
        server_chain,
        server_key,
        client_identity,
        client_chain,
        client_key,
    })
}
