//! The control-plane benchmark at a tiny size, against an in-process control plane: the
//! same scenario code as `bench control-plane`, checked for correctness instead of timed,
//! so the harness cannot rot between benchmark runs.

use std::time::Duration;

use strait_tests::bench::report::{self, Machine, Run};
use strait_tests::bench::scenarios::{self, LatencyConfig, MemoryConfig, Scope};
use strait_tests::bench::target::{ControlPlane, InProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_every_stream_that_must_see_it() {
    let cp = ControlPlane::InProcess(InProcess::start().await.unwrap());
    let config = LatencyConfig {
        namespaces: 2,
        services: 10,
        endpoints: 3,
        watches: 20,
        per_connection: 4,
        rounds: 50,
        round_timeout: Duration::from_secs(10),
        settle_timeout: Duration::from_secs(30),
    };
    let r = scenarios::latency(&cp, config).await.unwrap();
    cp.stop().await.unwrap();

    // 45 single-service rounds (2 streams each), 4 namespace rounds (10), 1 of everything (20).
    assert_eq!(r.expected, 45 * 2 + 4 * 10 + 20);
    assert_eq!(r.missed, 0, "every change reached every stream of its services");
    assert_eq!(r.all.count, r.expected);
    assert_eq!(r.diverged, 0, "every stream ends with its service's endpoints");
    let scopes: Vec<(Scope, usize)> = r.by_scope.iter().map(|(s, n, _)| (*s, *n)).collect();
    assert_eq!(
        scopes,
        vec![(Scope::Service, 45), (Scope::Namespace, 4), (Scope::All, 1)]
    );
    assert_eq!(r.unexpected, 0, "no stream hears of a change to another service");
    assert!(r.memory.is_none(), "no memory figures in process");

    let run = Run {
        machine: Machine::detect(),
        date: "today".into(),
        command: "smoke".into(),
        revision: "test".into(),
        controller: "in process".into(),
        latency: Some(r),
        latency_in_process: None,
        memory: None,
    };
    assert!(report::table(&run).contains("all "), "{}", report::table(&run));
    assert!(report::markdown(&run).contains("| **all** | 50 | 150 |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_of_the_memory_scenario_answers_in_full() {
    let cp = ControlPlane::InProcess(InProcess::start().await.unwrap());
    let config = MemoryConfig {
        namespaces: 2,
        services: 10,
        endpoints: 10,
        watches: 20,
        per_connection: 5,
        settle_timeout: Duration::from_secs(30),
    };
    let r = scenarios::memory(&cp, config).await.unwrap();
    cp.stop().await.unwrap();
    assert_eq!(r.answered, 20);
    assert!(r.idle.is_none() && r.watching.is_none());
    assert_eq!(report::memory_passes(&r), None, "no verdict without figures");
}
