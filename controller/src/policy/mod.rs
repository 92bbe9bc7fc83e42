//! Policy for the proxy: what may connect to a pod's ports (inbound) and how traffic to a
//! service is routed (outbound), over `io.linkerd.proxy.inbound` and
//! `io.linkerd.proxy.outbound`.

pub mod inbound;
pub mod outbound;
