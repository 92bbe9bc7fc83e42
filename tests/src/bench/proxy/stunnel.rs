//! The floor: two stunnel processes (Debian's package) relaying bytes with the same mutual
//! TLS 1.3 hop as the mesh pairs, and nothing else — no HTTP, no discovery, no balancing,
//! no metrics, one TLS connection per client connection. No proxy pair that does more
//! can add less than two processes relaying bytes through TLS on the same machine, so
//! this pair measures what the machine itself charges for the hop: the wake-ups of two
//! more processes per request and answer, and the TLS records.

use std::net::SocketAddr;

use super::{BuildContext, Error, Layout, PairSpec, ProcessSpec};
use crate::bench::proxy::pki::Pki;

/// The stunnel configuration of one side: the client side accepts plaintext on
/// `accept` and connects with TLS to `connect`, verifying the server's identity; the
/// server side accepts TLS, requiring and verifying the client's certificate.
pub fn config(pki: &Pki, client: bool, accept: SocketAddr, connect: SocketAddr) -> String {
    let (chain, key, peer) = if client {
        (&pki.client_chain, &pki.client_key, &pki.server_identity)
    } else {
        (&pki.server_chain, &pki.server_key, &pki.client_identity)
    };
    format!(
        "foreground = yes\npid =\nsyslog = no\ndebug = 4\n\n[hop]\nclient = {}\naccept = {accept}\n\
         connect = {connect}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = {peer}\n\
         sslVersionMin = TLSv1.3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
        if client { "yes" } else { "no" },
        chain.display(),
        key.display(),
        pki.anchors.display(),
    )
}

/// The stunnel pair for `layout` (`stunnel4` from `$PATH`).
pub fn pair(layout: &Layout, _ctx: &BuildContext<'_>) -> Result<PairSpec, Error> {
    let stunnel =
        super::tools::which("stunnel4").ok_or_else(|| Error::Tool("stunnel4 is not installed".into()))?;
    let spec = |side: &str, text: String| -> Result<ProcessSpec, Error> {
        let path = layout.dir.join(format!("stunnel-{side}.conf"));
        std::fs::write(&path, text).map_err(Error::io(format!("cannot write {}", path.display())))?;
        Ok(ProcessSpec {
            name: format!("{side}-side stunnel"),
            program: stunnel.clone(),
            args: vec![path.display().to_string()],
            env: Vec::new(),
        })
    };
    let pki = &layout.pki;
    Ok(PairSpec {
        label: "stunnel pair".into(),
        objects: String::new(),
        client: spec(
            "client",
            config(pki, true, layout.client_proxy, layout.server_proxy),
        )?,
        server: spec("server", config(pki, false, layout.server_proxy, layout.backend))?,
        notes: format!(
            "{} from Debian, a byte relay: plaintext in on the client side, mutual TLS 1.3 with the mesh \
             certificates between them (each side's identity verified by name), one TLS connection per \
             client connection, no HTTP; the floor for any pair of processes doing this hop",
            crate::bench::gateway::stunnel_version(&stunnel)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_verifies_the_other() {
        let (_dir, layout) = Layout::for_tests(9);
        let client = config(&layout.pki, true, layout.client_proxy, layout.server_proxy);
        assert!(
            client.contains("client = yes\naccept = 127.46.9.2:4140\nconnect = 127.46.9.3:4143\n"),
            "{client}"
        );
        assert!(
            client.contains("checkHost = myapp.production.serviceaccount.identity.linkerd.cluster.local\n"),
            "{client}"
        );
        let server = config(&layout.pki, false, layout.server_proxy, layout.backend);
        assert!(
            server.contains("client = no\naccept = 127.46.9.3:4143\nconnect = 127.46.9.3:8080\n"),
            "{server}"
        );
        assert!(
            server.contains("verifyChain = yes\ncheckHost = web.production.serviceaccount"),
            "{server}"
        );
        assert!(server.contains("sslVersionMin = TLSv1.3\n"), "{server}");
    }
}
