//! Addresses and network namespaces of a run.
//!
//! Every run holds a *slot* (0..[`SLOTS`]), a lock file in the machine's temporary
//! directory, so two runs never share addresses or interface names. A cluster's address
//! block is a /20: 198.18.0.0/15 split by slot and cluster in `netns` mode, 127.64.0.0/10
//! in `loopback` mode. Inside a block:
//!
//! | offset | use |
//! |---|---|
//! | 1 | the cluster's infrastructure: controller, DNS, mirror, gateway (the bridge address in `netns` mode) |
//! | 16 – 1039 | pods |
//! | 2048 – 3071 | Service cluster IPs the runtime assigns |
//! | 3072 – 4095 | mirror Service cluster IPs (`strait mirror --service-cidr`) |
//!
//! Interface and namespace names carry the slot: bridge `st<slot>c<cluster>`, host-side
//! veth `st<slot>c<cluster>p<pod>`, namespace `strait-<slot>-<cluster>-<pod>`, so leftovers
//! of a crashed run are found by prefix and removed.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::topology::Isolation;

/// Concurrent runs on one machine.
pub const SLOTS: u32 = 8;
/// Clusters per run (address blocks per slot).
pub const CLUSTERS_PER_SLOT: u32 = 4;
/// Pods per cluster.
pub const MAX_PODS: u32 = 1024;
const BLOCK: u32 = 4096;

/// A cluster's /20.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    base: u32,
}

impl Block {
    /// The block of cluster `cluster` of slot `slot`.
    pub fn new(isolation: Isolation, slot: u32, cluster: u32) -> Block {
        let base = match isolation {
            Isolation::Netns => {
                u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (slot * CLUSTERS_PER_SLOT + cluster) * BLOCK
            }
            // Loopback has room: each slot gets its own /16 so addresses read easily.
            _ => u32::from(Ipv4Addr::new(127, 64, 0, 0)) + slot * 65536 + cluster * BLOCK,
        };
        Block { base }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// `a.b.c.d/20`.
    pub fn cidr(&self) -> String {
        format!("{}/20", self.network())
    }

    /// The infrastructure address (controller, DNS, mirror, gateway).
    pub fn infra(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// The address of pod number `n`.
    pub fn pod(&self, n: u32) -> Ipv4Addr {
        assert!(n < MAX_PODS, "pod number {n} is beyond the block");
        Ipv4Addr::from(self.base + 16 + n)
    }

    /// The cluster IP number `n` of Services.
    pub fn service_ip(&self, n: u32) -> Option<Ipv4Addr> {
        (n < 1024).then(|| Ipv4Addr::from(self.base + 2048 + n))
    }

    /// The range mirror Services take cluster IPs from.
    pub fn mirror_cidr(&self) -> String {
        format!("{}/22", Ipv4Addr::from(self.base + 3072))
    }
}

/// A held slot: released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Slot {
    /// The slot number.
    pub number: u32,
    file: File,
    path: PathBuf,
}

/// Where slot locks live: shared by every user of the machine's temporary directory.
pub fn slots_dir() -> PathBuf {
    std::env::temp_dir().join("strait-slots")
}

impl Slot {
    /// Takes the first free slot; records `owner` (the run directory) in it, and returns
    /// the previous owner of that slot if it did not stop cleanly.
    pub fn take(owner: &Path) -> Result<(Slot, Option<PathBuf>), String> {
        let dir = slots_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // The directory is shared between users: let everyone create slot files in it.
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
        // Start at a slot that depends on the process, so a slot just released (whose
        // names a checker may still be looking for) is not always the next one taken.
        let start = std::process::id() % SLOTS;
        for number in (0..SLOTS).map(|i| (start + i) % SLOTS) {
            let path = dir.join(format!("slot-{number}.lock"));
            let Ok(mut file) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            else {
                continue;
            };
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                continue;
            }
            let previous = std::fs::read_to_string(&path)
                .ok()
                .map(|s| PathBuf::from(s.trim()))
                .filter(|p| !p.as_os_str().is_empty());
            file.set_len(0).map_err(|e| e.to_string())?;
            file.write_all(owner.display().to_string().as_bytes())
                .map_err(|e| e.to_string())?;
            return Ok((Slot { number, file, path }, previous));
        }
        Err(format!(
            "all {SLOTS} run slots are taken (see {}): stop a run with `strait down` first",
            dir.display()
        ))
    }

    /// Marks the slot as cleanly released.
    pub fn release(self) {
        let _ = self.file.set_len(0);
        let _ = &self.path;
    }
}

/// Names of one slot's network objects.
#[derive(Clone, Debug)]
pub struct Names {
    slot: u32,
}

impl Names {
    /// The names of slot `slot`.
    pub fn new(slot: u32) -> Self {
        Self { slot }
    }

    /// Cluster `c`'s bridge.
    pub fn bridge(&self, c: u32) -> String {
        format!("st{}c{c}", self.slot)
    }

    /// The host side of pod `n`'s veth.
    pub fn veth(&self, c: u32, n: u32) -> String {
        format!("st{}c{c}p{n}", self.slot)
    }

    /// Pod `n`'s network namespace.
    pub fn netns(&self, c: u32, n: u32) -> String {
        format!("strait-{}-{c}-{n}", self.slot)
    }

    /// The prefix of every namespace of the slot.
    pub fn netns_prefix(&self) -> String {
        format!("strait-{}-", self.slot)
    }

    /// The prefix of every interface of the slot.
    pub fn link_prefix(&self) -> String {
        format!("st{}c", self.slot)
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}); install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates cluster `c`'s bridge with the infrastructure address.
pub fn add_bridge(names: &Names, c: u32, block: &Block) -> Result<(), String> {
    let br = names.bridge(c);
    let _ = ip(&["link", "del", &br]);
    ip(&["link", "add", &br, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/20", block.infra()), "dev", &br])?;
    ip(&["link", "set", &br, "up"])
}

/// Creates pod `n`'s namespace on cluster `c`'s bridge with its address, and its
/// resolv.conf pointing at the cluster DNS.
pub fn add_pod_netns(
    names: &Names,
    c: u32,
    n: u32,
    addr: Ipv4Addr,
    dns: Ipv4Addr,
    search: &[String],
) -> Result<String, String> {
    let ns = names.netns(c, n);
    let veth = names.veth(c, n);
    let _ = ip(&["netns", "del", &ns]);
    let _ = ip(&["link", "del", &veth]);
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    ip(&["link", "set", &veth, "master", &names.bridge(c), "up"])?;
    ip(&["-n", &ns, "addr", "add", &format!("{addr}/20"), "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let etc = Path::new("/etc/netns").join(&ns);
    std::fs::create_dir_all(&etc).map_err(|e| format!("cannot create {}: {e}", etc.display()))?;
    let resolv = format!(
        "# written by strait up for pod namespace {ns}\nnameserver {dns}\nsearch {}\noptions ndots:5\n",
        search.join(" ")
    );
    std::fs::write(etc.join("resolv.conf"), resolv)
        .map_err(|e| format!("cannot write resolv.conf of {ns}: {e}"))?;
    Ok(ns)
}

/// Removes a pod's namespace (its veth goes with it) and its /etc/netns directory.
pub fn del_pod_netns(ns: &str) {
    let _ = ip(&["netns", "del", ns]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// Removes every namespace, interface and /etc/netns directory of a slot; what a crashed
/// run left behind included.
pub fn clean_slot(names: &Names) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let ns = line.split_whitespace().next().unwrap_or_default();
            if ns.starts_with(&names.netns_prefix()) {
                del_pod_netns(ns);
                removed.push(format!("netns {ns}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&names.netns_prefix()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "12: st0c0p3@if2: <...>"
            let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
            else {
                continue;
            };
            if name.starts_with(&names.link_prefix()) && ip(&["link", "del", name]).is_ok() {
                removed.push(format!("link {name}"));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap_across_slots_and_clusters() {
        for iso in [Isolation::Netns, Isolation::Loopback] {
            let mut seen = std::collections::BTreeSet::new();
            for slot in 0..SLOTS {
                for c in 0..CLUSTERS_PER_SLOT {
                    let b = Block::new(iso, slot, c);
                    assert_eq!(u32::from(b.network()) % BLOCK, 0, "{b:?} is not /20-aligned");
                    assert!(
                        seen.insert(b.network()),
                        "{iso:?} slot {slot} cluster {c} reuses {b:?}"
                    );
                }
            }
        }
        let last = Block::new(Isolation::Netns, SLOTS - 1, CLUSTERS_PER_SLOT - 1);
        assert_eq!(
            last.cidr(),
            "198.19.240.0/20",
            "netns blocks stay inside 198.18.0.0/15"
        );
        assert_eq!(Block::new(Isolation::Loopback, 1, 2).cidr(), "127.65.32.0/20");
    }

    #[test]
    fn addresses_inside_a_block_have_their_roles() {
        let b = Block::new(Isolation::Netns, 0, 1);
        assert_eq!(b.infra(), Ipv4Addr::new(198, 18, 16, 1));
        assert_eq!(b.pod(0), Ipv4Addr::new(198, 18, 16, 16));
        assert_eq!(b.pod(MAX_PODS - 1), Ipv4Addr::new(198, 18, 20, 15));
        assert_eq!(b.service_ip(0), Some(Ipv4Addr::new(198, 18, 24, 0)));
        assert_eq!(b.service_ip(1024), None);
        assert_eq!(b.mirror_cidr(), "198.18.28.0/22");
    }

    #[test]
    fn names_fit_linux_interface_names() {
        let n = Names::new(SLOTS - 1);
        let longest = n.veth(CLUSTERS_PER_SLOT - 1, MAX_PODS - 1);
        assert!(longest.len() <= 15, "{longest} is longer than IFNAMSIZ-1");
        assert!(n.bridge(0).starts_with(&n.link_prefix()));
        assert!(n.netns(2, 7).starts_with(&n.netns_prefix()));
        assert!(
            !Names::new(1)
                .netns(0, 0)
                .starts_with(&Names::new(11).netns_prefix())
        );
    }
}
