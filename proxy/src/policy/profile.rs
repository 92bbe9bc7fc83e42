//! ServiceProfile routes and retry budget, typed: request conditions (method, path
//! regex, all/any/not), response classes (`isFailure`), `isRetryable` and `timeout`.

use std::time::Duration;

use http::Method;
use linkerd2_proxy_api::destination as pb;
use regex::Regex;

use super::retry::BudgetConfig;
use super::{PolicyError, duration};

/// A request condition.
#[derive(Clone, Debug)]
pub enum RequestCond {
    /// Every one.
    All(Vec<RequestCond>),
    /// At least one.
    Any(Vec<RequestCond>),
    /// Not.
    Not(Box<RequestCond>),
    /// The path matches (whole path).
    Path(Regex),
    /// The method is.
    Method(Method),
}

impl RequestCond {
    fn matches(&self, m: &Method, path: &str) -> bool {
        match self {
            Self::All(v) => v.iter().all(|c| c.matches(m, path)),
            Self::Any(v) => v.iter().any(|c| c.matches(m, path)),
            Self::Not(c) => !c.matches(m, path),
            Self::Path(r) => r.is_match(path),
            Self::Method(x) => x == m,
        }
    }
}

/// A response condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseCond {
    /// Every one.
    All(Vec<ResponseCond>),
    /// At least one.
    Any(Vec<ResponseCond>),
    /// Not.
    Not(Box<ResponseCond>),
    /// Status in `min..=max`.
    Status(u16, u16),
}

impl ResponseCond {
    fn matches(&self, status: u16) -> bool {
        match self {
            Self::All(v) => v.iter().all(|c| c.matches(status)),
            Self::Any(v) => v.iter().any(|c| c.matches(status)),
            Self::Not(c) => !c.matches(status),
            Self::Status(lo, hi) => (*lo..=*hi).contains(&status),
        }
    }
}

/// A ServiceProfile route.
#[derive(Clone, Debug)]
pub struct ProfileRoute {
    /// Its name (`GET /api/users`).
    pub name: String,
    /// Its metric labels (`route` → its name), sorted: its series carry each as `rt_<key>`.
    pub labels: Vec<(String, String)>,
    /// When it applies.
    pub condition: RequestCond,
    /// Response classes in order: (condition, is failure).
    pub classes: Vec<(ResponseCond, bool)>,
    /// Whether failed requests may be retried.
    pub retryable: bool,
    /// Per-request deadline (504 after).
    pub timeout: Option<Duration>,
}

impl ProfileRoute {
    /// Linkerd's classification of a response: the first class that matches, else 5xx
    /// (and gRPC statuses that say the server failed) fail.
    pub fn is_failure(&self, status: u16, grpc_status: Option<u32>) -> bool {
        match self.classes.iter().find(|(c, _)| c.matches(status)) {
            Some((_, failure)) => *failure,
            None => status >= 500 || grpc_status.is_some_and(crate::metrics::grpc_is_failure),
        }
    }
}

/// The routes and budget of a profile.
#[derive(Clone, Debug, Default)]
pub struct ProfilePolicy {
    source: Option<(Vec<pb::Route>, Option<pb::RetryBudget>)>,
    /// Routes in order; the first that matches applies.
    pub routes: Vec<ProfileRoute>,
    /// The retry budget (Linkerd's default when the profile names none).
    pub budget: BudgetConfig,
}

impl PartialEq for ProfilePolicy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for ProfilePolicy {}

fn request_cond(
    object: &str,
    field: &str,
    m: &pb::RequestMatch,
    depth: usize,
) -> Result<RequestCond, PolicyError> {
    use pb::request_match::Match;
    if depth > 16 {
        return Err(PolicyError::new(object, field, "nested more than 16 deep"));
    }
    let seq = |v: &[pb::RequestMatch], f: &str| -> Result<Vec<RequestCond>, PolicyError> {
        v.iter()
            .enumerate()
            .map(|(i, m)| request_cond(object, &format!("{field}.{f}[{i}]"), m, depth + 1))
            .collect()
    };
    match &m.r#match {
        Some(Match::All(s)) => Ok(RequestCond::All(seq(&s.matches, "all")?)),
        Some(Match::Any(s)) => Ok(RequestCond::Any(seq(&s.matches, "any")?)),
        Some(Match::Not(n)) => Ok(RequestCond::Not(Box::new(request_cond(
            object,
            &format!("{field}.not"),
            n,
            depth + 1,
        )?))),
        Some(Match::Path(p)) => Regex::new(&format!("^(?:{})$", p.regex))
            .map(RequestCond::Path)
            .map_err(|e| {
                PolicyError::new(
                    object,
                    format!("{field}.pathRegex"),
                    format!(
                        "{:?} is not a regular expression ({e}); expected RE2 syntax",
                        p.regex
                    ),
                )
            }),
        Some(Match::Method(x)) => Method::try_from(x.clone()).map(RequestCond::Method).map_err(|e| {
            PolicyError::new(
                object,
                format!("{field}.method"),
                format!("{e}; expected an HTTP method"),
            )
        }),
        None => Err(PolicyError::new(
            object,
            field,
            "empty condition; expected method, pathRegex, all, any or not",
        )),
    }
}

fn response_cond(
    object: &str,
    field: &str,
    m: &pb::ResponseMatch,
    depth: usize,
) -> Result<ResponseCond, PolicyError> {
    use pb::response_match::Match;
    if depth > 16 {
        return Err(PolicyError::new(object, field, "nested more than 16 deep"));
    }
    let seq = |v: &[pb::ResponseMatch], f: &str| -> Result<Vec<ResponseCond>, PolicyError> {
        v.iter()
            .enumerate()
            .map(|(i, m)| response_cond(object, &format!("{field}.{f}[{i}]"), m, depth + 1))
            .collect()
    };
    match &m.r#match {
        Some(Match::All(s)) => Ok(ResponseCond::All(seq(&s.matches, "all")?)),
        Some(Match::Any(s)) => Ok(ResponseCond::Any(seq(&s.matches, "any")?)),
        Some(Match::Not(n)) => Ok(ResponseCond::Not(Box::new(response_cond(
            object,
            &format!("{field}.not"),
            n,
            depth + 1,
        )?))),
        Some(Match::Status(r)) => {
            let (lo, hi) = (r.min, if r.max == 0 { 999 } else { r.max });
            if !(100..=999).contains(&lo) || !(100..=999).contains(&hi) || lo > hi {
                return Err(PolicyError::new(
                    object,
                    format!("{field}.status"),
                    format!(
                        "{}-{} is not a status range; expected 100 <= min <= max <= 999",
                        r.min, r.max
                    ),
                ));
            }
            Ok(ResponseCond::Status(lo as u16, hi as u16))
        }
        None => Err(PolicyError::new(
            object,
            field,
            "empty condition; expected status, all, any or not",
        )),
    }
}

impl ProfilePolicy {
    /// Reads a profile's routes and budget.
    pub fn from_pb(p: &pb::DestinationProfile) -> Result<Self, PolicyError> {
        let object = format!("serviceprofile {}", p.fully_qualified_name);
        let object = object.as_str();
        let mut routes = Vec::new();
        for (i, r) in p.routes.iter().enumerate() {
            let name = r
                .metrics_labels
                .get("route")
                .cloned()
                .unwrap_or_else(|| format!("routes[{i}]"));
            let field = format!("routes[{i}] ({name})");
            let condition = match &r.condition {
                Some(c) => request_cond(object, &format!("{field}.condition"), c, 0)?,
                None => {
                    return Err(PolicyError::new(
                        object,
                        format!("{field}.condition"),
                        "missing; expected a request condition",
                    ));
                }
            };
            let classes = r
                .response_classes
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let f = format!("{field}.responseClasses[{j}].condition");
                    let cond = c.condition.as_ref().ok_or_else(|| {
                        PolicyError::new(object, &f, "missing; expected a response condition")
                    })?;
                    Ok((response_cond(object, &f, cond, 0)?, c.is_failure))
                })
                .collect::<Result<_, PolicyError>>()?;
            let mut labels: Vec<(String, String)> = r
                .metrics_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            routes.push(ProfileRoute {
                name,
                labels,
                condition,
                classes,
                retryable: r.is_retryable,
                timeout: duration(object, &format!("{field}.timeout"), r.timeout.as_ref())?
                    .filter(|d| !d.is_zero()),
            });
        }
        let budget = match &p.retry_budget {
            None => BudgetConfig::default(),
            Some(b) => {
                if !(0.0..=1000.0).contains(&b.retry_ratio) {
                    return Err(PolicyError::new(
                        object,
                        "retryBudget.retryRatio",
                        format!("{} is out of range; expected a ratio >= 0", b.retry_ratio),
                    ));
                }
                BudgetConfig {
                    retry_ratio: b.retry_ratio,
                    min_retries_per_second: b.min_retries_per_second,
                    ttl: duration(object, "retryBudget.ttl", b.ttl.as_ref())?
                        .filter(|t| !t.is_zero())
                        .unwrap_or(Duration::from_secs(10)),
                }
            }
        };
        Ok(Self {
            source: Some((p.routes.clone(), p.retry_budget)),
            routes,
            budget,
        })
    }

    /// The route a request takes, if any.
    pub fn route(&self, method: &Method, path: &str) -> Option<&ProfileRoute> {
        self.routes.iter().find(|r| r.condition.matches(method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> pb::DestinationProfile {
        use pb::request_match::{Match, Seq};
        pb::DestinationProfile {
            fully_qualified_name: "myapp.production.svc.cluster.local".into(),
            routes: vec![pb::Route {
                condition: Some(pb::RequestMatch {
                    r#match: Some(Match::All(Seq {
                        matches: vec![
                            pb::RequestMatch {
                                r#match: Some(Match::Method(Method::GET.into())),
                            },
                            pb::RequestMatch {
                                r#match: Some(Match::Path(pb::PathMatch {
                                    regex: "/api/users".into(),
                                })),
                            },
                        ],
                    })),
                }),
                response_classes: vec![pb::ResponseClass {
                    condition: Some(pb::ResponseMatch {
                        r#match: Some(pb::response_match::Match::Status(pb::HttpStatusRange {
                            min: 500,
                            max: 599,
                        })),
                    }),
                    is_failure: true,
                }],
                metrics_labels: [("route".to_string(), "GET /api/users".to_string())].into(),
                is_retryable: false,
                timeout: None,
            }],
            retry_budget: Some(pb::RetryBudget {
                retry_ratio: 0.2,
                min_retries_per_second: 10,
                ttl: Some(Duration::from_secs(10).try_into().unwrap()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn seed_profile_reads_and_routes() {
        let p = ProfilePolicy::from_pb(&seed()).unwrap();
        assert_eq!(p.budget.min_retries_per_second, 10);
        let r = p.route(&Method::GET, "/api/users").unwrap();
        assert_eq!(r.name, "GET /api/users");
        assert!(p.route(&Method::POST, "/api/users").is_none());
        assert!(
            p.route(&Method::GET, "/api/users/1").is_none(),
            "the regex covers the whole path"
        );
        assert!(r.is_failure(503, None));
        assert!(!r.is_failure(404, None));
    }

    #[test]
    fn bad_profile_names_the_route_and_field() {
        let mut p = seed();
        p.routes[0].condition = Some(pb::RequestMatch {
            r#match: Some(pb::request_match::Match::Path(pb::PathMatch {
                regex: "/api/(".into(),
            })),
        });
        let e = ProfilePolicy::from_pb(&p).unwrap_err();
        assert_eq!(e.object, "serviceprofile myapp.production.svc.cluster.local");
        assert_eq!(e.field, "routes[0] (GET /api/users).condition.pathRegex");
    }
}
