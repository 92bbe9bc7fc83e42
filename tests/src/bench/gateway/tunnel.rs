//! The tunnels the gateway benchmark compares, each a pair of real processes between a
//! client site and a server site:
//!
//! ```text
//! client ─TCP─▶ entry (client site) ══ tunnel ══▶ exit (server site) ─TCP─▶ backend
//! ```
//!
//! - a pair of `strait gateway`s: the client-side gateway's egress listener is the
//!   entry, its link to the server-side gateway is one QUIC connection (mutual TLS 1.3,
//!   one stream per TCP connection), and the server-side gateway's ingress delivers to
//!   the backend (a static `--target`); the congestion controller is the pair's
//!   parameter;
//! - a pair of stunnel processes (Debian's `stunnel4`): TCP+TLS 1.3, one TLS connection
//!   per TCP connection, mutual authentication with the same issuer's certificate and
//!   identity check, `TCP_NODELAY` on every socket (the gateways set it too).
//!
//! A site is an address, optionally inside a network namespace (processes then run under
//! `ip netns exec`, which keeps their pid, so `/proc` sampling still works).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strait_identity::{IdentityName, Issuer, TrustAnchors, TrustDomain, encode_pem, generate_key_and_csr};

use super::super::proxy::ProcessSpec;
use super::super::proxy::process::Running;
use super::Error;
use super::traffic;

/// Where one side of a tunnel runs.
#[derive(Clone, Debug)]
pub struct Site {
    /// Its network namespace, if any.
    pub ns: Option<String>,
    /// Its address (in that namespace).
    pub ip: IpAddr,
}

/// The authority the client-side gateway's egress names; the server-side gateway maps
/// it to the backend.
pub const TARGET: &str = "bench-backend.default.svc.cluster.local:8080";

/// The certificates every tunnel end holds: one leaf with the gateway identity.
#[derive(Clone, Debug)]
pub struct Pki {
    /// Trust anchors (PEM).
    pub anchors: PathBuf,
    /// Leaf and issuer (PEM).
    pub chain: PathBuf,
    /// PKCS#8 key (PEM).
    pub key: PathBuf,
    /// The identity in the leaf.
    pub identity: IdentityName,
}

/// Makes a mesh issuer and a gateway leaf (`linkerd-gateway.linkerd-multicluster`) in `dir`.
pub fn pki(dir: &Path) -> Result<Pki, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Pki(e.to_string());
    let td = TrustDomain::default();
    let now = SystemTime::now();
    let (anchors, issuer): (TrustAnchors, Issuer) =
        strait_identity::generate(&td, now).map_err(|e| err(&e))?;
    let identity = td
        .identity("linkerd-gateway", "linkerd-multicluster")
        .map_err(|e| err(&e))?;
    let (key, csr) = generate_key_and_csr(&identity).map_err(|e| err(&e))?;
    let cert = issuer
        .issue(csr.as_ref(), &identity, Duration::from_secs(24 * 3600), now)
        .map_err(|e| err(&e))?;
    let chain: String = cert
        .chain
        .iter()
        .map(|c| encode_pem("CERTIFICATE", c.as_ref()))
        .collect();
    let write = |name: &str, text: &str| -> Result<PathBuf, Error> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(Error::io(format!("cannot write {}", p.display())))?;
        Ok(p)
    };
    Ok(Pki {
        anchors: write("anchors.pem", &anchors.to_pem())?,
        chain: write("gateway.crt", &chain)?,
        key: write("gateway.key", &encode_pem("PRIVATE KEY", key.secret_pkcs8_der()))?,
        identity,
    })
}

/// Which tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Two stunnel processes.
    Stunnel,
    /// Two `strait gateway`s with this `--congestion`.
    Gateway(&'static str),
}

impl Kind {
    /// A short name for tables and file names.
    pub fn name(self) -> String {
        match self {
            Kind::Stunnel => "stunnel".into(),
            Kind::Gateway(cc) => format!("gateway-{cc}"),
        }
    }

    /// How reports name it.
    pub fn label(self) -> String {
        match self {
            Kind::Stunnel => "stunnel pair (TCP+TLS 1.3)".into(),
            Kind::Gateway(cc) => format!("strait gateway pair (QUIC, {cc})"),
        }
    }
}

/// A started tunnel.
pub struct Tunnel {
    /// Which.
    pub kind: Kind,
    /// Where clients connect (client site).
    pub entry: SocketAddr,
    /// The client site's namespace.
    pub ns: Option<String>,
    /// Client side, server side.
    pub procs: Vec<Running>,
}

impl Tunnel {
    /// Stops both processes.
    pub fn stop(self) {
        for p in self.procs {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Fails if either process has exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for p in &mut self.procs {
            p.check_alive()?;
        }
        Ok(())
    }

    /// The processes' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Running::pid).collect()
    }
}

/// What starting a tunnel needs.
pub struct Setup<'a> {
    /// The `strait` binary.
    pub strait: &'a Path,
    /// The `stunnel` binary.
    pub stunnel: &'a Path,
    /// Certificates.
    pub pki: &'a Pki,
    /// Scratch directory (configs, logs).
    pub dir: &'a Path,
    /// The client site.
    pub client: Site,
    /// The server site.
    pub server: Site,
    /// The backend (server site).
    pub backend: SocketAddr,
}

fn spec(site: &Site, name: String, program: &Path, args: Vec<String>) -> ProcessSpec {
    match &site.ns {
        None => ProcessSpec {
            name,
            program: program.to_path_buf(),
            args,
            env: Vec::new(),
        },
        Some(ns) => ProcessSpec {
            name,
            program: PathBuf::from("ip"),
            args: ["netns", "exec", ns.as_str(), &program.display().to_string()]
                .into_iter()
                .map(str::to_owned)
                .chain(args)
                .collect(),
            env: Vec::new(),
        },
    }
}

/// The stunnel configuration of one side.
pub fn stunnel_config(pki: &Pki, client: bool, accept: SocketAddr, connect: SocketAddr) -> String {
    format!(
        "foreground = yes\npid =\nsyslog = no\ndebug = 4\n\n[tunnel]\nclient = {}\naccept = {accept}\n\
         connect = {connect}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = {}\n\
         sslVersionMin = TLSv1.3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
        if client { "yes" } else { "no" },
        pki.chain.display(),
        pki.key.display(),
        pki.anchors.display(),
        pki.identity,
    )
}

/// The `strait gateway` arguments of one side.
pub fn gateway_args(
    pki: &Pki,
    congestion: &str,
    quic: SocketAddr,
    admin: SocketAddr,
    role: GatewayRole,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "gateway".into(),
        "--quic-addr".into(),
        quic.to_string(),
        "--admin-addr".into(),
        admin.to_string(),
        "--identity-trust-anchors-file".into(),
        pki.anchors.display().to_string(),
        "--identity-cert-file".into(),
        pki.chain.display().to_string(),
        "--identity-key-file".into(),
        pki.key.display().to_string(),
        "--congestion".into(),
        congestion.into(),
    ];
    match role {
        GatewayRole::Egress { remote, entry } => {
            a.push("--link".into());
            a.push(format!("east={remote}"));
            a.push("--egress".into());
            a.push(format!("{entry}=east/{TARGET}"));
        }
        GatewayRole::Ingress { backend } => {
            a.push("--target".into());
            a.push(format!("{TARGET}={backend}"));
        }
    }
    a
}

/// A gateway's side of the pair.
#[derive(Clone, Copy, Debug)]
pub enum GatewayRole {
    /// The client side: links to `remote` and relays `entry`'s connections.
    Egress {
        /// The server-side gateway's QUIC address.
        remote: SocketAddr,
        /// The egress listener.
        entry: SocketAddr,
    },
    /// The server side: delivers to the backend.
    Ingress {
        /// The backend.
        backend: SocketAddr,
    },
}

/// Starts tunnel number `n` (its ports are offset by `n`, so tunnels run side by side)
/// and waits until a request goes through it.
pub fn start(kind: Kind, n: u16, s: &Setup<'_>) -> Result<Tunnel, Error> {
    let entry = SocketAddr::new(s.client.ip, 15000 + n);
    let dir = s.dir.join(kind.name());
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let (client, server) = match kind {
        Kind::Stunnel => {
            let exit = SocketAddr::new(s.server.ip, 16000 + n);
            let write = |side: &str, text: String| -> Result<PathBuf, Error> {
                let p = dir.join(format!("stunnel-{side}.conf"));
                std::fs::write(&p, text).map_err(Error::io(format!("cannot write {}", p.display())))?;
                Ok(p)
            };
            let cc = write("client", stunnel_config(s.pki, true, entry, exit))?;
            let sc = write("server", stunnel_config(s.pki, false, exit, s.backend))?;
            (
                spec(
                    &s.client,
                    "client-side stunnel".into(),
                    s.stunnel,
                    vec![cc.display().to_string()],
                ),
                spec(
                    &s.server,
                    "server-side stunnel".into(),
                    s.stunnel,
                    vec![sc.display().to_string()],
                ),
            )
        }
        Kind::Gateway(cc) => {
            let (cq, sq) = (
                SocketAddr::new(s.client.ip, 14143 + n),
                SocketAddr::new(s.server.ip, 14143 + n),
            );
            let (ca, sa) = (
                SocketAddr::new(s.client.ip, 17000 + n),
                SocketAddr::new(s.server.ip, 17100 + n),
            );
            (
                spec(
                    &s.client,
                    format!("client-side gateway {cc}"),
                    s.strait,
                    gateway_args(s.pki, cc, cq, ca, GatewayRole::Egress { remote: sq, entry }),
                ),
                spec(
                    &s.server,
                    format!("server-side gateway {cc}"),
                    s.strait,
                    gateway_args(s.pki, cc, sq, sa, GatewayRole::Ingress { backend: s.backend }),
                ),
            )
        }
    };
    eprintln!("{}: starting", kind.label());
    let server = Running::start(&server, &dir)?;
    let mut client = Running::start(&client, &dir)?;
    let ns = s.client.ns.clone();
    let probe_ns = ns.clone();
    client.wait_until(
        "answering through the tunnel",
        Duration::from_secs(30),
        move || traffic::answers(probe_ns.as_deref(), entry),
    )?;
    let mut t = Tunnel {
        kind,
        entry,
        ns,
        procs: vec![client, server],
    };
    t.check_alive()?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tunnels_verify_the_peer_and_forward_where_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path()).unwrap();
        let a: SocketAddr = "127.47.0.2:15000".parse().unwrap();
        let b: SocketAddr = "127.47.0.3:16000".parse().unwrap();
        let c = stunnel_config(&pki, true, a, b);
        for line in [
            "client = yes\n",
            "accept = 127.47.0.2:15000\n",
            "connect = 127.47.0.3:16000\n",
            "verifyChain = yes\n",
            "checkHost = linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local\n",
            "sslVersionMin = TLSv1.3\n",
        ] {
            assert!(c.contains(line), "{line} not in {c}");
        }
        let g = gateway_args(&pki, "bbr", a, b, GatewayRole::Egress { remote: b, entry: a }).join(" ");
        assert!(g.contains("--link east=127.47.0.3:16000"), "{g}");
        assert!(
            g.contains("--egress 127.47.0.2:15000=east/bench-backend.default.svc.cluster.local:8080"),
            "{g}"
        );
        assert!(g.contains("--congestion bbr"), "{g}");
        let site = Site {
            ns: Some("nsx".into()),
            ip: a.ip(),
        };
        let s = spec(&site, "x".into(), Path::new("/bin/true"), vec!["y".into()]);
        assert_eq!(s.program, PathBuf::from("ip"));
        assert_eq!(s.args, ["netns", "exec", "nsx", "/bin/true", "y"]);
    }
}
