//! `strait proxy`: the sidecar. Configured like Linkerd's proxy, from its environment
//! variables; each flag below overrides the variable it names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use strait_proxy::config::env;

use crate::exit;

/// Arguments of `proxy`. Every flag is optional: Linkerd's injected environment is the
/// primary source.
#[derive(Args, Debug, Default)]
pub struct ProxyArgs {
    /// How traffic reaches the proxy: transparent (iptables REDIRECT) or explicit (loopback pods).
    #[arg(long)]
    pub capture: Option<String>,
    /// Destination service, host:port (LINKERD2_PROXY_DESTINATION_SVC_ADDR).
    #[arg(long)]
    pub destination_addr: Option<String>,
    /// Identity service, host:port (LINKERD2_PROXY_IDENTITY_SVC_ADDR).
    #[arg(long)]
    pub identity_addr: Option<String>,
    /// Policy service, host:port (LINKERD2_PROXY_POLICY_SVC_ADDR).
    #[arg(long)]
    pub policy_addr: Option<String>,
    /// The identity the Destination service presents: TLS to it (LINKERD2_PROXY_DESTINATION_SVC_NAME).
    #[arg(long)]
    pub destination_svc_name: Option<String>,
    /// The identity the Identity service presents: TLS to it (LINKERD2_PROXY_IDENTITY_SVC_NAME).
    #[arg(long)]
    pub identity_svc_name: Option<String>,
    /// The identity the policy service presents: TLS to it (LINKERD2_PROXY_POLICY_SVC_NAME).
    #[arg(long)]
    pub policy_svc_name: Option<String>,
    /// This proxy's identity (LINKERD2_PROXY_IDENTITY_LOCAL_NAME).
    #[arg(long)]
    pub identity_name: Option<String>,
    /// The pod's token file (LINKERD2_PROXY_IDENTITY_TOKEN_FILE).
    #[arg(long, value_name = "FILE")]
    pub identity_token_file: Option<PathBuf>,
    /// A PEM file of trust anchors (instead of LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS).
    #[arg(long, value_name = "FILE")]
    pub trust_anchors_file: Option<PathBuf>,
    /// Inbound listen address (LINKERD2_PROXY_INBOUND_LISTEN_ADDR).
    #[arg(long)]
    pub inbound_addr: Option<String>,
    /// Outbound listen address (LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR).
    #[arg(long)]
    pub outbound_addr: Option<String>,
    /// Admin listen address (LINKERD2_PROXY_ADMIN_LISTEN_ADDR).
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// The application's IP (STRAIT_PROXY_APP_IP; explicit mode defaults to the inbound IP).
    #[arg(long)]
    pub app_ip: Option<String>,
    /// Log level in Linkerd's syntax, e.g. warn,linkerd=info (LINKERD2_PROXY_LOG).
    #[arg(long)]
    pub proxy_log: Option<String>,
}

/// Which flag set which variable, for error messages.
type FlagsUsed = HashMap<&'static str, &'static str>;

/// The environment with the flags applied, and which flags were used.
fn source(args: &ProxyArgs) -> Result<(HashMap<String, String>, FlagsUsed), String> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let mut flags = HashMap::new();
    let mut set = |var: &'static str, flag: &'static str, v: Option<String>| {
        if let Some(v) = v {
            vars.insert(var.to_string(), v);
            flags.insert(var, flag);
        }
    };
    set(env::CAPTURE, "--capture", args.capture.clone());
    set(
        env::DESTINATION_SVC_ADDR,
        "--destination-addr",
        args.destination_addr.clone(),
    );
    set(
        env::IDENTITY_SVC_ADDR,
        "--identity-addr",
        args.identity_addr.clone(),
    );
    set(env::POLICY_SVC_ADDR, "--policy-addr", args.policy_addr.clone());
    set(
        env::DESTINATION_SVC_NAME,
        "--destination-svc-name",
        args.destination_svc_name.clone(),
    );
    set(
        env::IDENTITY_SVC_NAME,
        "--identity-svc-name",
        args.identity_svc_name.clone(),
    );
    set(
        env::POLICY_SVC_NAME,
        "--policy-svc-name",
        args.policy_svc_name.clone(),
    );
    set(
        env::IDENTITY_LOCAL_NAME,
        "--identity-name",
        args.identity_name.clone(),
    );
    set(
        env::IDENTITY_TOKEN_FILE,
        "--identity-token-file",
        args.identity_token_file.as_ref().map(|p| p.display().to_string()),
    );
    set(
        env::INBOUND_LISTEN_ADDR,
        "--inbound-addr",
        args.inbound_addr.clone(),
    );
    set(
        env::OUTBOUND_LISTEN_ADDR,
        "--outbound-addr",
        args.outbound_addr.clone(),
    );
    set(env::ADMIN_LISTEN_ADDR, "--admin-addr", args.admin_addr.clone());
    set(env::APP_IP, "--app-ip", args.app_ip.clone());
    set(env::LOG, "--proxy-log", args.proxy_log.clone());
    if let Some(f) = &args.trust_anchors_file {
        let pem =
            std::fs::read_to_string(f).map_err(|e| format!("--trust-anchors-file {}: {e}", f.display()))?;
        set(env::IDENTITY_TRUST_ANCHORS, "--trust-anchors-file", Some(pem));
    }
    Ok((vars, flags))
}

/// Runs `proxy`: validates the configuration (naming the flag behind a bad value), then
/// becomes the lean `strait-proxy` binary installed beside this one (same process, same
/// pid), or runs the proxy in this process when there is none.
pub fn proxy(args: &ProxyArgs) -> ExitCode {
    let (vars, flags) = match source(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let flag_of = |var: &str| flags.get(var).copied();
    if let Err(e) = strait_proxy::process::config(&vars, &flag_of) {
        eprintln!("error: {e}");
        return exit::code(exit::FAILURE);
    }
    if let Some(lean) = lean_binary() {
        use std::os::unix::process::CommandExt;
        // Only returns on failure.
        let e = std::process::Command::new(&lean).env_clear().envs(&vars).exec();
        eprintln!(
            "warning: cannot run {}: {e}; running the proxy in this process",
            lean.display()
        );
    }
    match strait_proxy::process::run(&vars, &flag_of) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            exit::code(exit::FAILURE)
        }
    }
}

/// `strait-proxy` beside this executable, unless `STRAIT_PROXY_IN_PROCESS` is set.
fn lean_binary() -> Option<PathBuf> {
    if std::env::var_os("STRAIT_PROXY_IN_PROCESS").is_some() {
        return None;
    }
    let me = std::env::current_exe().ok()?;
    let lean = me.with_file_name(strait_proxy::process::LEAN_BINARY);
    (lean.is_file() && lean != me).then_some(lean)
}
