//! `strait version`.

use std::process::ExitCode;

use clap::Args;

use crate::Global;

/// Arguments of `version`.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Print only the client version.
    #[arg(long)]
    pub client: bool,
    /// Print only the version string.
    #[arg(long)]
    pub short: bool,
}

/// Runs `version`.
pub fn version(g: &Global, args: &VersionArgs) -> ExitCode {
    let v = env!("CARGO_PKG_VERSION");
    if args.short {
        println!("{v}");
    } else {
        println!("Client version: strait-{v}");
    }
    if !args.client && !args.short {
        println!("Server version: {}", server_version(g));
    }
    ExitCode::SUCCESS
}

/// The version of the local cluster's running controller, or why there is none.
fn server_version(g: &Global) -> String {
    let Some(dir) = &g.state_dir else {
        return "unavailable (no cluster selected: pass --state-dir DIR of a running `strait controller`)"
            .into();
    };
    match super::open_local(g) {
        Ok(super::LocalCluster::Api(client)) => {
            let rt = super::runtime();
            match rt.block_on(client.request(hyper::Method::GET, "/v1/version", Vec::new())) {
                Ok(v) => format!("strait-{}", v["version"].as_str().unwrap_or("unknown")),
                Err(e) => format!("unavailable ({e})"),
            }
        }
        Ok(super::LocalCluster::Direct(_)) => {
            format!(
                "unavailable (no controller runs on {}; start one with `strait --state-dir {0} controller`)",
                dir.display()
            )
        }
        Err(_) => "unavailable (see the error above)".into(),
    }
}
