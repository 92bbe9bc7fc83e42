//! ServiceProfiles and TrafficSplits as the proxy's `DestinationProfile`: routes with
//! request conditions, response classes, retryability and timeouts; the retry budget; and
//! weighted destination overrides.

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::http_types::HttpMethod;
use strait_api::mesh::profile::{RequestMatch, ResponseMatch, ServiceProfile};
use strait_api::mesh::split::TrafficSplit;

/// Scale of `WeightedDst.weight`: Linkerd sends TrafficSplit weights in thousandths, so
/// quantities like `900m` keep their precision.
const WEIGHT_SCALE: f64 = 1000.0;

/// The profile of `fqdn` (`svc.ns.svc.cluster.local`) on `port`.
pub fn destination_profile(
    fqdn: &str,
    port: u16,
    opaque: bool,
    profile: Option<&ServiceProfile>,
    splits: &[TrafficSplit],
    cluster_domain: &str,
) -> pb::DestinationProfile {
    let mut out = pb::DestinationProfile {
        fully_qualified_name: fqdn.to_string(),
        opaque_protocol: opaque,
        ..Default::default()
    };
    if let Some(sp) = profile {
        out.routes = sp.spec.routes.iter().flatten().map(route).collect();
        out.retry_budget = sp.spec.retry_budget.as_ref().map(|b| pb::RetryBudget {
            retry_ratio: b.retry_ratio as f32,
            min_retries_per_second: u32::try_from(b.min_retries_per_second).unwrap_or(0),
            ttl: strait_api::names::duration(&b.ttl)
                .ok()
                .and_then(|d| d.try_into().ok()),
        });
        out.dst_overrides = sp
            .spec
            .dst_overrides
            .iter()
            .flatten()
            .map(|d| pb::WeightedDst {
                authority: d.authority.clone(),
                weight: scaled(d.weight.value().unwrap_or(0.0)),
                backend_ref: None,
            })
            .collect();
    }
    // A TrafficSplit's backends override the profile's (Linkerd gives SMI precedence).
    if let Some(ts) = splits.first() {
        let ns = ts.metadata.namespace.clone().unwrap_or_default();
        out.dst_overrides = ts
            .spec
            .backends
            .iter()
            .map(|b| pb::WeightedDst {
                authority: format!("{}.{ns}.svc.{cluster_domain}:{port}", b.service),
                weight: scaled(b.weight_value()),
                backend_ref: None,
            })
            .collect();
    }
    out
}

fn scaled(w: f64) -> u32 {
    (w * WEIGHT_SCALE).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

fn route(r: &strait_api::mesh::profile::RouteSpec) -> pb::Route {
    pb::Route {
        condition: Some(request_match(&r.condition)),
        response_classes: r
            .response_classes
            .iter()
            .flatten()
            .map(|c| pb::ResponseClass {
                condition: Some(response_match(&c.condition)),
                is_failure: c.is_failure.unwrap_or(false),
            })
            .collect(),
        metrics_labels: [("route".to_string(), r.name.clone())].into(),
        is_retryable: r.is_retryable.unwrap_or(false),
        timeout: r
            .timeout
            .as_deref()
            .and_then(|t| strait_api::names::duration(t).ok())
            .and_then(|d| d.try_into().ok()),
    }
}

/// A ServiceProfile condition: its fields are ANDed, as in Linkerd.
fn request_match(m: &RequestMatch) -> pb::RequestMatch {
    use pb::request_match::{Match, Seq};
    let mut parts: Vec<pb::RequestMatch> = Vec::new();
    if let Some(re) = &m.path_regex {
        parts.push(pb::RequestMatch {
            r#match: Some(Match::Path(pb::PathMatch { regex: re.clone() })),
        });
    }
    if let Some(method) = &m.method
        && let Ok(method) = http::Method::from_bytes(method.as_bytes())
    {
        parts.push(pb::RequestMatch {
            r#match: Some(Match::Method(HttpMethod::from(method))),
        });
    }
    if let Some(all) = &m.all {
        parts.push(pb::RequestMatch {
            r#match: Some(Match::All(Seq {
                matches: all.iter().map(request_match).collect(),
            })),
        });
    }
    if let Some(any) = &m.any {
        parts.push(pb::RequestMatch {
            r#match: Some(Match::Any(Seq {
                matches: any.iter().map(request_match).collect(),
            })),
        });
    }
    if let Some(not) = &m.not {
        parts.push(pb::RequestMatch {
            r#match: Some(Match::Not(Box::new(request_match(not)))),
        });
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        pb::RequestMatch {
            r#match: Some(Match::All(Seq { matches: parts })),
        }
    }
}

fn response_match(m: &ResponseMatch) -> pb::ResponseMatch {
    use pb::response_match::{Match, Seq};
    let mut parts: Vec<pb::ResponseMatch> = Vec::new();
    if let Some(s) = &m.status {
        parts.push(pb::ResponseMatch {
            r#match: Some(Match::Status(pb::HttpStatusRange {
                min: s.min.and_then(|v| u32::try_from(v).ok()).unwrap_or(100),
                max: s.max.and_then(|v| u32::try_from(v).ok()).unwrap_or(599),
            })),
        });
    }
    if let Some(all) = &m.all {
        parts.push(pb::ResponseMatch {
            r#match: Some(Match::All(Seq {
                matches: all.iter().map(response_match).collect(),
            })),
        });
    }
    if let Some(any) = &m.any {
        parts.push(pb::ResponseMatch {
            r#match: Some(Match::Any(Seq {
                matches: any.iter().map(response_match).collect(),
            })),
        });
    }
    if let Some(not) = &m.not {
        parts.push(pb::ResponseMatch {
            r#match: Some(Match::Not(Box::new(response_match(not)))),
        });
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        pb::ResponseMatch {
            r#match: Some(Match::All(Seq { matches: parts })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load<K: strait_api::Kind>(yaml: &str) -> K {
        let loaded = strait_api::loader::load_str("t.yaml", yaml, &Default::default()).unwrap();
        K::from_object(loaded.into_iter().next().unwrap().object).unwrap()
    }

    #[test]
    fn the_seed_service_profile_becomes_routes_and_a_budget() {
        let sp: ServiceProfile = load(include_str!(
            "../../../examples/linkerd-seed/08-serviceprofile.yaml"
        ));
        let p = destination_profile(
            "myapp.production.svc.cluster.local",
            80,
            false,
            Some(&sp),
            &[],
            "cluster.local",
        );
        assert_eq!(p.routes.len(), 1);
        let r = &p.routes[0];
        assert_eq!(r.metrics_labels["route"], "GET /api/users");
        use pb::request_match::Match;
        let Some(Match::All(seq)) = &r.condition.as_ref().unwrap().r#match else {
            panic!("{r:?}")
        };
        assert!(matches!(&seq.matches[0].r#match, Some(Match::Path(p)) if p.regex == "/api/users"));
        assert!(matches!(&seq.matches[1].r#match, Some(Match::Method(_))));
        assert!(r.response_classes[0].is_failure);
        let Some(pb::response_match::Match::Status(s)) =
            &r.response_classes[0].condition.as_ref().unwrap().r#match
        else {
            panic!()
        };
        assert_eq!((s.min, s.max), (500, 599));
        let b = p.retry_budget.unwrap();
        assert!((b.retry_ratio - 0.2).abs() < 1e-6);
        assert_eq!(b.min_retries_per_second, 10);
        assert_eq!(b.ttl.unwrap().seconds, 10);
    }

    #[test]
    fn the_seed_traffic_split_becomes_weighted_overrides() {
        let ts: TrafficSplit = load(include_str!(
            "../../../examples/linkerd-seed/04-trafficsplit-canary.yaml"
        ));
        let p = destination_profile(
            "myapp.production.svc.cluster.local",
            80,
            false,
            None,
            &[ts],
            "cluster.local",
        );
        let got: Vec<(String, u32)> = p
            .dst_overrides
            .iter()
            .map(|d| (d.authority.clone(), d.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("myapp-v1.production.svc.cluster.local:80".to_string(), 90_000),
                ("myapp-v2.production.svc.cluster.local:80".to_string(), 10_000)
            ]
        );
    }
}
