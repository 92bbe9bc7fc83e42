//! Inbound server policies (`io.linkerd.proxy.inbound.InboundServerPolicies`).
