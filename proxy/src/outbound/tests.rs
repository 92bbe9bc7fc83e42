use std::collections::BTreeMap;

use super::*;

fn ep(meshed: bool, h2: bool, opaque: Option<u16>) -> Endpoint {
    Endpoint {
        addr: "127.0.9.2:8080".parse().unwrap(),
        weight: 1,
        identity: meshed.then(|| {
            "myapp.production.serviceaccount.identity.linkerd.cluster.local"
                .parse()
                .unwrap()
        }),
        h2,
        opaque_transport_port: opaque,
        labels: BTreeMap::new(),
        gateway: None,
        via: None,
        link: None,
        authority_override: None,
    }
}

#[test]
fn connect_plans() {
    use Capture::*;
    use Wire::*;
    let header = |port, protocol| {
        Some(TransportHeader {
            port,
            name: None,
            protocol,
        })
    };
    let h2 = Some(crate::transport_header::SessionProtocol::Http2);
    // (capture, endpoint, app protocol) → (dial port, tls, header, wire)
    let cases = [
        (
            Explicit,
            ep(true, true, None),
            Http1,
            (4143, true, header(8080, h2), Http2),
        ),
        (
            Explicit,
            ep(true, true, None),
            Http2,
            (4143, true, header(8080, h2), Http2),
        ),
        (
            Explicit,
            ep(true, false, Some(4999)),
            Opaque,
            (4999, true, header(8080, None), Opaque),
        ),
        (
            Explicit,
            ep(true, true, None),
            Opaque,
            (4143, true, header(8080, None), Opaque),
        ),
        (
            Explicit,
            ep(false, false, None),
            Http1,
            (8080, false, None, Http1),
        ),
        (
            Explicit,
            ep(false, false, None),
            Http2,
            (8080, false, None, Http2),
        ),
        (
            Transparent,
            ep(true, true, None),
            Http1,
            (8080, true, None, Http2),
        ),
        // HTTP to a port the server pod marks opaque: tunnelled, naming its session
        // protocol, never sent as bytes (an h2 app's request stays h2).
        (
            Transparent,
            ep(true, false, Some(4143)),
            Http1,
            (4143, true, header(8080, h2), Http2),
        ),
        (
            Transparent,
            ep(true, false, Some(4143)),
            Http2,
            (4143, true, header(8080, h2), Http2),
        ),
        (
            Transparent,
            ep(true, false, Some(4143)),
            Opaque,
            (4143, true, header(8080, None), Opaque),
        ),
        (
            Transparent,
            ep(true, false, None),
            Http1,
            (8080, true, None, Http1),
        ),
        (
            Transparent,
            ep(false, false, None),
            Opaque,
            (8080, false, None, Opaque),
        ),
    ];
    for (capture, e, app, (port, tls, hdr, wire)) in cases {
        let p = plan(capture, &e, app, 4143);
        assert_eq!(p.addr.port(), port, "{capture:?} {e:?} {app:?}");
        assert_eq!(p.tls.is_some(), tls, "{capture:?} {e:?} {app:?}");
        assert_eq!(p.header, hdr, "{capture:?} {e:?} {app:?}");
        assert_eq!(p.wire, wire, "{capture:?} {e:?} {app:?}");
    }
}

/// A Linkerd multicluster gateway's endpoint (opaque transport to the gateway port, the
/// remote service in `authority_override`): the header names that service and its port,
/// as Linkerd's gateway requires, in both capture modes and for every app protocol.
#[test]
fn linkerd_gateway_endpoints_name_the_remote_service_in_the_header() {
    let gw = Endpoint {
        addr: "198.18.16.1:4143".parse().unwrap(),
        authority_override: Some(("myapp.production.svc.cluster.local".into(), 8080)),
        ..ep(true, false, Some(4143))
    };
    for capture in [Capture::Explicit, Capture::Transparent] {
        for app in [Wire::Http1, Wire::Http2, Wire::Opaque] {
            let p = plan(capture, &gw, app, 4143);
            assert_eq!(p.addr, "198.18.16.1:4143".parse().unwrap(), "{capture:?} {app:?}");
            let h = p.header.expect("a transport header");
            assert_eq!(h.name.as_deref(), Some("myapp.production.svc.cluster.local"));
            assert_eq!(h.port, 8080, "{capture:?} {app:?}");
            assert!(p.tls.is_some());
        }
    }
}

#[test]
fn gateway_entry_plans_open_a_stream_then_mtls_with_a_header_in_both_modes() {
    use crate::stream_header::{Authority, Protocol, Target};
    let remote = Target {
        authority: Authority::new("myapp.production.svc.cluster.local").unwrap(),
        port: 80,
        protocol: Protocol::Opaque,
        identity: ep(true, true, None).identity,
        endpoint: None,
    };
    let entry = Endpoint {
        addr: "127.0.0.9:4180".parse().unwrap(),
        gateway: Some(remote.clone()),
        ..ep(true, true, None)
    };
    let h2 = Some(crate::transport_header::SessionProtocol::Http2);
    // (capture, app protocol) → (wire, session protocol, strt protocol)
    let cases = [
        (Capture::Explicit, Wire::Http1, Wire::Http2, h2, Protocol::Http2),
        (
            Capture::Transparent,
            Wire::Http1,
            Wire::Http2,
            h2,
            Protocol::Http2,
        ),
        (
            Capture::Transparent,
            Wire::Http2,
            Wire::Http2,
            h2,
            Protocol::Http2,
        ),
        (
            Capture::Explicit,
            Wire::Opaque,
            Wire::Opaque,
            None,
            Protocol::Opaque,
        ),
    ];
    for (capture, app, wire, session, strt) in cases {
        let p = plan(capture, &entry, app, 4143);
        assert_eq!(p.addr, entry.addr, "the entry itself, not an inbound port");
        assert_eq!(p.tls, remote.identity, "the remote workload's identity");
        assert_eq!(
            p.header,
            Some(TransportHeader {
                port: 80,
                name: None,
                protocol: session
            })
        );
        assert_eq!(p.wire, wire);
        let target = p.gateway.expect("a strt target").target;
        assert_eq!((target.protocol, target.port), (strt, 80));
        assert_eq!(target.authority, remote.authority);
    }
    // A remote endpoint of its own: dial the entry it names; the target names it.
    let remote_ep = Endpoint {
        addr: "10.42.0.7:80".parse().unwrap(),
        via: Some(entry.addr),
        gateway: Some(Target {
            endpoint: Some("10.42.0.7".parse().unwrap()),
            ..remote.clone()
        }),
        ..ep(true, true, None)
    };
    for capture in [Capture::Explicit, Capture::Transparent] {
        let p = plan(capture, &remote_ep, Wire::Http1, 4143);
        assert_eq!(p.addr, entry.addr, "the entry, not the remote address");
        let target = p.gateway.expect("a strt target").target;
        assert_eq!(target.endpoint, Some("10.42.0.7".parse().unwrap()));
    }
}

#[test]
fn explicit_targets_come_from_the_request() {
    let req = |uri: &str, host: Option<&str>| {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    };
    assert_eq!(
        request_target(&req("http://MyApp.production.svc.cluster.local:8080/x", None)).unwrap(),
        "myapp.production.svc.cluster.local:8080"
    );
    assert_eq!(
        request_target(&req("/x", Some("myapp.production.svc.cluster.local"))).unwrap(),
        "myapp.production.svc.cluster.local:80"
    );
    assert_eq!(
        request_target(&req("/x", Some("127.0.0.5:81"))).unwrap(),
        "127.0.0.5:81"
    );
    assert_eq!(request_target(&req("/x", Some("[::1]"))).unwrap(), "[::1]:80");
    let e = request_target(&req("/x", None)).unwrap_err();
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn ingress_targets_come_from_the_override_header() {
    let req = |v: &[u8]| {
        Request::builder()
            .uri("/x")
            .header("host", "shop.example.com")
            .header(DST_OVERRIDE_HEADER, http::HeaderValue::from_bytes(v).unwrap())
            .body(())
            .unwrap()
    };
    let named = |v: &[u8]| dst_override(&req(v)).map(|n| n.map(|n| target_of(&n)));
    assert_eq!(
        named(b"Web.Emojivoto.svc.cluster.local:8080").unwrap().as_deref(),
        Some("web.emojivoto.svc.cluster.local:8080")
    );
    assert_eq!(
        named(b" web.emojivoto.svc.cluster.local ").unwrap().as_deref(),
        Some("web.emojivoto.svc.cluster.local:80"),
        "port 80 when the header names none, as Linkerd's"
    );
    // Anything but a name is refused (400), addresses included: an ingress forwarding
    // its clients' headers must not relay to the addresses they name.
    for bad in [
        &b""[..],
        b"web svc:80",
        b"http://web:80/",
        b":80",
        b"web:port",
        b"user@web:80",
        b"10.42.0.7:9000",
        b"0.0.0.0:4140",
        b"[::ffff:127.0.0.1]:4140",
        b"[fd00::7]:9000",
        b"\xff",
    ] {
        let e = named(bad).expect_err(&String::from_utf8_lossy(bad));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(
            e.to_string().contains("l5d-dst-override must name a service"),
            "{e}"
        );
    }
    let plain = Request::builder().uri("/x").body(()).unwrap();
    assert!(matches!(dst_override(&plain), Ok(None)));
}

#[test]
fn endpoint_labels_carry_identity_and_dst_labels() {
    let mut e = ep(true, true, None);
    e.labels.insert("pod".into(), "myapp-1".into());
    e.labels.insert("deployment".into(), "myapp".into());
    e.labels.insert("namespace".into(), "production".into());
    let l = endpoint_labels(
        "myapp.production.svc.cluster.local:80",
        "myapp.production.svc.cluster.local:80",
        &e,
        None,
    );
    for want in [
        "direction=\"outbound\"",
        "authority=\"myapp.production.svc.cluster.local:80\"",
        "target_addr=\"127.0.9.2:8080\"",
        "tls=\"true\"",
        "server_id=\"myapp.production.serviceaccount.identity.linkerd.cluster.local\"",
        "dst_service=\"myapp\"",
        "dst_pod=\"myapp-1\"",
        "dst_deployment=\"myapp\"",
        "dst_namespace=\"production\"",
    ] {
        assert!(l.contains(want), "{want} in {l}");
    }
    // A TrafficSplit's backend: the apex names the series, the backend's authority its
    // Service when the controller's labels do not.
    let leaf = endpoint_labels(
        "myapp.production.svc.cluster.local:80",
        "myapp-v2.production.svc.cluster.local:80",
        &ep(true, true, None),
        None,
    );
    for want in [
        "authority=\"myapp.production.svc.cluster.local:80\"",
        "dst_service=\"myapp-v2\"",
        "dst_namespace=\"production\"",
    ] {
        assert!(leaf.contains(want), "{want} in {leaf}");
    }
    let plain = endpoint_labels("x:80", "x:80", &ep(false, false, None), Some("dst"));
    assert!(plain.contains("tls=\"no_identity\""), "{plain}");
    assert!(plain.contains("peer=\"dst\""), "{plain}");
}

/// An outbound proxy whose discovery goes nowhere (nothing here resolves).
fn idle_outbound(idle_timeout: Duration) -> Arc<Outbound> {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let (anchors, _) = strait_identity::generate(
        &strait_identity::TrustDomain::default(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    Outbound::new(
        OutboundConfig {
            capture: Capture::Explicit,
            detect_timeout: Duration::from_secs(1),
            request_timeout: None,
            peer_inbound_port: 4143,
            limits: Default::default(),
            own_addrs: Vec::new(),
            idle_timeout,
            ingress: false,
        },
        crate::discovery::Resolver::new(channel, "production", "web-1"),
        Arc::new(Connector::new(
            &strait_identity::CertStore::new(),
            &anchors,
            Duration::from_secs(1),
        )),
        Arc::new(Registry::default()),
    )
}

#[tokio::test]
async fn a_policy_backend_outlives_the_gaps_between_its_requests_then_goes_when_idle() {
    let o = idle_outbound(Duration::from_millis(400));
    // A request's hold on a policy backend ends with the request.
    drop(o.concrete(
        "myapp.production.svc.cluster.local:80",
        "myapp-v2.production.svc.cluster.local:80",
    ));
    o.evict_idle();
    assert_eq!(o.held().1, 1, "kept: asked for within the idle timeout");
    tokio::time::sleep(Duration::from_millis(250)).await;
    drop(o.concrete(
        "myapp.production.svc.cluster.local:80",
        "myapp-v2.production.svc.cluster.local:80",
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    o.evict_idle();
    assert_eq!(o.held().1, 1, "each use starts the idle timeout again");
    tokio::time::sleep(Duration::from_millis(450)).await;
    o.evict_idle();
    assert_eq!(o.held().1, 0, "gone once idle for the timeout");
}
