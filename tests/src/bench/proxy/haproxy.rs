//! The reference pair: two HAProxy processes (Debian's package) doing the same hop as two
//! mesh proxies — plaintext HTTP/1.1 in on the client side, mutual TLS 1.3 between them
//! with the mesh's certificates (ECDSA P-256, the server's identity verified by name),
//! HTTP/1.1 to the backend. One thread each, like a sidecar with one core, and
//! connection reuse on the TLS hop as a mesh proxy pools its connections.

use std::net::SocketAddr;
use std::path::Path;

use super::{BuildContext, Error, Layout, PairSpec, ProcessSpec};

/// The two configuration files' texts: (client side, server side).
pub fn configs(layout: &Layout, client_pem: &Path, server_pem: &Path) -> (String, String) {
    let global = "global\n  nbthread 1\n  maxconn 4096\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  \
                  ssl-default-server-options ssl-min-ver TLSv1.3\n\ndefaults\n  mode http\n  \
                  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\n";
    let anchors = layout.pki.anchors.display();
    let server_name = layout.pki.server_identity.as_str();
    let client = format!(
        "{global}frontend outbound\n  bind {}\n  default_backend mesh\n\n\
         backend mesh\n  http-reuse always\n  server peer {} ssl crt {} ca-file {anchors} verify required \
         verifyhost {server_name} sni str({server_name}) alpn http/1.1\n",
        addr(layout.client_proxy),
        addr(layout.server_proxy),
        client_pem.display(),
    );
    let server = format!(
        "{global}frontend inbound\n  bind {} ssl crt {} ca-file {anchors} verify required alpn http/1.1\n  \
         default_backend app\n\nbackend app\n  http-reuse always\n  server app {}\n",
        addr(layout.server_proxy),
        server_pem.display(),
        addr(layout.backend),
    );
    (client, server)
}

fn addr(a: SocketAddr) -> String {
    a.to_string()
}

fn combined(chain: &Path, key: &Path, out: &Path) -> Result<(), Error> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(Error::io(format!("cannot read {}", p.display())));
    let text = read(chain)? + &read(key)?;
    std::fs::write(out, text).map_err(Error::io(format!("cannot write {}", out.display())))
}

/// The HAProxy pair for `layout` (the `haproxy` binary from `$PATH`).
pub fn pair(layout: &Layout, _ctx: &BuildContext<'_>) -> Result<PairSpec, Error> {
    let haproxy =
        super::tools::which("haproxy").ok_or_else(|| Error::Tool("haproxy is not installed".into()))?;
    let pki = &layout.pki;
    let (client_pem, server_pem) = (
        layout.dir.join("haproxy-client.pem"),
        layout.dir.join("haproxy-server.pem"),
    );
    combined(&pki.client_chain, &pki.client_key, &client_pem)?;
    combined(&pki.server_chain, &pki.server_key, &server_pem)?;
    let (client_cfg, server_cfg) = configs(layout, &client_pem, &server_pem);
    let spec = |side: &str, text: &str| -> Result<ProcessSpec, Error> {
        let path = layout.dir.join(format!("haproxy-{side}.cfg"));
        std::fs::write(&path, text).map_err(Error::io(format!("cannot write {}", path.display())))?;
        Ok(ProcessSpec {
            name: format!("{side}-side haproxy"),
            program: haproxy.clone(),
            // -db: foreground, one process; -f: the configuration.
            args: vec!["-db".into(), "-f".into(), path.display().to_string()],
            env: Vec::new(),
        })
    };
    Ok(PairSpec {
        label: "HAProxy pair".into(),
        objects: String::new(),
        client: spec("client", &client_cfg)?,
        server: spec("server", &server_cfg)?,
        notes: format!(
            "{} from Debian, `mode http`, `nbthread 1` each, mutual TLS 1.3 with the mesh certificates \
             (ECDSA P-256, server identity verified by name), `http-reuse always` on both backends",
            short_version(&super::tools::haproxy_version(&haproxy))
        ),
    })
}

fn short_version(line: &str) -> String {
    line.split_whitespace()
        .nth(2)
        .map_or_else(|| "version unknown".into(), |v| format!("HAProxy {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_wire_the_pair_with_mutual_tls() {
        let (_dir, layout) = Layout::for_tests(9);
        let (client, server) = configs(&layout, Path::new("/c.pem"), Path::new("/s.pem"));
        assert!(client.contains("bind 127.46.9.2:4140\n"), "{client}");
        assert!(
            client.contains("server peer 127.46.9.3:4143 ssl crt /c.pem ca-file "),
            "{client}"
        );
        assert!(
            client.contains(
                "verify required verifyhost myapp.production.serviceaccount.identity.linkerd.cluster.local"
            ),
            "{client}"
        );
        assert!(
            server.contains("bind 127.46.9.3:4143 ssl crt /s.pem ca-file "),
            "{server}"
        );
        assert!(server.contains(" verify required "), "{server}");
        assert!(server.contains("server app 127.46.9.3:8080\n"), "{server}");
        for c in [&client, &server] {
            assert!(c.contains("ssl-min-ver TLSv1.3"));
            assert!(c.contains("nbthread 1"));
        }
        assert_eq!(
            short_version("HAProxy version 2.6.12-1+deb12u4 2025/09/10 - https://haproxy.org/"),
            "HAProxy 2.6.12-1+deb12u4"
        );
    }
}
