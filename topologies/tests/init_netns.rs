//! `strait init`'s rules in real network namespaces (root, iptables): a "pod" namespace
//! whose traffic is redirected and a "peer" namespace beside it on a veth, addresses in
//! 198.18.0.0/15. Listeners on the proxy ports read `SO_ORIGINAL_DST` to prove a
//! connection was redirected and where it was going; listeners at the real destinations
//! prove what was not. Namespaces are removed on drop, also after a failed assertion.
//!
//! Without root or iptables the test prints why it skipped; under CI (`CI` set) it fails
//! instead, because `.ci/run` installs iptables and runs as root.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strait_topologies::init::{self, InitConfig, Mode, PortRange, Runner};

const POD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const WAIT: Duration = Duration::from_secs(5);

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    for tool in ["ip", "nsenter"] {
        if init::find_in_path(tool).is_none() {
            return Some(format!("needs `{tool}` (iproute2 / util-linux)"));
        }
    }
    if [
        "iptables-nft-restore",
        "iptables-legacy-restore",
        "iptables-restore",
    ]
    .iter()
    .all(|t| init::find_in_path(t).is_none())
    {
        return Some("needs iptables (Debian package `iptables`)".into());
    }
    None
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pod and peer namespaces, joined by a veth; deleted on drop.
struct Namespaces {
    pod: String,
    peer: String,
}

impl Namespaces {
    fn create() -> Self {
        let pid = std::process::id();
        let ns = Self {
            pod: format!("strait-test-init-{pid}-pod"),
            peer: format!("strait-test-init-{pid}-peer"),
        };
        // Created one by one so that the guard removes whatever exists if a step fails.
        sh(&["ip", "netns", "add", &ns.pod]);
        sh(&["ip", "netns", "add", &ns.peer]);
        let (a, b) = (format!("sti{pid}a"), format!("sti{pid}b"));
        sh(&[
            "ip", "link", "add", &a, "netns", &ns.pod, "type", "veth", "peer", "name", &b, "netns", &ns.peer,
        ]);
        for (n, dev, ip) in [(&ns.pod, &a, POD_IP), (&ns.peer, &b, PEER_IP)] {
            sh(&["ip", "-n", n, "addr", "add", &format!("{ip}/30"), "dev", dev]);
            sh(&["ip", "-n", n, "link", "set", dev, "up"]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn path(name: &str) -> String {
        format!("/run/netns/{name}")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`: sockets it creates belong to that
/// namespace wherever they are used afterwards.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Namespaces::path(ns);
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        // SAFETY: a valid namespace fd; setns(CLONE_NEWNET) moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn listen(ns: &str, ports: &'static [u16]) -> Vec<TcpListener> {
    in_netns(ns, move || {
        ports
            .iter()
            .map(|p| {
                let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect()
    })
}

/// Connects from inside `ns`, optionally as `uid` (this thread only), and keeps the
/// connection open.
fn connect(ns: &str, to: SocketAddrV4, uid: Option<u32>) -> TcpStream {
    in_netns(ns, move || {
        if let Some(uid) = uid {
            // The raw syscall changes this thread's credentials only (glibc's wrapper
            // would change every thread's); the socket is owned by `uid`.
            // SAFETY: setresuid with valid ids; the thread ends right after.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        }
        TcpStream::connect_timeout(&SocketAddr::V4(to), WAIT)
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
    })
}

/// The connection `l` accepts within the bound, if any.
fn accepted(l: &TcpListener, within: Duration) -> Option<TcpStream> {
    let deadline = Instant::now() + within;
    loop {
        match l.accept() {
            Ok((s, _)) => return Some(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Where a redirected connection was going (`SO_ORIGINAL_DST`).
fn original_dst(s: &TcpStream) -> SocketAddrV4 {
    // SAFETY: sockaddr_in is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "SO_ORIGINAL_DST: {}", std::io::Error::last_os_error());
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        )
    }
}

/// Asserts that `client`'s connection arrived at `at` (and returns it there).
fn arrives(client: &TcpStream, at: &TcpListener, what: &str) -> TcpStream {
    let s = accepted(at, WAIT).unwrap_or_else(|| panic!("{what}: no connection arrived"));
    assert_eq!(
        s.peer_addr().unwrap(),
        client.local_addr().unwrap(),
        "{what}: another connection"
    );
    s
}

fn nothing_at(l: &TcpListener, what: &str) {
    assert!(
        accepted(l, Duration::from_millis(200)).is_none(),
        "{what}: a connection arrived where none should"
    );
}

#[test]
fn init_redirects_pod_traffic_to_the_proxy_ports_except_what_it_must_not() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var_os("CI").is_none(),
            "init_netns {why}; CI must run it (see .ci/run)"
        );
        eprintln!("SKIPPED init_redirects_pod_traffic_to_the_proxy_ports_except_what_it_must_not: {why}");
        return;
    }
    let ns = Namespaces::create();
    let runner = Runner::detect(Mode::Auto, Some(Path::new(&Namespaces::path(&ns.pod)))).unwrap();
    let config = InitConfig {
        inbound_ports_to_ignore: vec![PortRange::one(9100)],
        outbound_ports_to_ignore: vec![PortRange::one(9200)],
        ..InitConfig::default()
    };
    // Twice: the second run replaces the first.
    for _ in 0..2 {
        runner
            .restore(&init::apply_plan(&config, &runner.existing()))
            .unwrap();
    }
    let saved = runner.save().unwrap();
    // PREROUTING jumps once; the proxy's traffic to its own pod address is the other jump.
    assert_eq!(saved.matches("-A PREROUTING").count(), 1, "{saved}");
    assert_eq!(saved.matches("-j PROXY_INIT_REDIRECT").count(), 2, "{saved}");
    assert_eq!(saved.matches("-j PROXY_INIT_OUTPUT").count(), 1, "{saved}");
    let ours = init::rules(&config)
        .iter()
        .filter(|r| r.chain.starts_with("PROXY_INIT"))
        .count();
    assert_eq!(saved.matches("-A PROXY_INIT_").count(), ours, "{saved}");

    let pod = listen(&ns.pod, &[4140, 4143, 9100, 4191, 9300]);
    let (outbound, inbound, app_ignored, admin, app_local) = (&pod[0], &pod[1], &pod[2], &pod[3], &pod[4]);
    let peer = listen(&ns.peer, &[8080, 9200]);
    let (peer_app, peer_ignored) = (&peer[0], &peer[1]);

    // Outbound from the application: to the proxy's outbound port, original target kept.
    let target = SocketAddrV4::new(PEER_IP, 8080);
    let c = connect(&ns.pod, target, None);
    assert_eq!(original_dst(&arrives(&c, outbound, "outbound")), target);
    nothing_at(peer_app, "outbound from the app reached the peer directly");

    // The proxy's own traffic leaves untouched.
    let c = connect(&ns.pod, target, Some(2102));
    arrives(&c, peer_app, "outbound from the proxy's UID");
    nothing_at(outbound, "the proxy's own outbound traffic was redirected");

    // Ignored outbound ports and loopback are not redirected.
    let c = connect(&ns.pod, SocketAddrV4::new(PEER_IP, 9200), None);
    arrives(&c, peer_ignored, "outbound to an ignored port");
    let c = connect(&ns.pod, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9300), None);
    arrives(&c, app_local, "loopback");
    nothing_at(outbound, "ignored outbound traffic was redirected");

    // Inbound: to the proxy's inbound port, original destination kept.
    let target = SocketAddrV4::new(POD_IP, 8080);
    let c = connect(&ns.peer, target, None);
    assert_eq!(original_dst(&arrives(&c, inbound, "inbound")), target);
    // Ignored inbound ports and the proxy's admin port reach their listeners.
    let c = connect(&ns.peer, SocketAddrV4::new(POD_IP, 9100), None);
    arrives(&c, app_ignored, "inbound to an ignored port");
    let c = connect(&ns.peer, SocketAddrV4::new(POD_IP, 4191), None);
    arrives(&c, admin, "inbound to the proxy's admin port");
    nothing_at(inbound, "ignored inbound traffic was redirected");

    // --clean removes every rule and chain; traffic then flows directly.
    let plan = init::clean_plan(&runner.existing()).expect("something to clean");
    runner.restore(&plan).unwrap();
    let saved = runner.save().unwrap_or_default();
    assert!(!saved.contains("PROXY_INIT"), "{saved}");
    assert_eq!(init::clean_plan(&runner.existing()), None);
    let c = connect(&ns.pod, SocketAddrV4::new(PEER_IP, 8080), None);
    arrives(&c, peer_app, "outbound after --clean");
    nothing_at(outbound, "redirected after --clean");
}
