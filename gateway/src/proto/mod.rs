//! The sans-IO core of the gateway: bytes in, frames out; time in, actions out.
//!
//! Nothing here touches a socket, a clock or a runtime, so it is tested with a
//! simulated clock and fuzzed with arbitrary bytes. The async driver
//! (`crate::link`, `crate::relay`) wraps it for quinn and tokio.

/// The stream-open header: it lives in the proxy crate, which speaks it to a
/// gateway's proxy entry.
pub use strait_proxy::stream_header as header;
pub mod link;

#[cfg(test)]
mod fuzz;
