//! Outbound policies (`io.linkerd.proxy.outbound.OutboundPolicies`).
