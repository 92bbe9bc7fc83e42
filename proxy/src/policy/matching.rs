//! Request matching for HTTP and gRPC routes (pure): host, path, headers, query
//! parameters and method, and Gateway API precedence among the rules that match.
//!
//! Precedence, across every rule of every route: the most specific host (exact, then the
//! longest suffix, then none), then the path (exact, then the longest prefix, then a
//! regular expression), then a method match, then the most header matches, then the most
//! query-parameter matches; remaining ties go to the earlier route (the control plane
//! sends them oldest first) and the earlier rule.

use http::{HeaderMap, Method, Uri};
use linkerd2_proxy_api::{grpc_route as grpc_pb, http_route as pb};
use regex::Regex;

use super::PolicyError;

/// How a route names hosts.
#[derive(Clone, Debug)]
pub enum HostMatch {
    /// This host exactly.
    Exact(String),
    /// Any host ending in `.suffix`.
    Suffix(String),
}

/// A path condition.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(Regex),
}

/// A header or query-parameter value condition.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// Exactly this value.
    Exact(Vec<u8>),
    /// A regular expression over the whole value.
    Regex(Regex),
}

impl ValueMatch {
    fn is_match(&self, v: &[u8]) -> bool {
        match self {
            Self::Exact(x) => x == v,
            Self::Regex(r) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
        }
    }
}

/// One match of a rule: every condition must hold.
#[derive(Clone, Debug, Default)]
pub struct RequestMatch {
    /// Path (none: any).
    pub path: Option<PathMatch>,
    /// Headers by lower-case name.
    pub headers: Vec<(http::HeaderName, ValueMatch)>,
    /// Query parameters.
    pub query: Vec<(String, ValueMatch)>,
    /// Method.
    pub method: Option<Method>,
}

/// How specific a match is; greater wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    host: (u8, usize),
    path: (u8, usize),
    method: bool,
    headers: usize,
    query: usize,
}

fn anchored(object: &str, field: &str, re: &str) -> Result<Regex, PolicyError> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        PolicyError::new(
            object,
            field,
            format!("{re:?} is not a regular expression ({e}); expected RE2 syntax"),
        )
    })
}

fn value(object: &str, field: &str, v: Option<&pb::header_match::Value>) -> Result<ValueMatch, PolicyError> {
    match v {
        Some(pb::header_match::Value::Exact(x)) => Ok(ValueMatch::Exact(x.clone())),
        Some(pb::header_match::Value::Regex(r)) => Ok(ValueMatch::Regex(anchored(object, field, r)?)),
        None => Err(PolicyError::new(
            object,
            field,
            "no value; expected exact or regex",
        )),
    }
}

fn header_name(object: &str, field: &str, name: &str) -> Result<http::HeaderName, PolicyError> {
    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| PolicyError::new(object, field, format!("{name:?} is not a header name")))
}

impl RequestMatch {
    /// Reads an HTTP route match; `field` locates it in errors.
    pub fn http(object: &str, field: &str, m: &pb::HttpRouteMatch) -> Result<Self, PolicyError> {
        let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
            None => None,
            Some(pb::path_match::Kind::Exact(p)) => Some(PathMatch::Exact(p.clone())),
            Some(pb::path_match::Kind::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
            Some(pb::path_match::Kind::Regex(r)) => Some(PathMatch::Regex(anchored(
                object,
                &format!("{field}.path.regex"),
                r,
            )?)),
        };
        if let Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) = &path
            && !p.starts_with('/')
        {
            return Err(PolicyError::new(
                object,
                format!("{field}.path"),
                format!("{p:?} does not start with '/'; expected an absolute path"),
            ));
        }
        let mut headers = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            let f = format!("{field}.headers[{i}]");
            headers.push((
                header_name(object, &f, &h.name)?,
                value(object, &f, h.value.as_ref())?,
            ));
        }
        let mut query = Vec::new();
        for (i, q) in m.query_params.iter().enumerate() {
            let f = format!("{field}.query_params[{i}]");
            let v = match &q.value {
                Some(pb::query_param_match::Value::Exact(x)) => ValueMatch::Exact(x.clone().into_bytes()),
                Some(pb::query_param_match::Value::Regex(r)) => ValueMatch::Regex(anchored(object, &f, r)?),
                None => return Err(PolicyError::new(object, f, "no value; expected exact or regex")),
            };
            query.push((q.name.clone(), v));
        }
        let method = match &m.method {
            None => None,
            Some(x) => Some(Method::try_from(x.clone()).map_err(|e| {
                PolicyError::new(
                    object,
                    format!("{field}.method"),
                    format!("{e}; expected an HTTP method"),
                )
            })?),
        };
        Ok(Self {
            path,
            headers,
            query,
            method,
        })
    }

    /// Reads a gRPC route match: service and method become the path `/service/method`.
    pub fn grpc(object: &str, field: &str, m: &grpc_pb::GrpcRouteMatch) -> Result<Self, PolicyError> {
        let path = match &m.rpc {
            None => None,
            Some(r) if r.service.is_empty() && r.method.is_empty() => None,
            Some(r) if r.method.is_empty() => Some(PathMatch::Prefix(format!("/{}", r.service))),
            Some(r) if r.service.is_empty() => Some(PathMatch::Regex(anchored(
                object,
                &format!("{field}.rpc.method"),
                &format!("/[^/]+/{}", regex::escape(&r.method)),
            )?)),
            Some(r) => Some(PathMatch::Exact(format!("/{}/{}", r.service, r.method))),
        };
        let mut headers = Vec::new();
        for (i, h) in m.headers.iter().enumerate() {
            let f = format!("{field}.headers[{i}]");
            headers.push((
                header_name(object, &f, &h.name)?,
                value(object, &f, h.value.as_ref())?,
            ));
        }
        Ok(Self {
            path,
            headers,
            query: Vec::new(),
            method: None,
        })
    }

    /// Whether the request matches; its specificity if so.
    pub fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Specificity> {
        let path = uri.path();
        let path_rank = match &self.path {
            None => (0, 0),
            Some(PathMatch::Exact(p)) => {
                if path != p {
                    return None;
                }
                (3, p.len())
            }
            Some(PathMatch::Prefix(p)) => {
                let p = p.trim_end_matches('/');
                let ok = path.starts_with(p) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/');
                if !ok && !p.is_empty() {
                    return None;
                }
                (2, p.len() + 1)
            }
            Some(PathMatch::Regex(r)) => {
                if !r.is_match(path) {
                    return None;
                }
                (1, r.as_str().len())
            }
        };
        if let Some(m) = &self.method
            && m != method
        {
            return None;
        }
        for (name, v) in &self.headers {
            if !headers.get_all(name).iter().any(|x| v.is_match(x.as_bytes())) {
                return None;
            }
        }
        if !self.query.is_empty() {
            let q = uri.query().unwrap_or("");
            for (name, v) in &self.query {
                let found = q.split('&').any(|kv| {
                    let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
                    k == name && v.is_match(val.as_bytes())
                });
                if !found {
                    return None;
                }
            }
        }
        Some(Specificity {
            host: (0, 0),
            path: path_rank,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        })
    }
}

impl HostMatch {
    /// Reads a host match.
    pub fn from_pb(object: &str, field: &str, h: &pb::HostMatch) -> Result<Self, PolicyError> {
        match &h.r#match {
            Some(pb::host_match::Match::Exact(x)) => Ok(Self::Exact(x.to_ascii_lowercase())),
            Some(pb::host_match::Match::Suffix(s)) => {
                let mut labels = s.reverse_labels.clone();
                labels.reverse();
                Ok(Self::Suffix(labels.join(".").to_ascii_lowercase()))
            }
            None => Err(PolicyError::new(
                object,
                field,
                "empty host match; expected exact or suffix",
            )),
        }
    }

    fn rank(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            Self::Exact(x) => (x == host).then_some((2, x.len())),
            Self::Suffix(s) => (host.len() > s.len()
                && host.ends_with(s.as_str())
                && host.as_bytes()[host.len() - s.len() - 1] == b'.')
                .then_some((1, s.len())),
        }
    }
}

/// The rank of `host` (lower-case, no port) against a route's hosts; `None` if it names
/// hosts and none matches.
pub fn host_rank(hosts: &[HostMatch], host: Option<&str>) -> Option<(u8, usize)> {
    if hosts.is_empty() {
        return Some((0, 0));
    }
    let host = host?;
    hosts.iter().filter_map(|h| h.rank(host)).max()
}

/// The host of a request, lower-case and without its port.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let raw = match uri.host() {
        Some(h) => h.to_string(),
        None => {
            let h = headers.get(http::header::HOST)?.to_str().ok()?;
            match h.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => h.to_string(),
                _ => h.to_string(),
            }
        }
    };
    Some(raw.to_ascii_lowercase())
}

/// Picks the best `(route, rule)` among `routes`, each route given as its hosts and its
/// rules' matches. A rule without matches matches everything.
pub fn select<'a, R: 'a>(
    routes: impl IntoIterator<Item = (&'a [HostMatch], &'a [R])>,
    rule_matches: impl Fn(&R) -> &[RequestMatch],
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<(usize, usize)> {
    let host = request_host(uri, headers);
    let mut best: Option<(Specificity, usize, usize)> = None;
    for (ri, (hosts, rules)) in routes.into_iter().enumerate() {
        let Some(h) = host_rank(hosts, host.as_deref()) else {
            continue;
        };
        for (ui, rule) in rules.iter().enumerate() {
            let ms = rule_matches(rule);
            let spec = if ms.is_empty() {
                Some(Specificity {
                    host: h,
                    path: (0, 0),
                    method: false,
                    headers: 0,
                    query: 0,
                })
            } else {
                ms.iter()
                    .filter_map(|m| m.matches(method, uri, headers))
                    .max()
                    .map(|s| Specificity { host: h, ..s })
            };
            if let Some(s) = spec
                && best.as_ref().is_none_or(|(b, _, _)| s > *b)
            {
                best = Some((s, ri, ui));
            }
        }
    }
    best.map(|(_, r, u)| (r, u))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: Option<PathMatch>, headers: &[(&str, &str)]) -> RequestMatch {
        RequestMatch {
            path,
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        ValueMatch::Exact(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pick(rules: &[Vec<RequestMatch>], path: &str, headers: &[(&str, &str)]) -> Option<usize> {
        let uri: Uri = path.parse().unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let routes = [(&[][..], rules)];
        select(
            routes,
            |r: &Vec<RequestMatch>| r.as_slice(),
            &Method::GET,
            &uri,
            &h,
        )
        .map(|(_, u)| u)
    }

    /// The seed's 05: header rule, path rule, default rule.
    #[test]
    fn seed_routing_precedence() {
        let rules = vec![
            vec![m(Some(PathMatch::Prefix("/".into())), &[("x-canary", "true")])],
            vec![m(Some(PathMatch::Prefix("/api/v2".into())), &[])],
            vec![],
        ];
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);
        let cases: &[Case] = &[
            ("/", &[("x-canary", "true")], 0),
            ("/api/v2/users", &[], 1),
            ("/api/v2", &[], 1),
            ("/api/v20", &[], 2),
            ("/other", &[], 2),
            ("/other", &[("x-canary", "false")], 2),
            // The longer path prefix beats the header match under Gateway API precedence.
            ("/api/v2/x", &[("x-canary", "true")], 1),
        ];
        for (path, headers, want) in cases {
            assert_eq!(pick(&rules, path, headers), Some(*want), "{path} {headers:?}");
        }
    }

    #[test]
    fn exact_beats_prefix_beats_regex_and_query_and_method_count() {
        let re = Regex::new("^(?:/a/.*)$").unwrap();
        let rules = vec![
            vec![m(Some(PathMatch::Regex(re)), &[])],
            vec![m(Some(PathMatch::Prefix("/a".into())), &[])],
            vec![m(Some(PathMatch::Exact("/a/b".into())), &[])],
            vec![RequestMatch {
                path: Some(PathMatch::Prefix("/q".into())),
                query: vec![("v".into(), ValueMatch::Exact(b"2".to_vec()))],
                ..Default::default()
            }],
            vec![RequestMatch {
                path: Some(PathMatch::Prefix("/q".into())),
                method: Some(Method::POST),
                ..Default::default()
            }],
        ];
        assert_eq!(pick(&rules, "/a/b", &[]), Some(2));
        assert_eq!(pick(&rules, "/a/c", &[]), Some(1));
        assert_eq!(pick(&rules, "/q?x=1&v=2", &[]), Some(3));
        assert_eq!(pick(&rules, "/q?v=3", &[]), None);
        assert_eq!(pick(&rules, "/z", &[]), None);
    }

    #[test]
    fn hosts_filter_and_rank() {
        let exact = [HostMatch::Exact("a.example.com".into())];
        let suffix = [HostMatch::Suffix("example.com".into())];
        let none: [HostMatch; 0] = [];
        let rules: Vec<Vec<RequestMatch>> = vec![vec![]];
        let routes = [
            (&none[..], &rules[..]),
            (&suffix[..], &rules[..]),
            (&exact[..], &rules[..]),
        ];
        let mut h = HeaderMap::new();
        h.insert("host", "a.example.com:80".parse().unwrap());
        let uri: Uri = "/".parse().unwrap();
        let got = select(
            routes,
            |r: &Vec<RequestMatch>| r.as_slice(),
            &Method::GET,
            &uri,
            &h,
        );
        assert_eq!(got, Some((2, 0)));
        h.insert("host", "b.example.com".parse().unwrap());
        let got = select(
            routes,
            |r: &Vec<RequestMatch>| r.as_slice(),
            &Method::GET,
            &uri,
            &h,
        );
        assert_eq!(got, Some((1, 0)));
        h.insert("host", "example.org".parse().unwrap());
        let got = select(
            routes,
            |r: &Vec<RequestMatch>| r.as_slice(),
            &Method::GET,
            &uri,
            &h,
        );
        assert_eq!(got, Some((0, 0)));
    }

    #[test]
    fn bad_regex_names_the_field() {
        let bad = pb::HttpRouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::Regex("(".into())),
            }),
            ..Default::default()
        };
        let e = RequestMatch::http("httproute x", "rules[0].matches[1]", &bad).unwrap_err();
        assert_eq!(e.field, "rules[0].matches[1].path.regex");
        assert!(
            e.to_string().starts_with(
                "httproute x: rules[0].matches[1].path.regex: \"(\" is not a regular expression"
            ),
            "{e}"
        );
    }
}
