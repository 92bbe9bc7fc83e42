use std::collections::HashMap;
use std::time::SystemTime;

use super::*;

fn anchors_pem() -> String {
    let (anchors, _) = strait_identity::generate(&Default::default(), SystemTime::now()).unwrap();
    anchors.to_pem()
}

fn base() -> HashMap<&'static str, String> {
    HashMap::from([
        (
            env::DESTINATION_SVC_ADDR,
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086".to_string(),
        ),
        (env::IDENTITY_SVC_ADDR, "127.0.0.1:8080".to_string()),
        (env::IDENTITY_TRUST_ANCHORS, anchors_pem()),
        (
            env::IDENTITY_LOCAL_NAME,
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local".to_string(),
        ),
        (
            env::IDENTITY_TOKEN_FILE,
            "/var/run/secrets/tokens/linkerd-identity-token".to_string(),
        ),
    ])
}

fn parse(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
    Config::from_source(|k| vars.get(k).cloned(), SystemTime::now())
}

#[test]
fn linkerd_defaults() {
    let c = parse(&base()).unwrap();
    assert_eq!(c.capture, Capture::Transparent);
    assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().unwrap());
    assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().unwrap());
    assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().unwrap());
    assert_eq!(c.app_ip, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(c.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.peer_inbound_port, 4143);
    assert!(c.request_timeout.is_none());
    assert_eq!(c.cores, 1);
    assert_eq!(c.outbound_idle_timeout, Duration::from_secs(5));
    assert!(!c.ingress);
    assert!(c.require_identity_ports.is_empty());
    assert_eq!(c.inbound_accept_keepalive, None);
    assert_eq!(c.inbound_connect_timeout, c.connect_timeout);
    let mut v = base();
    v.insert(env::INGRESS_MODE, "true".into());
    v.insert(env::INBOUND_ACCEPT_KEEPALIVE, "10000ms".into());
    v.insert(env::OUTBOUND_CONNECT_KEEPALIVE, "10000ms".into());
    v.insert(env::INBOUND_CONNECT_TIMEOUT, "100ms".into());
    v.insert(env::INBOUND_PORTS_REQUIRE_IDENTITY, "8080,9000-9001".into());
    let i = parse(&v).unwrap();
    assert!(i.ingress);
    assert_eq!(i.inbound_accept_keepalive, Some(Duration::from_secs(10)));
    assert_eq!(i.outbound_connect_keepalive, Some(Duration::from_secs(10)));
    assert_eq!(i.inbound_connect_timeout, Duration::from_millis(100));
    assert!(i.require_identity_ports.contains(9001) && !i.require_identity_ports.contains(8081));
    // Linkerd's private ranges when the cluster networks are not given.
    let private = |ip: [u8; 4]| c.cluster_networks.iter().any(|n| n.contains(IpAddr::from(ip)));
    assert!(private([10, 1, 2, 3]) && private([192, 168, 0, 1]) && private([100, 64, 0, 1]));
    assert!(!private([198, 18, 0, 1]));
}

#[test]
fn cluster_networks_are_read_for_cluster_default_policies() {
    let mut v = base();
    v.insert(env::POLICY_CLUSTER_NETWORKS, "198.18.0.0/20, 127.0.0.1".into());
    v.insert(env::INBOUND_DEFAULT_POLICY, "cluster-unauthenticated".into());
    let c = parse(&v).unwrap();
    assert_eq!(c.cluster_networks.len(), 2);
    assert!(c.cluster_networks[0].contains(IpAddr::from([198, 18, 15, 255])));
    assert!(!c.cluster_networks[0].contains(IpAddr::from([198, 18, 16, 0])));
    assert!(c.cluster_networks[1].contains(IpAddr::from([127, 0, 0, 1])));
    assert!(!c.cluster_networks[1].contains(IpAddr::from([127, 0, 0, 2])));
}

#[test]
fn explicit_mode_defaults_the_app_to_the_pod_address() {
    let mut v = base();
    v.insert(env::CAPTURE, "explicit".into());
    v.insert(env::INBOUND_LISTEN_ADDR, "127.0.3.4:4143".into());
    v.insert(
        env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
        "25, 3306-3307".into(),
    );
    v.insert(env::INBOUND_DETECT_TIMEOUT, "250ms".into());
    // What Linkerd's injector writes when a pod turns the detect timeout off.
    v.insert(env::OUTBOUND_DETECT_TIMEOUT, "365d".into());
    let c = parse(&v).unwrap();
    assert_eq!(c.capture, Capture::Explicit);
    assert_eq!(c.app_ip, IpAddr::from([127, 0, 3, 4]));
    assert!(c.inbound_opaque_ports.contains(25));
    assert!(c.inbound_opaque_ports.contains(3307));
    assert!(!c.inbound_opaque_ports.contains(3308));
    assert_eq!(c.detect_timeout, Duration::from_millis(250));
    assert_eq!(c.outbound_detect_timeout, Duration::from_secs(365 * 86_400));
}

#[test]
fn each_bad_value_names_its_variable_and_what_was_expected() {
    let cases: &[(&str, &str, &str)] = &[
        (env::DESTINATION_SVC_ADDR, "linkerd-dst", "host:port"),
        (env::DESTINATION_SVC_ADDR, "dst:99999", "1-65535"),
        (env::IDENTITY_SVC_ADDR, ":8080", "no host"),
        (env::POLICY_SVC_ADDR, "policy", "host:port"),
        (env::IDENTITY_TRUST_ANCHORS, "not pem", "trust anchors"),
        (env::IDENTITY_LOCAL_NAME, "web", "serviceaccount.identity.linkerd"),
        (env::INBOUND_LISTEN_ADDR, "0.0.0.0", "IP:port"),
        (env::OUTBOUND_LISTEN_ADDR, "localhost:4140", "IP:port"),
        (env::ADMIN_LISTEN_ADDR, "x", "IP:port"),
        (
            env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            "25,http",
            "port number",
        ),
        (
            env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            "30-20",
            "ends before",
        ),
        (env::INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION, "0", "port number"),
        (env::INBOUND_DETECT_TIMEOUT, "10 parsecs", "duration"),
        (env::INBOUND_DETECT_TIMEOUT, "10w", "expected ms, s, m, h or d"),
        (env::OUTBOUND_DETECT_TIMEOUT, "99999999999999999d", "too long"),
        (env::INBOUND_DETECT_TIMEOUT, "18446744073709551615ms", "too long"),
        (env::OUTBOUND_CONNECT_TIMEOUT, "soon", "duration"),
        (env::OUTBOUND_DISCOVERY_IDLE_TIMEOUT, "idle", "duration"),
        (env::SHUTDOWN_GRACE_PERIOD, "-1s", "duration"),
        (env::LOG, "info,linkerd=chatty", "log level"),
        (env::LOG_FORMAT, "xml", "expected plain or json"),
        (env::CAPTURE, "magic", "transparent or explicit"),
        (env::APP_IP, "pod", "IP address"),
        (env::APP_IP, "0.0.0.0", "application's IP"),
        (env::PEER_INBOUND_PORT, "0", "1-65535"),
        (env::REQUEST_TIMEOUT, "fast", "duration"),
        (env::MAX_CONNECTIONS, "0", "positive number"),
        (env::MAX_HEADER_BYTES, "100", "minimum of 8192"),
        (env::HEADER_READ_TIMEOUT, "x", "duration"),
        (env::CORES, "two", "positive number"),
        (env::SHUTDOWN_ENDPOINT_ENABLED, "yes", "expected true or false"),
        (env::INGRESS_MODE, "on", "expected true or false"),
        (env::IDENTITY_DISABLED, "disabled", "identity must be enabled"),
        (env::INBOUND_ACCEPT_KEEPALIVE, "often", "duration"),
        (env::OUTBOUND_CONNECT_KEEPALIVE, "10 minutes", "duration"),
        (env::INBOUND_CONNECT_TIMEOUT, "-1s", "duration"),
        (
            env::INBOUND_PORTS_REQUIRE_IDENTITY,
            "8080,http",
            "expected ports and ranges",
        ),
        (env::METRICS_RETAIN_IDLE, "forever", "duration"),
        (
            env::POLICY_CLUSTER_NETWORKS,
            "10.0.0.0/8,pods",
            "not an IP address",
        ),
        (env::POLICY_CLUSTER_NETWORKS, "10.0.0.0/33", "expected 0-32"),
        (env::POLICY_CLUSTER_NETWORKS, "fd00::/129", "expected 0-128"),
        (
            env::DESTINATION_SVC_NAME,
            "linkerd-dst.linkerd.svc.cluster.local",
            "expected the identity the service at LINKERD2_PROXY_DESTINATION_SVC_ADDR presents",
        ),
        (
            env::IDENTITY_SVC_NAME,
            "linkerd-identity..serviceaccount.identity.linkerd.cluster.local",
            "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            env::POLICY_SVC_NAME,
            "https://linkerd-destination",
            "expected the identity the service at LINKERD2_PROXY_POLICY_SVC_ADDR presents",
        ),
    ];
    for (var, value, expected) in cases {
        let mut v = base();
        v.insert(var, value.to_string());
        let e = parse(&v).expect_err(&format!("{var}={value} must be refused"));
        assert_eq!(e.var, *var, "{e}");
        assert!(e.to_string().contains(expected), "{var}={value}: {e}");
    }
}

#[test]
fn required_variables_are_named_when_missing() {
    for var in [
        env::DESTINATION_SVC_ADDR,
        env::IDENTITY_SVC_ADDR,
        env::IDENTITY_TRUST_ANCHORS,
        env::IDENTITY_LOCAL_NAME,
        env::IDENTITY_TOKEN_FILE,
    ] {
        let mut v = base();
        v.remove(var);
        let e = parse(&v).unwrap_err();
        assert_eq!(e.var, var);
        assert!(e.problem.starts_with("not set"), "{e}");
    }
}

#[test]
fn listeners_must_not_collide() {
    let mut v = base();
    v.insert(env::ADMIN_LISTEN_ADDR, "127.0.0.1:4140".into());
    let e = parse(&v).unwrap_err();
    assert!(e.problem.contains("must differ"), "{e}");
}

const DST_ID: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const ID_ID: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";

#[test]
fn svc_names_turn_on_tls_to_the_control_plane() {
    // Linkerd's injected environment: every service by name, off loopback.
    let mut v = base();
    v.insert(
        env::IDENTITY_SVC_ADDR,
        "linkerd-identity-headless.linkerd.svc.cluster.local.:8080".into(),
    );
    v.insert(
        env::POLICY_SVC_ADDR,
        "linkerd-policy.linkerd.svc.cluster.local.:8090".into(),
    );
    v.insert(env::DESTINATION_SVC_NAME, DST_ID.into());
    v.insert(env::POLICY_SVC_NAME, DST_ID.into());
    v.insert(env::IDENTITY_SVC_NAME, ID_ID.into());
    let c = parse(&v).unwrap();
    assert_eq!(
        c.destination_tls.as_ref().map(ToString::to_string).as_deref(),
        Some(DST_ID)
    );
    assert_eq!(
        c.policy_tls.as_ref().map(ToString::to_string).as_deref(),
        Some(DST_ID)
    );
    assert_eq!(
        c.identity_tls.as_ref().map(ToString::to_string).as_deref(),
        Some(ID_ID)
    );

    // Without names: plaintext, as before.
    let c = parse(&base()).unwrap();
    assert_eq!(
        (c.destination_tls, c.identity_tls, c.policy_tls),
        (None, None, None)
    );

    // A name without its address is a mistake, named.
    let mut v = base();
    v.insert(env::POLICY_SVC_NAME, DST_ID.into());
    let e = parse(&v).unwrap_err();
    assert_eq!(e.var, env::POLICY_SVC_ADDR);
    assert!(e.problem.contains(env::POLICY_SVC_NAME), "{e}");
}

#[test]
fn loopback_control_planes_are_plaintext_only_in_transparent_mode() {
    let id: IdentityName = DST_ID.parse().unwrap();
    let cases = [
        // Transparent (Linkerd): loopback is the controller's own pod.
        (Capture::Transparent, "127.0.0.1:8086", None),
        (Capture::Transparent, "localhost.:8086", None),
        (Capture::Transparent, "[::1]:8086", None),
        (Capture::Transparent, "10.0.0.5:8086", Some(id.clone())),
        (
            Capture::Transparent,
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
            Some(id.clone()),
        ),
        // Explicit: every pod has its own 127.x address, so loopback is the pod network.
        (Capture::Explicit, "127.0.4.1:8086", Some(id.clone())),
        (Capture::Explicit, "10.0.0.5:8086", Some(id.clone())),
    ];
    for (capture, addr, want) in cases {
        assert_eq!(control_tls(capture, addr, Some(&id)), want, "{capture:?} {addr}");
        assert_eq!(
            control_tls(capture, addr, None),
            None,
            "{capture:?} {addr} without a name"
        );
    }
    assert!(is_loopback("127.9.9.9:1") && is_loopback("LOCALHOST:1") && !is_loopback("localhost.example:1"));
}
