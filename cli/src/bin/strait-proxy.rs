//! `strait-proxy`: the sidecar alone, configured from Linkerd's proxy environment
//! variables. `strait proxy` runs this binary when it is installed beside `strait`; it
//! holds only the proxy's code, so the sidecar's resident memory stays small.

use std::collections::HashMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let vars: HashMap<String, String> = std::env::vars().collect();
    match strait_proxy::process::run(&vars, &|_| None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
