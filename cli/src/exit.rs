//! Exit codes, so scripts can tell failures apart.

use std::process::ExitCode;

/// The input was wrong or the operation failed; the message says what to fix.
pub const FAILURE: u8 = 1;
/// The command exists in the tree but its capability is not in this build yet.
pub const NOT_AVAILABLE: u8 = 3;

/// Exit with a code.
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
