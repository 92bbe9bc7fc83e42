//! `strait init`: a pod's traffic redirection to its proxy, with the iptables rules of
//! Linkerd's proxy-init, so a stock Linkerd proxy and `strait proxy` see the same capture.
//!
//! In the `nat` table, two chains with proxy-init's names:
//! - `PROXY_INIT_REDIRECT` (jumped to from `PREROUTING`): inbound TCP goes to the proxy's
//!   inbound port (4143), except the proxy's own admin and tap ports (4191, 4190), the
//!   `--inbound-ports-to-ignore`, and sources in `--subnets-to-ignore`;
//! - `PROXY_INIT_OUTPUT` (jumped to from `OUTPUT`): outbound TCP goes to the proxy's
//!   outbound port (4140), except what the proxy itself sends (`--proxy-uid`, and
//!   `--proxy-gid` if given), anything leaving through `lo`, the
//!   `--outbound-ports-to-ignore`, and destinations in `--outbound-subnets-to-ignore`.
//!
//! The rules are data ([`rules`]) and a run is a plan over the table as it is now
//! ([`apply_plan`], [`clean_plan`] take `iptables-save -t nat` output and return one
//! `iptables-restore --noflush` input): re-running replaces the chains and their jumps
//! in one atomic commit, and `--clean` removes exactly what a run added. [`Runner`] does the
//! I/O; which iptables (nft or legacy) is chosen like kube-proxy and Calico do it: the
//! backend that already holds rules wins, nft on a tie ([`choose_backend`]). IPv4 only.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// proxy-init's inbound chain.
pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
/// proxy-init's outbound chain.
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";
/// The proxy's admin (4191) and tap (4190) ports: never redirected inbound.
pub const PROXY_OWN_PORTS: [u16; 2] = [4190, 4191];
/// `multiport` takes at most 15 ports per rule (a range counts twice).
const MULTIPORT_MAX: usize = 15;

/// A bad flag value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: expected {expected}, found {found:?}")]
pub struct BadFlag {
    /// The flag.
    pub flag: &'static str,
    /// What was expected.
    pub expected: &'static str,
    /// What was given.
    pub found: String,
}

/// A port or an inclusive range of ports (`4190` or `4000-4999`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn one(p: u16) -> Self {
        Self { first: p, last: p }
    }

    /// Parses a comma-separated list given as `flag` (empty text is an empty list).
    pub fn parse_list(flag: &'static str, text: &str) -> Result<Vec<Self>, BadFlag> {
        let bad = || BadFlag {
            flag,
            expected: "comma-separated ports or ranges from 1 to 65535, e.g. 25,4000-4999",
            found: text.to_string(),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| match item.split_once('-') {
                Some((a, b)) => {
                    let (first, last) = (port(a)?, port(b)?);
                    if first > last {
                        return Err(bad());
                    }
                    Ok(Self { first, last })
                }
                None => port(item).map(Self::one),
            })
            .collect()
    }

    fn weight(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }
}

impl fmt::Display for PortRange {
    /// iptables' multiport syntax: `4190` or `4000:4999`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// An IPv4 network (`10.0.0.0/8`; a bare address is a /32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses a comma-separated list given as `flag`.
    pub fn parse_list(flag: &'static str, text: &str) -> Result<Vec<Self>, BadFlag> {
        let bad = || BadFlag {
            flag,
            expected: "comma-separated IPv4 networks, e.g. 10.0.0.0/8,192.168.1.1",
            found: text.to_string(),
        };
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (a, p) = item.split_once('/').unwrap_or((item, "32"));
                let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
                let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                Ok(Self {
                    addr: Ipv4Addr::from(u32::from(addr) & mask),
                    prefix,
                })
            })
            .collect()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What to redirect where; defaults are Linkerd's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitConfig {
    /// The proxy's inbound port.
    pub incoming_proxy_port: u16,
    /// The proxy's outbound port.
    pub outgoing_proxy_port: u16,
    /// The proxy's user: what it sends is not redirected.
    pub proxy_uid: u32,
    /// The proxy's group, if it should be matched too.
    pub proxy_gid: Option<u32>,
    /// Inbound ports delivered to the application directly (4190 and 4191 always are).
    pub inbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound destination ports not sent through the proxy.
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// Inbound sources delivered directly (proxy-init's `--subnets-to-ignore`).
    pub subnets_to_ignore: Vec<Cidr>,
    /// Outbound destinations not sent through the proxy.
    pub outbound_subnets_to_ignore: Vec<Cidr>,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            incoming_proxy_port: 4143,
            outgoing_proxy_port: 4140,
            proxy_uid: 2102,
            proxy_gid: None,
            inbound_ports_to_ignore: Vec::new(),
            outbound_ports_to_ignore: Vec::new(),
            subnets_to_ignore: Vec::new(),
            outbound_subnets_to_ignore: Vec::new(),
        }
    }
}

/// One rule of the `nat` table, in `iptables-save` form without the `-A CHAIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: &'static str,
    /// Its match and target.
    pub spec: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.spec)
    }
}

fn comment(c: &str) -> String {
    format!("-m comment --comment \"proxy-init/{c}\"")
}

/// Splits ports into `multiport` lists of at most 15 ports each.
fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks = Vec::new();
    let (mut cur, mut weight) = (Vec::new(), 0);
    for p in ports {
        if weight + p.weight() > MULTIPORT_MAX {
            chunks.push(std::mem::take(&mut cur).join(","));
            weight = 0;
        }
        cur.push(p.to_string());
        weight += p.weight();
    }
    if !cur.is_empty() {
        chunks.push(cur.join(","));
    }
    chunks
}

/// Every rule of both chains plus the two jumps, in order.
pub fn rules(c: &InitConfig) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut push = |chain, spec: String| out.push(Rule { chain, spec });

    // Inbound.
    let mut inbound: Vec<PortRange> = PROXY_OWN_PORTS.iter().copied().map(PortRange::one).collect();
    for p in &c.inbound_ports_to_ignore {
        if !inbound.contains(p) {
            inbound.push(*p);
        }
    }
    for ports in multiport_chunks(&inbound) {
        push(
            REDIRECT_CHAIN,
            format!(
                "-p tcp -m multiport --dports {ports} {} -j RETURN",
                comment(&format!("ignore-port-{}", ports.replace(':', "-")))
            ),
        );
    }
    for s in &c.subnets_to_ignore {
        push(
            REDIRECT_CHAIN,
            format!("-s {s} {} -j RETURN", comment(&format!("ignore-subnet-{s}"))),
        );
    }
    push(
        REDIRECT_CHAIN,
        format!(
            "-p tcp {} -j REDIRECT --to-ports {}",
            comment("redirect-all-incoming-to-proxy-port"),
            c.incoming_proxy_port
        ),
    );
    push(
        "PREROUTING",
        format!("{} -j {REDIRECT_CHAIN}", comment("install-proxy-init-prerouting")),
    );

    // Outbound. The proxy's own connections to its pod's address (a meshed pod calling
    // a service it is itself an endpoint of) leave through `lo` and never see
    // PREROUTING: send them to the inbound port as proxy-init does.
    push(
        OUTPUT_CHAIN,
        format!(
            "-o lo ! -d 127.0.0.1/32 -m owner --uid-owner {} {} -j {REDIRECT_CHAIN}",
            c.proxy_uid,
            comment("redirect-non-loopback-local-traffic")
        ),
    );
    push(
        OUTPUT_CHAIN,
        format!(
            "-m owner --uid-owner {} {} -j RETURN",
            c.proxy_uid,
            comment("ignore-proxy-user-id")
        ),
    );
    if let Some(gid) = c.proxy_gid {
        push(
            OUTPUT_CHAIN,
            format!(
                "-m owner --gid-owner {gid} {} -j RETURN",
                comment("ignore-proxy-group-id")
            ),
        );
    }
    push(
        OUTPUT_CHAIN,
        format!("-o lo {} -j RETURN", comment("ignore-loopback")),
    );
    for ports in multiport_chunks(&c.outbound_ports_to_ignore) {
        push(
            OUTPUT_CHAIN,
            format!(
                "-p tcp -m multiport --dports {ports} {} -j RETURN",
                comment(&format!("ignore-port-{}", ports.replace(':', "-")))
            ),
        );
    }
    for s in &c.outbound_subnets_to_ignore {
        push(
            OUTPUT_CHAIN,
            format!("-d {s} {} -j RETURN", comment(&format!("ignore-subnet-{s}"))),
        );
    }
    push(
        OUTPUT_CHAIN,
        format!(
            "-p tcp {} -j REDIRECT --to-ports {}",
            comment("redirect-all-outgoing-to-proxy-port"),
            c.outgoing_proxy_port
        ),
    );
    push(
        "OUTPUT",
        format!("{} -j {OUTPUT_CHAIN}", comment("install-proxy-init-output")),
    );
    out
}

/// What the `nat` table holds of ours now, read from `iptables-save -t nat` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    /// Our chains that exist.
    pub chains: Vec<&'static str>,
    /// Rules of built-in chains that jump to ours, as saved (`-A OUTPUT … -j PROXY_INIT_OUTPUT`).
    pub jumps: Vec<String>,
}

impl Existing {
    /// Reads the relevant parts of a `nat` table dump (other tables are ignored).
    pub fn parse(save: &str) -> Self {
        let mut e = Self::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
                continue;
            }
            if !in_nat {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                for ours in [REDIRECT_CHAIN, OUTPUT_CHAIN] {
                    if name == ours && !e.chains.contains(&ours) {
                        e.chains.push(ours);
                    }
                }
                continue;
            }
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let jumps_to_ours = tokens
                .windows(2)
                .any(|w| w[0] == "-j" && (w[1] == REDIRECT_CHAIN || w[1] == OUTPUT_CHAIN));
            let from_builtin =
                matches!(tokens.get(..2), Some(["-A", c]) if *c != REDIRECT_CHAIN && *c != OUTPUT_CHAIN);
            if jumps_to_ours && from_builtin {
                e.jumps.push(line.to_string());
            }
        }
        e
    }

    /// Whether anything of ours is present.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

fn delete_jumps(e: &Existing, out: &mut String) {
    for j in &e.jumps {
        // `-A CHAIN spec` as saved → `-D CHAIN spec`: deletes by exact specification.
        out.push_str("-D");
        out.push_str(&j[2..]);
        out.push('\n');
    }
}

/// The `iptables-restore --noflush` input that installs the rules, replacing any earlier
/// run's chains and jumps in the same commit.
pub fn apply_plan(c: &InitConfig, existing: &Existing) -> String {
    let mut out = String::from("*nat\n");
    // Declaring a chain creates it, or flushes it if it exists.
    for chain in [REDIRECT_CHAIN, OUTPUT_CHAIN] {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    delete_jumps(existing, &mut out);
    for r in rules(c) {
        out.push_str(&format!("{r}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that removes everything a run added; `None`
/// when nothing is there.
pub fn clean_plan(existing: &Existing) -> Option<String> {
    if existing.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for chain in &existing.chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    delete_jumps(existing, &mut out);
    for chain in &existing.chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Which iptables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft-*` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy-*` (x_tables).
    Legacy,
    /// Plain `iptables-*`, whatever the system links it to.
    Plain,
}

impl Backend {
    /// `(save, restore)` binary names.
    pub fn binaries(self) -> (&'static str, &'static str) {
        match self {
            Backend::Nft => ("iptables-nft-save", "iptables-nft-restore"),
            Backend::Legacy => ("iptables-legacy-save", "iptables-legacy-restore"),
            Backend::Plain => ("iptables-save", "iptables-restore"),
        }
    }
}

/// `--iptables-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Detect (see [`choose_backend`]).
    Auto,
    /// proxy-init's `nft`.
    Nft,
    /// proxy-init's `legacy`.
    Legacy,
}

/// Picks a backend from how many rules each holds (`None`: not installed): the one
/// already in use wins, so our rules sit beside the system's; nft on a tie (Debian's
/// default since 11); plain `iptables` if neither variant is installed.
pub fn choose_backend(nft_rules: Option<usize>, legacy_rules: Option<usize>, plain: bool) -> Option<Backend> {
    match (nft_rules, legacy_rules) {
        (Some(n), Some(l)) if l > n => Some(Backend::Legacy),
        (Some(_), _) => Some(Backend::Nft),
        (None, Some(_)) => Some(Backend::Legacy),
        (None, None) => plain.then_some(Backend::Plain),
    }
}

/// Why `strait init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No usable iptables.
    #[error(
        "no iptables found ({wanted}); install Debian's `iptables` package (it provides iptables-nft and iptables-legacy)"
    )]
    NoIptables {
        /// What was looked for.
        wanted: String,
    },
    /// A command could not start.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// Runs iptables for one network namespace (this process's, or `netns` through `nsenter`).
#[derive(Clone, Debug)]
pub struct Runner {
    /// The chosen backend.
    pub backend: Backend,
    /// The namespace file (e.g. `/run/netns/NAME`), if not this process's.
    pub netns: Option<PathBuf>,
}

impl Runner {
    /// Chooses the backend for `mode`, looking at the rules each holds in `netns`.
    pub fn detect(mode: Mode, netns: Option<&Path>) -> Result<Self, InitError> {
        let mut probe = Runner {
            backend: Backend::Plain,
            netns: netns.map(Path::to_path_buf),
        };
        let count = |b: Backend, probe: &mut Runner| -> Option<usize> {
            let (save, _) = b.binaries();
            find_in_path(save)?;
            probe.backend = b;
            // Not readable (e.g. no such table yet) still means installed, with 0 rules.
            Some(
                probe
                    .save()
                    .map_or(0, |s| s.lines().filter(|l| l.starts_with("-A")).count()),
            )
        };
        let backend = match mode {
            Mode::Nft => find_in_path("iptables-nft-restore").map(|_| Backend::Nft),
            Mode::Legacy => find_in_path("iptables-legacy-restore").map(|_| Backend::Legacy),
            Mode::Auto => {
                let nft = count(Backend::Nft, &mut probe);
                let legacy = count(Backend::Legacy, &mut probe);
                choose_backend(nft, legacy, find_in_path("iptables-restore").is_some())
            }
        };
        let backend = backend.ok_or_else(|| InitError::NoIptables {
            wanted: match mode {
                Mode::Nft => "iptables-nft-restore".into(),
                Mode::Legacy => "iptables-legacy-restore".into(),
                Mode::Auto => "iptables-nft-restore, iptables-legacy-restore or iptables-restore".into(),
            },
        })?;
        Ok(Self {
            backend,
            netns: netns.map(Path::to_path_buf),
        })
    }

    /// The argv of a command run in the namespace.
    pub fn argv(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = &self.netns {
            v.push("nsenter".to_string());
            v.push(format!("--net={}", ns.display()));
            v.push("--".to_string());
        }
        v.push(program.to_string());
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// The save command's argv (`iptables-save -t nat`).
    pub fn save_argv(&self) -> Vec<String> {
        self.argv(self.backend.binaries().0, &["-t", "nat"])
    }

    /// The restore command's argv (`iptables-restore --noflush`).
    pub fn restore_argv(&self) -> Vec<String> {
        self.argv(self.backend.binaries().1, &["--noflush"])
    }

    fn run(&self, argv: &[String], input: Option<&str>) -> Result<String, InitError> {
        use std::io::Write;
        let command = argv.join(" ");
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| InitError::Spawn {
                command: command.clone(),
                source,
            })?;
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("piped");
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| InitError::Spawn {
                    command: command.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| InitError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(InitError::Failed {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `nat` table now (`iptables-save -t nat`).
    pub fn save(&self) -> Result<String, InitError> {
        self.run(&self.save_argv(), None)
    }

    /// What of ours is there now; an unreadable `nat` table (none created yet) holds nothing.
    pub fn existing(&self) -> Existing {
        self.save().map(|s| Existing::parse(&s)).unwrap_or_default()
    }

    /// Feeds a plan to `iptables-restore --noflush` (one atomic commit).
    pub fn restore(&self, plan: &str) -> Result<(), InitError> {
        self.run(&self.restore_argv(), Some(plan)).map(drop)
    }
}

/// The first `name` on `$PATH` (and the sbin directories, which root's PATH may lack).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A plan as the shell commands that carry it out (what `--dry-run` prints).
pub fn shell_script(runner: &Runner, plan: &str) -> String {
    format!("{} <<'EOF'\n{plan}EOF\n", runner.restore_argv().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerds_default_rules() {
        let text: Vec<String> = rules(&InitConfig::default())
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -m comment --comment \"proxy-init/ignore-port-4190,4191\" -j RETURN",
                "-A PROXY_INIT_REDIRECT -p tcp -m comment --comment \"proxy-init/redirect-all-incoming-to-proxy-port\" -j REDIRECT --to-ports 4143",
                "-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT",
                "-A PROXY_INIT_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 2102 -m comment --comment \"proxy-init/redirect-non-loopback-local-traffic\" -j PROXY_INIT_REDIRECT",
                "-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment \"proxy-init/ignore-proxy-user-id\" -j RETURN",
                "-A PROXY_INIT_OUTPUT -o lo -m comment --comment \"proxy-init/ignore-loopback\" -j RETURN",
                "-A PROXY_INIT_OUTPUT -p tcp -m comment --comment \"proxy-init/redirect-all-outgoing-to-proxy-port\" -j REDIRECT --to-ports 4140",
                "-A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT",
            ]
        );
    }

    #[test]
    fn ignored_ports_and_subnets_come_before_the_redirects() {
        let c = InitConfig {
            proxy_uid: 1000,
            proxy_gid: Some(1001),
            inbound_ports_to_ignore: PortRange::parse_list("--inbound-ports-to-ignore", "25, 4191,8000-8999")
                .unwrap(),
            outbound_ports_to_ignore: PortRange::parse_list("--outbound-ports-to-ignore", "443").unwrap(),
            subnets_to_ignore: Cidr::parse_list("--subnets-to-ignore", "10.1.2.3/8").unwrap(),
            outbound_subnets_to_ignore: Cidr::parse_list("--outbound-subnets-to-ignore", "198.18.0.9")
                .unwrap(),
            ..InitConfig::default()
        };
        let specs: Vec<String> = rules(&c).iter().map(|r| r.to_string()).collect();
        let find = |needle: &str| {
            specs
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {specs:#?}"))
        };
        // 4191 is not repeated; ranges use iptables' colon.
        assert!(
            specs[0].contains("--dports 4190,4191,25,8000:8999 "),
            "{}",
            specs[0]
        );
        assert!(find("-s 10.0.0.0/8 ") < find("--to-ports 4143"));
        assert!(find("--gid-owner 1001") < find("--to-ports 4140"));
        assert!(find("--uid-owner 1000") < find("--to-ports 4140"));
        assert!(find("--dports 443 ") < find("--to-ports 4140"));
        assert!(find("-d 198.18.0.9/32 ") < find("--to-ports 4140"));
    }

    #[test]
    fn long_port_lists_are_split_for_multiport() {
        let ports: Vec<PortRange> = (1..=20)
            .map(PortRange::one)
            .chain([PortRange {
                first: 100,
                last: 200,
            }])
            .collect();
        let chunks = multiport_chunks(&ports);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].split(',').count(), 15);
        assert_eq!(chunks[1], "16,17,18,19,20,100:200");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for bad in ["0", "70000", "9-3", "http", "1,,x"] {
            let e = PortRange::parse_list("--inbound-ports-to-ignore", bad).unwrap_err();
            assert_eq!(e.flag, "--inbound-ports-to-ignore");
            assert!(e.to_string().contains("expected comma-separated ports"), "{e}");
        }
        assert_eq!(
            PortRange::parse_list("--outbound-ports-to-ignore", "").unwrap(),
            []
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "fd00::/8"] {
            let e = Cidr::parse_list("--subnets-to-ignore", bad).unwrap_err();
            assert!(e.to_string().starts_with("--subnets-to-ignore: expected"), "{e}");
        }
    }

    const SAVED: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Nov 25 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PROXY_INIT_OUTPUT - [0:0]
:PROXY_INIT_REDIRECT - [0:0]
-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT
-A OUTPUT -d 10.0.0.1/32 -j DNAT --to-destination 10.0.0.2
-A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT
-A PROXY_INIT_OUTPUT -o lo -m comment --comment \"proxy-init/ignore-loopback\" -j RETURN
-A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143
COMMIT
";

    #[test]
    fn rerunning_replaces_chains_and_jumps_in_one_commit() {
        let e = Existing::parse(SAVED);
        assert_eq!(e.chains, [OUTPUT_CHAIN, REDIRECT_CHAIN]);
        assert_eq!(e.jumps.len(), 2);
        let plan = apply_plan(&InitConfig::default(), &e);
        let lines: Vec<&str> = plan.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":PROXY_INIT_REDIRECT - [0:0]");
        assert_eq!(lines[2], ":PROXY_INIT_OUTPUT - [0:0]");
        assert_eq!(
            lines[3],
            "-D PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT"
        );
        assert_eq!(
            lines[4],
            "-D OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT"
        );
        // The unrelated DNAT rule is untouched.
        assert!(!plan.contains("DNAT"));
        assert_eq!(plan.matches("-A PREROUTING").count(), 1);
        assert_eq!(plan.matches("-A OUTPUT").count(), 1);
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        // A first run deletes nothing.
        assert!(!apply_plan(&InitConfig::default(), &Existing::default()).contains("-D "));
    }

    #[test]
    fn clean_removes_only_what_a_run_added() {
        let plan = clean_plan(&Existing::parse(SAVED)).unwrap();
        assert_eq!(
            plan,
            "*nat\n:PROXY_INIT_OUTPUT - [0:0]\n:PROXY_INIT_REDIRECT - [0:0]\n\
             -D PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT\n\
             -D OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT\n\
             -X PROXY_INIT_OUTPUT\n-X PROXY_INIT_REDIRECT\nCOMMIT\n"
        );
        let untouched = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DNAT --to-destination 1.2.3.4\nCOMMIT\n";
        assert_eq!(clean_plan(&Existing::parse(untouched)), None);
        // Chains in other tables are not ours to touch.
        assert!(Existing::parse("*filter\n:PROXY_INIT_OUTPUT - [0:0]\nCOMMIT\n").is_empty());
    }

    #[test]
    fn backend_choice_follows_existing_rules() {
        assert_eq!(choose_backend(Some(0), Some(0), true), Some(Backend::Nft));
        assert_eq!(choose_backend(Some(3), Some(10), true), Some(Backend::Legacy));
        assert_eq!(choose_backend(Some(10), Some(3), true), Some(Backend::Nft));
        assert_eq!(choose_backend(None, Some(0), true), Some(Backend::Legacy));
        assert_eq!(choose_backend(None, None, true), Some(Backend::Plain));
        assert_eq!(choose_backend(None, None, false), None);
    }

    #[test]
    fn commands_enter_the_namespace_with_nsenter() {
        let r = Runner {
            backend: Backend::Nft,
            netns: Some("/run/netns/pod".into()),
        };
        assert_eq!(
            r.restore_argv(),
            [
                "nsenter",
                "--net=/run/netns/pod",
                "--",
                "iptables-nft-restore",
                "--noflush"
            ]
        );
        let here = Runner {
            backend: Backend::Legacy,
            netns: None,
        };
        assert_eq!(here.save_argv(), ["iptables-legacy-save", "-t", "nat"]);
        assert_eq!(
            shell_script(&here, "*nat\nCOMMIT\n"),
            "iptables-legacy-restore --noflush <<'EOF'\n*nat\nCOMMIT\nEOF\n"
        );
    }
}
