//! The policy benchmark's routes, checked without timing anything: the in-process
//! controller the benchmark runs accepts all ten HTTPRoutes of the scenario and serves
//! them, in order, as `myapp`'s outbound policy — the policy `strait proxy` follows in
//! `bench policy`. (The benchmark itself checks that the traffic takes the tenth.)

use std::time::Duration;

use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;
use linkerd2_proxy_api::outbound::{
    self as pb, outbound_policies_client::OutboundPoliciesClient, traffic_spec::Target,
};
use strait_tests::bench::proxy::Mesh;
use strait_tests::bench::proxy::policy::{route_names, routes_yaml};

fn route_names_of(p: &pb::OutboundPolicy) -> Vec<String> {
    use pb::proxy_protocol::Kind;
    let Some(Kind::Detect(d)) = p.protocol.as_ref().and_then(|p| p.kind.as_ref()) else {
        return Vec::new();
    };
    d.http1
        .as_ref()
        .map(|h| {
            h.routes
                .iter()
                .filter_map(|r| match r.metadata.as_ref()?.kind.as_ref()? {
                    MetaKind::Resource(r) => Some(r.name.clone()),
                    MetaKind::Default(d) => Some(format!("default:{d}")),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_ten_routes_become_myapps_outbound_policy_and_go_away_again() {
    let mesh = Mesh::start().expect("the control plane starts");
    let addr = mesh.bound.policy;
    let mut client = mesh
        .block_on(OutboundPoliciesClient::connect(format!("http://{addr}")))
        .expect("the policy service answers");
    let mut stream = mesh
        .block_on(client.watch(pb::TrafficSpec {
            source_workload: "production:web".into(),
            target: Some(Target::Authority("myapp.production.svc.cluster.local:80".into())),
        }))
        .expect("a policy for myapp")
        .into_inner();
    let mut next = || {
        mesh.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an update within 10 s")
                .expect("the stream stays open")
                .expect("a message")
        })
    };
    assert_eq!(route_names_of(&next()), vec!["default:http".to_string()]);
    mesh.apply(&routes_yaml()).expect("the store takes the routes");
    let mut names = Vec::new();
    for _ in 0..20 {
        names = route_names_of(&next());
        if names.len() == 10 {
            break;
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    let mut want = route_names();
    want.sort();
    assert_eq!(sorted, want, "every route of the scenario is served");
    mesh.delete_routes(&route_names()).expect("the routes go");
    for _ in 0..20 {
        names = route_names_of(&next());
        if names == ["default:http"] {
            break;
        }
    }
    assert_eq!(names, vec!["default:http".to_string()]);
}
