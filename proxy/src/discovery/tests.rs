use linkerd2_proxy_api::net::TcpAddress;

use super::*;

fn addr(ip: [u8; 4], port: u16) -> TcpAddress {
    TcpAddress {
        ip: Some(IpAddr::from(ip).into()),
        port: u32::from(port),
    }
}

fn meshed(ip: [u8; 4], port: u16, pod: &str) -> pb::WeightedAddr {
    use pb::tls_identity::{DnsLikeIdentity, Strategy};
    pb::WeightedAddr {
        addr: Some(addr(ip, port)),
        weight: 10000,
        metric_labels: [("pod".to_string(), pod.to_string())].into(),
        tls_identity: Some(pb::TlsIdentity {
            strategy: Some(Strategy::DnsLikeIdentity(DnsLikeIdentity {
                name: "myapp.production.serviceaccount.identity.linkerd.cluster.local".into(),
            })),
            server_name: None,
        }),
        protocol_hint: Some(pb::ProtocolHint {
            protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
            opaque_transport: None,
        }),
        ..Default::default()
    }
}

fn add(addrs: Vec<pb::WeightedAddr>) -> pb::Update {
    pb::Update {
        update: Some(U::Add(pb::WeightedAddrSet {
            addrs,
            metric_labels: [("namespace".to_string(), "production".to_string())].into(),
        })),
    }
}

fn eps(r: &Resolution) -> Vec<SocketAddr> {
    match r {
        Resolution::Endpoints(e) => e.keys().copied().collect(),
        other => panic!("expected endpoints, got {other:?}"),
    }
}

#[test]
fn updates_add_remove_and_empty() {
    let r = apply(&Resolution::Pending, add(vec![meshed([10, 0, 0, 1], 8080, "a")]));
    let Resolution::Endpoints(e) = &r else { panic!() };
    let a = &e[&"10.0.0.1:8080".parse().unwrap()];
    assert!(a.h2);
    assert_eq!(a.identity.as_ref().unwrap().namespace(), "production");
    assert_eq!(a.labels["pod"], "a");
    assert_eq!(
        a.labels["namespace"], "production",
        "set labels apply to each endpoint"
    );
    let r = apply(&r, add(vec![meshed([10, 0, 0, 2], 8080, "b")]));
    assert_eq!(eps(&r).len(), 2);
    let r = apply(
        &r,
        pb::Update {
            update: Some(U::Remove(pb::AddrSet {
                addrs: vec![addr([10, 0, 0, 1], 8080)],
            })),
        },
    );
    assert_eq!(eps(&r), vec!["10.0.0.2:8080".parse::<SocketAddr>().unwrap()]);
    let empty = apply(
        &r,
        pb::Update {
            update: Some(U::NoEndpoints(pb::NoEndpoints { exists: true })),
        },
    );
    assert!(eps(&empty).is_empty());
    let unknown = apply(
        &r,
        pb::Update {
            update: Some(U::NoEndpoints(pb::NoEndpoints { exists: false })),
        },
    );
    assert_eq!(unknown, Resolution::Unknown);
}

#[test]
fn opaque_transport_and_unmeshed_endpoints() {
    let mut a = meshed([10, 0, 0, 3], 3306, "db");
    a.protocol_hint = Some(pb::ProtocolHint {
        protocol: Some(pb::protocol_hint::Protocol::Opaque(pb::protocol_hint::Opaque {})),
        opaque_transport: Some(pb::protocol_hint::OpaqueTransport { inbound_port: 4143 }),
    });
    let plain = pb::WeightedAddr {
        addr: Some(addr([10, 0, 0, 4], 80)),
        weight: 0,
        ..Default::default()
    };
    let r = apply(&Resolution::Pending, add(vec![a, plain]));
    let Resolution::Endpoints(e) = &r else { panic!() };
    let db = &e[&"10.0.0.3:3306".parse().unwrap()];
    assert_eq!(db.opaque_transport_port, Some(4143));
    assert!(!db.h2);
    let p = &e[&"10.0.0.4:80".parse().unwrap()];
    assert!(p.identity.is_none());
    assert_eq!(p.weight, 1, "weights are at least 1");
}

#[test]
fn profiles_keep_weighted_overrides() {
    let p = profile(pb::DestinationProfile {
        dst_overrides: vec![
            pb::WeightedDst {
                authority: "a.ns.svc.cluster.local:80".into(),
                weight: 900,
                ..Default::default()
            },
            pb::WeightedDst {
                authority: "b.ns.svc.cluster.local:80".into(),
                weight: 0,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    assert_eq!(
        p.dst_overrides,
        vec![("a.ns.svc.cluster.local:80".to_string(), 900)]
    );
}

#[test]
fn gateway_entry_endpoints_carry_their_strt_target() {
    let entry = |marker: &str, authority: Option<&str>| {
        let mut a = meshed([127, 0, 0, 9], 4180, "");
        a.metric_labels = [(GATEWAY_ENTRY_LABEL.to_string(), marker.to_string())].into();
        a.authority_override = authority.map(|a| pb::AuthorityOverride {
            authority_override: a.to_string(),
        });
        a
    };
    let r = apply(
        &Resolution::Pending,
        add(vec![entry(
            GATEWAY_ENTRY_V1,
            Some("myapp.production.svc.cluster.local:80"),
        )]),
    );
    let Resolution::Endpoints(e) = r else {
        panic!("endpoints expected")
    };
    let ep = e.values().next().unwrap();
    let target = ep.gateway.as_ref().expect("a gateway target");
    assert_eq!(target.to_string(), "myapp.production.svc.cluster.local:80");
    assert_eq!(target.identity, ep.identity);
    assert!(!ep.labels.contains_key(GATEWAY_ENTRY_LABEL), "{:?}", ep.labels);
    // Unknown marker versions and unusable overrides are left out; no marker is a plain
    // endpoint even with an override (Linkerd's remote gateway).
    for bad in [
        entry("strt-v9", Some("myapp.production.svc.cluster.local:80")),
        entry(GATEWAY_ENTRY_V1, None),
        entry(GATEWAY_ENTRY_V1, Some("myapp.production.svc.cluster.local")),
        entry(GATEWAY_ENTRY_V1, Some("Bad_Name:80")),
    ] {
        assert_eq!(eps(&apply(&Resolution::Pending, add(vec![bad]))), vec![]);
    }
    let mut plain = meshed([127, 0, 0, 9], 4143, "gw");
    plain.authority_override = Some(pb::AuthorityOverride {
        authority_override: "myapp.production.svc.cluster.local:80".into(),
    });
    let Resolution::Endpoints(e) = apply(&Resolution::Pending, add(vec![plain])) else {
        panic!("endpoints expected")
    };
    let e = e.values().next().unwrap();
    assert!(e.gateway.is_none());
    // A Linkerd gateway endpoint: its override names the service for the header.
    assert_eq!(
        e.authority_override,
        Some(("myapp.production.svc.cluster.local".to_string(), 80))
    );
}

#[test]
fn remote_endpoints_behind_an_entry_dial_it_and_name_themselves() {
    let remote = |ip: [u8; 4], via: &str| {
        let mut a = meshed(ip, 80, "");
        a.metric_labels = [
            (GATEWAY_ENTRY_LABEL.to_string(), GATEWAY_ENTRY_V1.to_string()),
            (GATEWAY_VIA_LABEL.to_string(), via.to_string()),
        ]
        .into();
        a.authority_override = Some(pb::AuthorityOverride {
            authority_override: "myapp.production.svc.cluster.local:80".into(),
        });
        a
    };
    let r = apply(
        &Resolution::Pending,
        add(vec![
            remote([10, 42, 0, 7], "127.0.0.9:4180"),
            remote([10, 42, 0, 8], "127.0.0.9:4180"),
        ]),
    );
    let Resolution::Endpoints(e) = &r else {
        panic!("endpoints expected")
    };
    assert_eq!(e.len(), 2, "one endpoint per remote address: {e:?}");
    for (addr, ep) in e.iter() {
        assert_eq!(ep.via, Some("127.0.0.9:4180".parse().unwrap()));
        let target = ep.gateway.as_ref().expect("a gateway target");
        assert_eq!(target.endpoint, Some(addr.ip()));
        assert!(!ep.labels.contains_key(GATEWAY_VIA_LABEL), "{:?}", ep.labels);
    }
    // Removing one by its address leaves the other (Linkerd's remove-by-address).
    let r = apply(
        &r,
        pb::Update {
            update: Some(U::Remove(pb::AddrSet {
                addrs: vec![addr([10, 42, 0, 7], 80)],
            })),
        },
    );
    assert_eq!(eps(&r).len(), 1);
    // A via that is not an address, or on an endpoint with no entry marker, is left out.
    let mut bare = meshed([10, 42, 0, 9], 80, "");
    bare.metric_labels = [(GATEWAY_VIA_LABEL.to_string(), "127.0.0.9:4180".to_string())].into();
    for bad in [remote([10, 42, 0, 9], "entry:4180"), bare] {
        assert_eq!(eps(&apply(&Resolution::Pending, add(vec![bad]))), vec![]);
    }
}

#[test]
fn an_entry_of_every_link_names_the_link_and_a_bad_link_is_left_out() {
    let at_entry = |ip: [u8; 4], link: Option<&str>, marked: bool| {
        let mut a = meshed(ip, 80, "");
        let mut labels = vec![(GATEWAY_VIA_LABEL.to_string(), "127.0.0.9:4180".to_string())];
        if marked {
            labels.push((GATEWAY_ENTRY_LABEL.to_string(), GATEWAY_ENTRY_V1.to_string()));
        }
        if let Some(l) = link {
            labels.push((GATEWAY_LINK_LABEL.to_string(), l.to_string()));
        }
        a.metric_labels = labels.into_iter().collect();
        a.authority_override = Some(pb::AuthorityOverride {
            authority_override: "myapp.production.svc.cluster.local:80".into(),
        });
        a
    };
    let endpoints = |r: Resolution| match r {
        Resolution::Endpoints(e) => e.values().cloned().collect::<Vec<_>>(),
        other => panic!("expected endpoints, got {other:?}"),
    };
    let e = endpoints(apply(
        &Resolution::Pending,
        add(vec![at_entry([10, 42, 0, 7], Some("east"), true)]),
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].link.as_ref().map(|l| l.as_str()), Some("east"));
    assert!(!e[0].labels.contains_key(GATEWAY_LINK_LABEL), "{:?}", e[0].labels);
    // Without the label: no link, as before.
    let e = endpoints(apply(
        &Resolution::Pending,
        add(vec![at_entry([10, 42, 0, 7], None, true)]),
    ));
    assert_eq!(e[0].link, None);
    // A link that is not a DNS label, or on an endpoint with no entry marker: left out.
    for bad in [
        at_entry([10, 42, 0, 8], Some("East.west"), true),
        at_entry([10, 42, 0, 8], Some("east"), false),
    ] {
        assert_eq!(eps(&apply(&Resolution::Pending, add(vec![bad]))), vec![]);
    }
}

#[test]
fn the_gateway_entry_marker_is_the_one_the_controller_sends() {
    use strait_controller::discovery::model;
    assert_eq!(GATEWAY_ENTRY_LABEL, model::GATEWAY_ENTRY_LABEL);
    assert_eq!(GATEWAY_ENTRY_V1, model::GATEWAY_ENTRY_V1);
    assert_eq!(GATEWAY_VIA_LABEL, model::GATEWAY_VIA_LABEL);
    assert_eq!(GATEWAY_LINK_LABEL, model::GATEWAY_LINK_LABEL);
    assert_eq!(STRAIT_CONTEXT_VERSION, model::STRAIT_CONTEXT_V3);
    assert_eq!(
        model::Caller::from_context_token(&context_token("production", "web")),
        model::Caller::Strait
    );
}

#[test]
fn the_context_token_marks_a_strait_proxy() {
    assert_eq!(
        context_token("production", "web"),
        r#"{"ns":"production","nodeName":"","pod":"web","strait":"v3"}"#
    );
}

/// Linkerd's discovery allow-list: names under a suffix, addresses inside a network;
/// unset allows everything, set and empty allows nothing.
#[test]
fn discovery_asks_only_about_allowed_targets() {
    let injected = Allow::parse(Some("svc.cluster.local."), Some("10.0.0.0/8,fd00::/8")).unwrap();
    for (target, asked) in [
        ("web.emojivoto.svc.cluster.local:80", true),
        ("WEB.emojivoto.svc.cluster.local.:80", true),
        ("web.emojivoto.svc.cluster.local", true),
        ("svc.cluster.local:80", true),
        ("web.emojivoto.notsvc.cluster.local:80", false),
        ("api.example.com:443", false),
        ("evilsvc.cluster.local:80", false),
        ("10.96.0.7:80", true),
        ("[fd00::7]:80", true),
        ("8.8.8.8:53", false),
        ("[2001:db8::1]:443", false),
    ] {
        assert_eq!(injected.allows(target), asked, "{target}");
    }
    let every_name = Allow::parse(Some("svc.cluster.local.,."), None).unwrap();
    assert!(every_name.allows("api.example.com:443") && every_name.allows("1.2.3.4:80"));
    let none = Allow::parse(Some(""), Some("")).unwrap();
    assert!(!none.allows("web.emojivoto.svc.cluster.local:80") && !none.allows("10.0.0.1:80"));
    let unset = Allow::default();
    assert!(unset.allows("api.example.com:443") && unset.allows("8.8.8.8:53"));
    assert!(Allow::parse(None, Some("10.0.0.0/8,pods")).is_err());
}
