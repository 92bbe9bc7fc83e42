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
pub fn version(_g: &Global, args: &VersionArgs) -> ExitCode {
    let v = env!("CARGO_PKG_VERSION");
    if args.short {
        println!("{v}");
    } else {
        println!("Client version: strait-{v}");
    }
    if !args.client && !args.short {
        // A control plane to ask exists once `strait controller` and `strait up` do.
        println!(
            "Server version: unavailable (no control plane is reachable: `strait controller` arrives with issue #3)"
        );
    }
    ExitCode::SUCCESS
}
