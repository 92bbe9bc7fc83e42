//! Commands whose capability is not in this build: say so, do nothing, exit non-zero.

use std::process::ExitCode;

use crate::exit;

/// For a command that a numbered open issue delivers.
pub fn not_available(command: &str, issue: u32, capability: &str) -> ExitCode {
    eprintln!(
        "strait {command}: not available in this build: {capability} arrives with issue #{issue}. Nothing was done.\n\
         Available now: `strait apply --dry-run=client -f FILE` validates manifests, `strait install [--crds]` prints the\n\
         control plane, `strait inject [--manual]` adds the proxy to manifests, and `strait --state-dir DIR apply|get|delete`\n\
         work on a local cluster's state."
    );
    exit::code(exit::NOT_AVAILABLE)
}

/// For a command of a later phase that has no issue yet.
pub fn not_planned_yet(command: &str, capability: &str) -> ExitCode {
    eprintln!(
        "strait {command}: not available in this build: {capability} comes after the foundation, control plane, proxy,\n\
         multi-cluster and traffic-policy work. Nothing was done."
    );
    exit::code(exit::NOT_AVAILABLE)
}
