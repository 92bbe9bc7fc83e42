//! Linkerd's retry, timeout and failure-accrual annotations (`retry.linkerd.io/*`,
//! `timeout.linkerd.io/*`, `balancer.linkerd.io/failure-accrual*`), read into typed values.
//!
//! The same annotations are read from a Service (defaults for every route to it) and from a
//! route (for that route's rules). Each reader is pure and fails with the annotation it
//! could not read; the caller decides to ignore that annotation, as Linkerd does.

use std::collections::BTreeMap;
use std::time::Duration;

use strait_api::labels::route as ann;

/// An annotation whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The value does not parse.
    #[error("annotation {annotation}={value:?}: expected {expected}")]
    Invalid {
        /// The annotation's name.
        annotation: &'static str,
        /// Its value as written.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// Each value parses, but together they make no sense.
    #[error("annotations {annotation}: {problem}")]
    Inconsistent {
        /// The annotations involved.
        annotation: &'static str,
        /// What is wrong with them.
        problem: String,
    },
}

/// Per-request deadlines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// From the end of the request to the end of the response (`timeout.linkerd.io/response`).
    pub response: Option<Duration>,
    /// The whole request, retries included (`timeout.linkerd.io/request`).
    pub request: Option<Duration>,
    /// With no frame in either direction (`timeout.linkerd.io/idle`).
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// Whether no deadline is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// An inclusive range of HTTP statuses to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest status.
    pub start: u32,
    /// Highest status.
    pub end: u32,
}

/// A gRPC status to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCondition {
    /// `cancelled`.
    Cancelled,
    /// `deadline-exceeded`.
    DeadlineExceeded,
    /// `internal`.
    Internal,
    /// `resource-exhausted`.
    ResourceExhausted,
    /// `unavailable`.
    Unavailable,
}

/// A retry policy: how many times, with which per-attempt deadline, on which outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry<C> {
    /// Retries per request (`retry.linkerd.io/limit`; 1 when only other retry annotations
    /// are set).
    pub limit: u32,
    /// Deadline of each attempt (`retry.linkerd.io/timeout`).
    pub timeout: Option<Duration>,
    /// Outcomes that are retried (`retry.linkerd.io/http` or `/grpc`); none when unset.
    pub conditions: Vec<C>,
}

/// Consecutive-failures circuit breaking (`balancer.linkerd.io/failure-accrual: consecutive`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConsecutiveFailures {
    /// Failures in a row that make an endpoint unavailable.
    pub max_failures: u32,
    /// First ejection time.
    pub min_penalty: Duration,
    /// Longest ejection time.
    pub max_penalty: Duration,
    /// Random part of each ejection, as a ratio of it.
    pub jitter: f32,
}

/// Linkerd's defaults for failure accrual.
pub const DEFAULT_MAX_FAILURES: u32 = 7;
/// Linkerd's default first ejection time.
pub const DEFAULT_MIN_PENALTY: Duration = Duration::from_secs(1);
/// Linkerd's default longest ejection time.
pub const DEFAULT_MAX_PENALTY: Duration = Duration::from_secs(60);
/// Linkerd's default ejection jitter.
pub const DEFAULT_JITTER: f32 = 0.5;

type Annotations = BTreeMap<String, String>;

fn invalid(annotation: &'static str, value: &str, expected: impl Into<String>) -> AnnotationError {
    AnnotationError::Invalid {
        annotation,
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn duration(a: &Annotations, annotation: &'static str) -> Result<Option<Duration>, AnnotationError> {
    a.get(annotation)
        .map(|v| strait_api::names::duration(v).map_err(|expected| invalid(annotation, v, expected)))
        .transpose()
}

/// A deadline; zero means "none" (the Gateway API's rule, GEP-1742).
fn deadline(a: &Annotations, annotation: &'static str) -> Result<Option<Duration>, AnnotationError> {
    Ok(duration(a, annotation)?.filter(|d| !d.is_zero()))
}

/// The `timeout.linkerd.io/*` annotations.
pub fn timeouts(a: &Annotations) -> Result<Timeouts, AnnotationError> {
    Ok(Timeouts {
        response: deadline(a, ann::TIMEOUT_RESPONSE)?,
        request: deadline(a, ann::TIMEOUT_REQUEST)?,
        idle: deadline(a, ann::TIMEOUT_IDLE)?,
    })
}

/// The limit and timeout shared by HTTP and gRPC retries, and whether either is set.
fn retry_common(a: &Annotations) -> Result<(Option<u32>, Option<Duration>), AnnotationError> {
    let limit = a
        .get(ann::RETRY_LIMIT)
        .map(|v| {
            v.trim()
                .parse::<u16>()
                .map_err(|_| invalid(ann::RETRY_LIMIT, v, "a number of retries 0-65535"))
        })
        .transpose()?
        .filter(|n| *n != 0)
        .map(u32::from);
    Ok((limit, deadline(a, ann::RETRY_TIMEOUT)?))
}

fn retry<C>(
    a: &Annotations,
    conditions_annotation: &'static str,
    condition: impl Fn(&str) -> Option<C>,
    expected: &str,
) -> Result<Option<Retry<C>>, AnnotationError> {
    let (limit, timeout) = retry_common(a)?;
    let conditions = a
        .get(conditions_annotation)
        .map(|v| {
            v.split(',')
                .map(|c| condition(c.trim()).ok_or_else(|| invalid(conditions_annotation, v, expected)))
                .collect::<Result<Vec<C>, _>>()
        })
        .transpose()?;
    if limit.is_none() && timeout.is_none() && conditions.is_none() {
        return Ok(None);
    }
    Ok(Some(Retry {
        limit: limit.unwrap_or(1),
        timeout,
        conditions: conditions.unwrap_or_default(),
    }))
}

fn status_code(s: &str) -> Option<u32> {
    s.trim().parse().ok().filter(|c| (100..600).contains(c))
}

/// The HTTP retry annotations: `retry.linkerd.io/http` is a comma-separated list of `5xx`,
/// `gateway-error` (502-504), statuses and inclusive status ranges (`429,500-504`).
pub fn http_retry(a: &Annotations) -> Result<Option<Retry<StatusRange>>, AnnotationError> {
    retry(
        a,
        ann::RETRY_HTTP,
        |c| {
            if c.eq_ignore_ascii_case("5xx") {
                return Some(StatusRange { start: 500, end: 599 });
            }
            if c.eq_ignore_ascii_case("gateway-error") {
                return Some(StatusRange { start: 502, end: 504 });
            }
            if let Some(code) = status_code(c) {
                return Some(StatusRange {
                    start: code,
                    end: code,
                });
            }
            let (start, end) = c.split_once('-')?;
            let (start, end) = (status_code(start)?, status_code(end)?);
            (start <= end).then_some(StatusRange { start, end })
        },
        "a comma-separated list of 5xx, gateway-error, statuses and status ranges (\"429,500-504\")",
    )
}

/// The gRPC retry annotations: `retry.linkerd.io/grpc` is a comma-separated list of
/// `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted` and `unavailable`.
pub fn grpc_retry(a: &Annotations) -> Result<Option<Retry<GrpcCondition>>, AnnotationError> {
    retry(
        a,
        ann::RETRY_GRPC,
        |c| {
            const NAMES: &[(&str, GrpcCondition)] = &[
                ("cancelled", GrpcCondition::Cancelled),
                ("deadline-exceeded", GrpcCondition::DeadlineExceeded),
                ("internal", GrpcCondition::Internal),
                ("resource-exhausted", GrpcCondition::ResourceExhausted),
                ("unavailable", GrpcCondition::Unavailable),
            ];
            NAMES
                .iter()
                .find(|(name, _)| c.eq_ignore_ascii_case(name))
                .map(|(_, cond)| *cond)
        },
        "a comma-separated list of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable",
    )
}

/// The failure-accrual annotations of a Service; `None` when
/// `balancer.linkerd.io/failure-accrual` is unset.
pub fn failure_accrual(a: &Annotations) -> Result<Option<ConsecutiveFailures>, AnnotationError> {
    let Some(mode) = a.get(ann::FAILURE_ACCRUAL) else {
        return Ok(None);
    };
    if mode != "consecutive" {
        return Err(invalid(ann::FAILURE_ACCRUAL, mode, "consecutive"));
    }
    let max_failures = a
        .get(ann::FAILURE_ACCRUAL_CONSECUTIVE_MAX_FAILURES)
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                invalid(
                    ann::FAILURE_ACCRUAL_CONSECUTIVE_MAX_FAILURES,
                    v,
                    "a number of failures",
                )
            })
        })
        .transpose()?
        .unwrap_or(DEFAULT_MAX_FAILURES);
    let min_penalty =
        duration(a, ann::FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY)?.unwrap_or(DEFAULT_MIN_PENALTY);
    let max_penalty =
        duration(a, ann::FAILURE_ACCRUAL_CONSECUTIVE_MAX_PENALTY)?.unwrap_or(DEFAULT_MAX_PENALTY);
    let jitter = a
        .get(ann::FAILURE_ACCRUAL_CONSECUTIVE_JITTER_RATIO)
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|j| (0.0..=100.0).contains(j))
                .ok_or_else(|| {
                    invalid(
                        ann::FAILURE_ACCRUAL_CONSECUTIVE_JITTER_RATIO,
                        v,
                        "a ratio from 0 to 100",
                    )
                })
        })
        .transpose()?
        .unwrap_or(DEFAULT_JITTER);
    if max_penalty.is_zero() {
        return Err(AnnotationError::Inconsistent {
            annotation: ann::FAILURE_ACCRUAL_CONSECUTIVE_MAX_PENALTY,
            problem: "the maximum penalty must be longer than zero".into(),
        });
    }
    if min_penalty > max_penalty {
        return Err(AnnotationError::Inconsistent {
            annotation: ann::FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY,
            problem: format!(
                "the minimum penalty ({min_penalty:?}) exceeds the maximum penalty ({max_penalty:?})"
            ),
        });
    }
    Ok(Some(ConsecutiveFailures {
        max_failures,
        min_penalty,
        max_penalty,
        jitter,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn timeouts_read_each_annotation_and_zero_means_none() {
        let cases: &[(&[(&str, &str)], Timeouts)] = &[
            (&[], Timeouts::default()),
            (
                &[(ann::TIMEOUT_REQUEST, "10s"), (ann::TIMEOUT_RESPONSE, "250ms")],
                Timeouts {
                    request: Some(S(10)),
                    response: Some(MS(250)),
                    idle: None,
                },
            ),
            (
                &[(ann::TIMEOUT_IDLE, "1m"), (ann::TIMEOUT_REQUEST, "0s")],
                Timeouts {
                    idle: Some(S(60)),
                    ..Default::default()
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(timeouts(&a(input)).as_ref(), Ok(want), "{input:?}");
        }
        assert!(matches!(
            timeouts(&a(&[(ann::TIMEOUT_REQUEST, "ten")])),
            Err(AnnotationError::Invalid {
                annotation: ann::TIMEOUT_REQUEST,
                ..
            })
        ));
    }

    #[test]
    fn http_retries() {
        let range = |start, end| StatusRange { start, end };
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Retry<StatusRange>>);
        let cases: &[Case<'_>] = &[
            (&[], None),
            (
                &[(ann::RETRY_HTTP, "5xx")],
                Some(Retry {
                    limit: 1,
                    timeout: None,
                    conditions: vec![range(500, 599)],
                }),
            ),
            (
                &[
                    (ann::RETRY_HTTP, "gateway-error, 429,500-501"),
                    (ann::RETRY_LIMIT, "3"),
                    (ann::RETRY_TIMEOUT, "300ms"),
                ],
                Some(Retry {
                    limit: 3,
                    timeout: Some(MS(300)),
                    conditions: vec![range(502, 504), range(429, 429), range(500, 501)],
                }),
            ),
            (
                &[(ann::RETRY_LIMIT, "2")],
                Some(Retry {
                    limit: 2,
                    timeout: None,
                    conditions: vec![],
                }),
            ),
            // A zero limit is no limit annotation at all.
            (&[(ann::RETRY_LIMIT, "0")], None),
        ];
        for (input, want) in cases {
            assert_eq!(http_retry(&a(input)).as_ref(), Ok(want), "{input:?}");
        }
        for bad in ["4xx", "500-400", "99", "5xx,"] {
            assert!(
                http_retry(&a(&[(ann::RETRY_HTTP, bad)])).is_err(),
                "{bad} should be refused"
            );
        }
        assert!(http_retry(&a(&[(ann::RETRY_LIMIT, "-1")])).is_err());
    }

    #[test]
    fn grpc_retries() {
        assert_eq!(
            grpc_retry(&a(&[(ann::RETRY_GRPC, "cancelled,Unavailable")])),
            Ok(Some(Retry {
                limit: 1,
                timeout: None,
                conditions: vec![GrpcCondition::Cancelled, GrpcCondition::Unavailable],
            }))
        );
        assert!(grpc_retry(&a(&[(ann::RETRY_GRPC, "not-found")])).is_err());
        assert_eq!(grpc_retry(&a(&[(ann::RETRY_HTTP, "5xx")])), Ok(None));
    }

    #[test]
    fn failure_accrual_defaults_and_limits() {
        use ann::*;
        assert_eq!(failure_accrual(&a(&[])), Ok(None));
        assert_eq!(
            failure_accrual(&a(&[(FAILURE_ACCRUAL, "consecutive")])),
            Ok(Some(ConsecutiveFailures {
                max_failures: 7,
                min_penalty: S(1),
                max_penalty: S(60),
                jitter: 0.5,
            }))
        );
        assert_eq!(
            failure_accrual(&a(&[
                (FAILURE_ACCRUAL, "consecutive"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MAX_FAILURES, "3"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY, "100ms"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MAX_PENALTY, "10s"),
                (FAILURE_ACCRUAL_CONSECUTIVE_JITTER_RATIO, "0.1"),
            ])),
            Ok(Some(ConsecutiveFailures {
                max_failures: 3,
                min_penalty: MS(100),
                max_penalty: S(10),
                jitter: 0.1,
            }))
        );
        let refused: &[&[(&str, &str)]] = &[
            &[(FAILURE_ACCRUAL, "success-rate")],
            &[
                (FAILURE_ACCRUAL, "consecutive"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY, "2m"),
            ],
            &[
                (FAILURE_ACCRUAL, "consecutive"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MAX_PENALTY, "0s"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MIN_PENALTY, "0s"),
            ],
            &[
                (FAILURE_ACCRUAL, "consecutive"),
                (FAILURE_ACCRUAL_CONSECUTIVE_JITTER_RATIO, "-1"),
            ],
            &[
                (FAILURE_ACCRUAL, "consecutive"),
                (FAILURE_ACCRUAL_CONSECUTIVE_MAX_FAILURES, "many"),
            ],
        ];
        for input in refused {
            assert!(failure_accrual(&a(input)).is_err(), "{input:?}");
        }
    }
}
