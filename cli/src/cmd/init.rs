//! `strait init`: a pod's traffic redirection to its proxy (`strait_topologies::init`),
//! with linkerd2-proxy-init's flag names.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use strait_topologies::init::{self, Cidr, InitConfig, Mode, PortRange, Runner};

use crate::exit;

/// A comma-separated flag value, parsed as a whole.
#[derive(Clone, Debug)]
pub struct List<T>(pub Vec<T>);

fn ports(s: &str) -> Result<List<PortRange>, String> {
    PortRange::parse_list("", s)
        .map(List)
        .map_err(|e| format!("expected {}", e.expected))
}

fn cidrs(s: &str) -> Result<List<Cidr>, String> {
    Cidr::parse_list("", s)
        .map(List)
        .map_err(|e| format!("expected {}", e.expected))
}

/// `--iptables-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IptablesMode {
    /// The backend that already holds rules; nft on a tie.
    Auto,
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

/// Arguments of `init` (linkerd2-proxy-init's names; `--outbound-subnets-to-ignore` is ours).
#[derive(Args, Debug)]
pub struct InitArgs {
    /// The proxy's inbound port: inbound TCP is redirected here.
    #[arg(long, default_value_t = 4143)]
    pub incoming_proxy_port: u16,
    /// The proxy's outbound port: outbound TCP is redirected here.
    #[arg(long, default_value_t = 4140)]
    pub outgoing_proxy_port: u16,
    /// The proxy's user id: its own traffic is not redirected.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// The proxy's group id, also exempted when given.
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// Inbound ports delivered to the application directly, e.g. 25,8000-8999 (4190 and
    /// 4191, the proxy's own, always are).
    #[arg(long, value_parser = ports, default_value = "", value_name = "PORTS")]
    pub inbound_ports_to_ignore: List<PortRange>,
    /// Outbound destination ports that bypass the proxy.
    #[arg(long, value_parser = ports, default_value = "", value_name = "PORTS")]
    pub outbound_ports_to_ignore: List<PortRange>,
    /// Inbound source networks delivered directly (as proxy-init's flag), e.g. 10.0.0.0/8.
    #[arg(long, value_parser = cidrs, default_value = "", value_name = "CIDRS")]
    pub subnets_to_ignore: List<Cidr>,
    /// Outbound destination networks that bypass the proxy.
    #[arg(long, value_parser = cidrs, default_value = "", value_name = "CIDRS")]
    pub outbound_subnets_to_ignore: List<Cidr>,
    /// Which iptables to use.
    #[arg(long, value_enum, default_value = "auto")]
    pub iptables_mode: IptablesMode,
    /// Apply the rules in this network namespace (a file such as /run/netns/NAME) through nsenter.
    #[arg(long, value_name = "FILE")]
    pub netns: Option<PathBuf>,
    /// Print the commands and the iptables-restore input instead of running them (reads the
    /// current table to plan against it).
    #[arg(long, alias = "simulate")]
    pub dry_run: bool,
    /// Remove the chains and jumps a run added instead of installing them.
    #[arg(long)]
    pub clean: bool,
}

/// Runs `init`.
pub fn init(a: &InitArgs) -> ExitCode {
    let config = InitConfig {
        incoming_proxy_port: a.incoming_proxy_port,
        outgoing_proxy_port: a.outgoing_proxy_port,
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid,
        inbound_ports_to_ignore: a.inbound_ports_to_ignore.0.clone(),
        outbound_ports_to_ignore: a.outbound_ports_to_ignore.0.clone(),
        subnets_to_ignore: a.subnets_to_ignore.0.clone(),
        outbound_subnets_to_ignore: a.outbound_subnets_to_ignore.0.clone(),
    };
    if let Some(ns) = &a.netns
        && !ns.exists()
    {
        eprintln!(
            "error: --netns {}: no such network namespace file (expected e.g. /run/netns/NAME)",
            ns.display()
        );
        return exit::code(exit::FAILURE);
    }
    let mode = match a.iptables_mode {
        IptablesMode::Auto => Mode::Auto,
        IptablesMode::Nft => Mode::Nft,
        IptablesMode::Legacy => Mode::Legacy,
    };
    let runner = match Runner::detect(mode, a.netns.as_deref()) {
        Ok(r) => r,
        Err(e) if a.dry_run => {
            // Planning needs no iptables: show what would run with the usual backend.
            eprintln!("note: {e}; planning for iptables-nft against an empty nat table");
            Runner {
                backend: init::Backend::Nft,
                netns: a.netns.clone(),
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let existing = runner.existing();
    let plan = if a.clean {
        match init::clean_plan(&existing) {
            Some(p) => p,
            None => {
                println!(
                    "strait init --clean: no {} / {} chains or jumps; nothing to remove",
                    init::REDIRECT_CHAIN,
                    init::OUTPUT_CHAIN
                );
                return ExitCode::SUCCESS;
            }
        }
    } else {
        init::apply_plan(&config, &existing)
    };
    if a.dry_run {
        println!(
            "# strait init --dry-run: planned against the output of: {}",
            runner.save_argv().join(" ")
        );
        print!("{}", init::shell_script(&runner, &plan));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = runner.restore(&plan) {
        eprintln!("error: {e}\nThe plan was:\n{plan}");
        return exit::code(exit::FAILURE);
    }
    let (_, restore) = runner.backend.binaries();
    let what = if a.clean {
        "removed"
    } else if existing.is_empty() {
        "installed"
    } else {
        "replaced"
    };
    println!(
        "strait init: {what} the {} and {} chains with {restore}:",
        init::REDIRECT_CHAIN,
        init::OUTPUT_CHAIN
    );
    print!("{plan}");
    ExitCode::SUCCESS
}
