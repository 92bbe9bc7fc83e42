//! One module per command family.

pub mod apply;
pub mod controller;
pub mod get;
pub mod install;
pub mod pending;
pub mod version;

use std::process::ExitCode;

use strait_api::store::local::LocalStore;

use crate::Global;
use crate::exit;

/// Opens the cluster state a command works on: `--state-dir`, or explains what to pass.
pub fn open_store(g: &Global) -> Result<LocalStore, ExitCode> {
    if let Some(cluster) = &g.cluster {
        eprintln!(
            "error: --cluster {cluster}: talking to a running local cluster needs `strait up`, which arrives with issue #6.\n\
             To work on a cluster's state directly, pass --state-dir DIR instead."
        );
        return Err(exit::code(exit::NOT_AVAILABLE));
    }
    let Some(dir) = &g.state_dir else {
        eprintln!(
            "error: no cluster selected.\n\
             Pass --state-dir DIR (or set STRAIT_STATE_DIR) to use a local cluster state directory; it is created if missing.\n\
             To only validate manifests, use `strait apply --dry-run=client -f FILE`."
        );
        return Err(exit::code(exit::FAILURE));
    };
    LocalStore::open(dir).map_err(|e| {
        eprintln!("error: {e}");
        exit::code(exit::FAILURE)
    })
}

/// A current-thread runtime for commands that talk to a store.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}
