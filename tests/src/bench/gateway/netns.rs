//! Two network namespaces joined by a veth, with random loss on the link: the lossy
//! path of the gateway benchmark.
//!
//! ```text
//!  namespace A (client side)              namespace B (server side)
//!  198.19.250.1/30  vA ═══════ veth ═══════ vB  198.19.250.2/30
//!                   └ nft netdev ingress:     └ nft netdev ingress:
//!                     drop N% at random         drop N% at random
//! ```
//!
//! `tc netem` does not exist on the machines this runs on, so loss comes from an nftables
//! rule on each side's ingress (`numgen random mod 100 < N drop`). Segmentation offloads
//! are turned off on both ends, so the rule sees (and drops) single packets rather than
//! 64 KiB TCP or UDP-GSO super-packets. Addresses are in the benchmark range
//! 198.18.0.0/15 and live only inside the two namespaces: nothing is routed from or to the
//! host. Deleting a namespace deletes its veth end and its nftables table, so [`LossyLink`]'s
//! `Drop` (and the sweep of a crashed run's leftovers at the next start) is the whole cleanup.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;

use super::Error;

/// Prefix of every namespace this benchmark creates (then the owner's pid, then `a`/`b`).
pub const PREFIX: &str = "sgwb";

/// The client side's address.
pub const A_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 1);
/// The server side's address.
pub const B_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 250, 2);

/// Two namespaces and the lossy veth between them; removed on drop.
#[derive(Debug)]
pub struct LossyLink {
    /// The client side's namespace.
    pub a: String,
    /// The server side's namespace.
    pub b: String,
    /// Percent of packets dropped in each direction.
    pub loss_percent: u32,
}

fn run(args: &[&str], input: Option<&str>) -> Result<(), Error> {
    use std::io::Write;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Process(format!("cannot run `{}`: {e}", args.join(" "))))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Process(format!("`{}`: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Process(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The nftables ruleset that drops `percent`% of what arrives on `device`.
pub fn loss_rules(device: &str, percent: u32) -> String {
    format!(
        "table netdev strait_bench_loss {{\n  chain ingress {{\n    type filter hook ingress device \"{device}\" \
         priority 0; policy accept;\n    numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
    )
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces a crashed run of this benchmark left behind (their owner is gone).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.trim_end_matches(['a', 'b']).parse().ok();
        if pid.is_some_and(|p| p != std::process::id() && !pid_alive(p)) {
            let _ = run(&["ip", "netns", "del", name], None);
        }
    }
}

impl LossyLink {
    /// Creates both namespaces, the veth and the loss rules.
    pub fn create(loss_percent: u32) -> Result<Self, Error> {
        sweep_stale();
        let pid = std::process::id();
        let link = LossyLink {
            a: format!("{PREFIX}{pid}a"),
            b: format!("{PREFIX}{pid}b"),
            loss_percent,
        };
        // From here on, a failure drops `link`, which deletes whatever was made.
        run(&["ip", "netns", "add", &link.a], None)?;
        run(&["ip", "netns", "add", &link.b], None)?;
        run(
            &[
                "ip", "link", "add", "vA", "netns", &link.a, "type", "veth", "peer", "name", "vB", "netns",
                &link.b,
            ],
            None,
        )?;
        for (ns, dev, ip) in [(&link.a, "vA", A_IP), (&link.b, "vB", B_IP)] {
            let cidr = format!("{ip}/30");
            run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev], None)?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"], None)?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"], None)?;
            run(
                &[
                    "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                ],
                None,
            )?;
            // UDP segmentation offload too, where the kernel offers the switch.
            let _ = run(
                &[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "ethtool",
                    "-K",
                    dev,
                    "tx-udp-segmentation",
                    "off",
                ],
                None,
            );
            // Socket buffer limits may be per namespace: give the namespace the host's
            // limits at least, so both tunnels get the buffers they ask for.
            for key in ["net.core.rmem_max", "net.core.wmem_max"] {
                if let Some(host) = sysctl(None, key)
                    && sysctl(Some(ns), key).is_some_and(|v| v < host)
                {
                    let _ = run(
                        &[
                            "ip",
                            "netns",
                            "exec",
                            ns,
                            "sysctl",
                            "-q",
                            "-w",
                            &format!("{key}={host}"),
                        ],
                        None,
                    );
                }
            }
            if loss_percent > 0 {
                run(
                    &["ip", "netns", "exec", ns, "nft", "-f", "-"],
                    Some(&loss_rules(dev, loss_percent)),
                )?;
            }
        }
        Ok(link)
    }

    /// The client side's address.
    pub fn a_ip(&self) -> IpAddr {
        IpAddr::V4(A_IP)
    }

    /// The server side's address.
    pub fn b_ip(&self) -> IpAddr {
        IpAddr::V4(B_IP)
    }

    /// Packets the loss rules dropped so far, per side (a, b), from the rules' counters.
    pub fn dropped(&self) -> (u64, u64) {
        let count = |ns: &str| -> u64 {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "list",
                    "table",
                    "netdev",
                    "strait_bench_loss",
                ])
                .output();
            out.ok()
                .and_then(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    let at = text.find("packets ")?;
                    text[at + 8..].split_whitespace().next()?.parse().ok()
                })
                .unwrap_or(0)
        };
        (count(&self.a), count(&self.b))
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = run(&["ip", "netns", "del", ns], None);
        }
    }
}

/// A sysctl's integer value, on the host or in namespace `ns`.
fn sysctl(ns: Option<&str>, key: &str) -> Option<u64> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match ns {
        None => std::fs::read_to_string(path).ok()?.trim().parse().ok(),
        Some(ns) => in_netns(Some(ns), move || {
            std::fs::read_to_string(path).and_then(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| std::io::Error::other("not an integer"))
            })
        })
        .ok(),
    }
}

/// Runs `f` on a fresh thread that has entered namespace `ns` (or this process's own
/// namespace when `None`), and returns its result. Sockets `f` creates stay in that
/// namespace wherever they are used afterwards; the thread ends with `f`, so no other
/// work ever runs in the namespace by accident.
pub fn in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let Some(ns) = ns else {
        return f();
    };
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        // SAFETY: setns(2) on an open namespace file descriptor; it affects only this
        // thread, which ends when `f` returns.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_rule_drops_at_random_on_ingress() {
        let r = loss_rules("vB", 1);
        assert!(r.contains("type filter hook ingress device \"vB\""), "{r}");
        assert!(r.contains("numgen random mod 100 < 1 counter drop"), "{r}");
        assert!(r.starts_with("table netdev strait_bench_loss"), "{r}");
    }
}
