//! The life of one gateway-to-gateway link, as pure transitions.
//!
//! A [`Link`] decides *when* to connect, probe, give up on a connection and
//! reconnect; the async driver does the I/O it asks for and reports what
//! happened. Time is always an input (`now`), and so is randomness (a seed for
//! the backoff jitter), so every schedule is reproducible in tests.
//!
//! ```text
//!            ┌──────────── connect failed / lost ───────────┐
//!            ▼                                              │
//!   Idle ─▶ Connecting ─ connected ─▶ Established ─ lost ─▶ Backoff ─ delay over ─▶ Connecting
//!                                          │  └─ peer draining: retire the connection ─▶ Backoff
//!                                       shutdown
//!                                          ▼
//!                                      Draining ─ idle or deadline ─▶ Closed
//! ```
//!
//! A peer that is shutting down answers probes with a refusal (`shutting-down`): the
//! link retires that connection — it carries only the streams already open on it, which
//! the peer lets finish — and connects again (perhaps to the peer's successor).
//!
//! Invariants:
//! - at most one connection attempt or connection is the link's at a time (a retired
//!   connection is no longer the link's);
//! - the backoff attempt counter is reset only by a connection that
//!   established, so a peer that accepts and immediately drops keeps backing off;
//! - a link is *alive* only while established and its recent probes answered
//!   (fewer than `probe_failures_to_dead` consecutive failures);
//! - once `shutdown` is handled, no `Connect` or `Probe` action is emitted again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Timing of a link. Defaults suit a WAN link between clusters and fail over
/// within about a second of a peer going silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// How long a connection attempt may take before it is abandoned.
    pub connect_timeout: Duration,
    /// Interval between liveness probes on an established link.
    pub probe_interval: Duration,
    /// A probe not answered within this is a failure.
    pub probe_timeout: Duration,
    /// Consecutive probe failures after which the link is not alive and the
    /// connection is abandoned.
    pub probe_failures_to_dead: u32,
    /// How long a draining link waits for open streams to finish.
    pub drain_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(500),
            probe_failures_to_dead: 2,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started.
    Idle,
    /// A connection attempt is in flight.
    Connecting,
    /// Connected; streams may be opened.
    Established,
    /// Waiting before the next attempt.
    Backoff,
    /// Shutting down: no new streams, waiting for open ones.
    Draining,
    /// Done.
    Closed,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a connection attempt (number `attempt`, from 1).
    Connect {
        /// Attempts since the last established connection.
        attempt: u32,
    },
    /// Open a probe stream tagged `id` and report its answer.
    Probe {
        /// Echo this in [`Link::handle_probe_answered`] / `_failed`.
        id: u64,
    },
    /// Abandon the current connection or attempt (the link will back off).
    Abort {
        /// Why, for logs and the peer.
        reason: AbortReason,
    },
    /// Close the connection gracefully: the link is closed.
    Close,
    /// Stop opening streams on the current connection, but let the streams open on it
    /// finish: the peer is draining and will close it (the link will back off).
    Retire,
}

/// Why the link abandoned a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The attempt took longer than `connect_timeout`.
    ConnectTimeout,
    /// Probes went unanswered.
    ProbesFailed,
}

/// What happened, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The phase changed.
    Phase(Phase),
    /// The link became alive or stopped being alive.
    Alive(bool),
    /// A probe finished.
    Probe {
        /// Whether it was answered in time.
        ok: bool,
        /// Round-trip time of an answered probe.
        latency: Option<Duration>,
    },
    /// A reconnect is scheduled.
    Reconnecting {
        /// The attempt that will follow.
        attempt: u32,
        /// After this delay.
        delay: Duration,
    },
    /// Connection statistics moved on.
    Stats {
        /// Smoothed RTT.
        rtt: Duration,
        /// Packets lost since the previous statistics.
        lost_packets: u64,
    },
}

/// Statistics the driver samples from the QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Packets lost since the connection started.
    pub lost_packets: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    Connecting {
        deadline: Instant,
    },
    Established {
        next_probe: Instant,
        outstanding: Option<(u64, Instant)>,
        failures: u32,
        alive: bool,
        lost_seen: u64,
    },
    Backoff {
        until: Instant,
    },
    Draining {
        deadline: Instant,
    },
    Closed,
}

/// The state machine of one link. See the module docs.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    state: State,
    /// Attempts since the last established connection.
    attempt: u32,
    next_probe_id: u64,
    rng: u64,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Link {
    /// A new idle link. `seed` drives the backoff jitter.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            state: State::Idle,
            attempt: 0,
            next_probe_id: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::Connecting { .. } => Phase::Connecting,
            State::Established { .. } => Phase::Established,
            State::Backoff { .. } => Phase::Backoff,
            State::Draining { .. } => Phase::Draining,
            State::Closed => Phase::Closed,
        }
    }

    /// Whether new streams may be opened on the link.
    pub fn accepts_streams(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// Whether the link is established and its probes answer.
    pub fn is_alive(&self) -> bool {
        matches!(self.state, State::Established { alive: true, .. })
    }

    /// Starts the link: connect now.
    pub fn start(&mut self, now: Instant) {
        if let State::Idle = self.state {
            self.connect(now);
        }
    }

    /// The attempt in flight succeeded.
    pub fn handle_connected(&mut self, now: Instant) {
        if let State::Connecting { .. } = self.state {
            self.attempt = 0;
            self.state = State::Established {
                // Probe at once: a fresh link reports its latency immediately.
                next_probe: now,
                outstanding: None,
                failures: 0,
                alive: true,
                lost_seen: 0,
            };
            self.events.push_back(Event::Phase(Phase::Established));
            self.events.push_back(Event::Alive(true));
            self.on_timeout_established(now);
        }
    }

    /// The attempt in flight failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if let State::Connecting { .. } = self.state {
            self.back_off(now);
        }
    }

    /// The established connection ended (closed by the peer, idle timeout,
    /// network error). While draining, this closes the link.
    pub fn handle_connection_lost(&mut self, now: Instant) {
        match self.state {
            State::Established { alive, .. } => {
                if alive {
                    self.events.push_back(Event::Alive(false));
                }
                self.back_off(now);
            }
            State::Draining { .. } => self.close(),
            _ => {}
        }
    }

    /// Probe `id` was answered.
    pub fn handle_probe_answered(&mut self, now: Instant, id: u64) {
        if let State::Established {
            outstanding,
            failures,
            alive,
            ..
        } = &mut self.state
            && let Some((pending, sent)) = *outstanding
            && pending == id
        {
            *outstanding = None;
            *failures = 0;
            self.events.push_back(Event::Probe {
                ok: true,
                latency: Some(now.saturating_duration_since(sent)),
            });
            if !*alive {
                *alive = true;
                self.events.push_back(Event::Alive(true));
            }
        }
    }

    /// Probe `id` was refused because the peer is shutting down: retire the connection
    /// and connect again.
    pub fn handle_peer_draining(&mut self, now: Instant, id: u64) {
        if let State::Established {
            outstanding: Some((pending, _)),
            alive,
            ..
        } = self.state
            && pending == id
        {
            if alive {
                self.events.push_back(Event::Alive(false));
            }
            self.actions.push_back(Action::Retire);
            self.back_off(now);
        }
    }

    /// Probe `id` failed before its timeout (e.g. the stream was reset).
    pub fn handle_probe_failed(&mut self, now: Instant, id: u64) {
        if let State::Established {
            outstanding: Some((pending, _)),
            ..
        } = self.state
            && pending == id
        {
            self.probe_failed(now);
        }
    }

    /// New statistics sampled from the connection.
    pub fn handle_stats(&mut self, stats: ConnStats) {
        if let State::Established { lost_seen, .. } = &mut self.state {
            let lost = stats.lost_packets.saturating_sub(*lost_seen);
            *lost_seen = stats.lost_packets.max(*lost_seen);
            self.events.push_back(Event::Stats {
                rtt: stats.rtt,
                lost_packets: lost,
            });
        }
    }

    /// Stop: drain an established link, close anything else.
    pub fn handle_shutdown(&mut self, now: Instant) {
        match self.state {
            State::Established { alive, .. } => {
                if alive {
                    self.events.push_back(Event::Alive(false));
                }
                self.state = State::Draining {
                    deadline: now + self.config.drain_timeout,
                };
                self.events.push_back(Event::Phase(Phase::Draining));
            }
            State::Connecting { .. } => {
                self.actions.push_back(Action::Abort {
                    reason: AbortReason::ConnectTimeout,
                });
                self.close();
            }
            State::Idle | State::Backoff { .. } => self.close(),
            State::Draining { .. } | State::Closed => {}
        }
    }

    /// While draining: no stream is open any more.
    pub fn handle_streams_idle(&mut self) {
        if let State::Draining { .. } = self.state {
            self.actions.push_back(Action::Close);
            self.close();
        }
    }

    /// Time passed: fire whatever is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Connecting { deadline } if now >= deadline => {
                self.actions.push_back(Action::Abort {
                    reason: AbortReason::ConnectTimeout,
                });
                self.back_off(now);
            }
            State::Backoff { until } if now >= until => self.connect(now),
            State::Established { .. } => self.on_timeout_established(now),
            State::Draining { deadline } if now >= deadline => {
                self.actions.push_back(Action::Close);
                self.close();
            }
            _ => {}
        }
    }

    /// When [`Link::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline } | State::Draining { deadline } => Some(deadline),
            State::Backoff { until } => Some(until),
            State::Established {
                next_probe,
                outstanding,
                ..
            } => Some(match outstanding {
                // The next probe waits for this one's answer or timeout: a probe period
                // shorter than the timeout (Linkerd's Link allows it) must not make a past
                // `next_probe` due again and again.
                Some((_, sent)) => sent + self.config.probe_timeout,
                None => next_probe,
            }),
            State::Idle | State::Closed => None,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn on_timeout_established(&mut self, now: Instant) {
        let State::Established {
            outstanding,
            next_probe,
            ..
        } = self.state
        else {
            return;
        };
        if let Some((_, sent)) = outstanding
            && now >= sent + self.config.probe_timeout
        {
            self.probe_failed(now);
            if !self.accepts_streams() {
                return;
            }
        }
        let State::Established {
            outstanding: ref mut pending,
            next_probe: ref mut next,
            ..
        } = self.state
        else {
            return;
        };
        if pending.is_none() && now >= next_probe {
            let id = self.next_probe_id;
            self.next_probe_id += 1;
            *pending = Some((id, now));
            *next = now + self.config.probe_interval;
            self.actions.push_back(Action::Probe { id });
        }
    }

    fn probe_failed(&mut self, now: Instant) {
        let State::Established {
            outstanding,
            failures,
            alive,
            ..
        } = &mut self.state
        else {
            return;
        };
        *outstanding = None;
        *failures += 1;
        self.events.push_back(Event::Probe {
            ok: false,
            latency: None,
        });
        if *failures >= self.config.probe_failures_to_dead {
            if *alive {
                self.events.push_back(Event::Alive(false));
            }
            self.actions.push_back(Action::Abort {
                reason: AbortReason::ProbesFailed,
            });
            self.back_off(now);
        }
    }

    fn connect(&mut self, now: Instant) {
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.events.push_back(Event::Phase(Phase::Connecting));
        self.actions.push_back(Action::Connect {
            attempt: self.attempt,
        });
    }

    fn back_off(&mut self, now: Instant) {
        let delay = self.backoff_delay();
        self.state = State::Backoff { until: now + delay };
        self.events.push_back(Event::Phase(Phase::Backoff));
        self.events.push_back(Event::Reconnecting {
            attempt: self.attempt.saturating_add(1),
            delay,
        });
    }

    /// Exponential backoff with "equal jitter": the delay for attempt n is
    /// uniformly in [d/2, d] where d = min(max, initial * 2^(n-1)). Half the
    /// delay is guaranteed so a dead peer is not hammered; the other half is
    /// random so gateways that lost a peer together do not reconnect in step.
    fn backoff_delay(&mut self) -> Duration {
        let exp = self.attempt.saturating_sub(1).min(32);
        let full = self
            .config
            .backoff_initial
            .saturating_mul(1u32 << exp.min(31))
            .min(self.config.backoff_max);
        let half = full / 2;
        let span = (full - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: tiny, deterministic, good enough for jitter.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.events.push_back(Event::Phase(Phase::Closed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> LinkConfig {
        LinkConfig {
            backoff_initial: ms(100),
            backoff_max: ms(1600),
            connect_timeout: ms(1000),
            probe_interval: ms(500),
            probe_timeout: ms(300),
            probe_failures_to_dead: 2,
            drain_timeout: ms(2000),
        }
    }

    fn drain_actions(link: &mut Link) -> Vec<Action> {
        std::iter::from_fn(|| link.poll_action()).collect()
    }

    fn drain_events(link: &mut Link) -> Vec<Event> {
        std::iter::from_fn(|| link.poll_event()).collect()
    }

    fn established(t0: Instant) -> Link {
        let mut link = Link::new(config(), 7);
        link.start(t0);
        link.handle_connected(t0);
        link
    }

    #[test]
    fn a_slow_probe_with_a_period_shorter_than_its_timeout_is_awaited_not_polled() {
        let t0 = Instant::now();
        let mut link = Link::new(
            LinkConfig {
                probe_interval: ms(100),
                probe_timeout: ms(300),
                ..config()
            },
            7,
        );
        link.start(t0);
        link.handle_connected(t0);
        drain_actions(&mut link);
        // The first probe went at once; its successor is due at 100 ms, but waits for it.
        link.handle_timeout(t0 + ms(150));
        assert_eq!(
            drain_actions(&mut link),
            vec![],
            "no second probe while one is out"
        );
        assert_eq!(
            link.poll_timeout(),
            Some(t0 + ms(300)),
            "the next wake-up is the outstanding probe's timeout, not the past due time"
        );
        link.handle_probe_answered(t0 + ms(200), 0);
        assert_eq!(
            link.poll_timeout(),
            Some(t0 + ms(100)),
            "a late answer lets the next probe go at once"
        );
    }

    #[test]
    fn a_draining_peer_retires_the_connection_and_the_link_connects_again() {
        let t0 = Instant::now();
        let mut link = established(t0);
        assert_eq!(
            drain_actions(&mut link),
            vec![Action::Connect { attempt: 1 }, Action::Probe { id: 0 }]
        );
        link.handle_probe_answered(t0 + ms(1), 0);
        assert!(link.is_alive());
        link.handle_timeout(t0 + ms(500));
        assert_eq!(drain_actions(&mut link), vec![Action::Probe { id: 1 }]);
        drain_events(&mut link);
        // A refusal of another probe than the outstanding one changes nothing.
        link.handle_peer_draining(t0 + ms(501), 0);
        assert!(link.is_alive() && drain_actions(&mut link).is_empty());
        link.handle_peer_draining(t0 + ms(502), 1);
        assert_eq!(
            drain_actions(&mut link),
            vec![Action::Retire],
            "not aborted: its streams finish"
        );
        assert!(!link.is_alive() && !link.accepts_streams());
        let events = drain_events(&mut link);
        assert_eq!(events[..2], [Event::Alive(false), Event::Phase(Phase::Backoff)]);
        let next = link.poll_timeout().expect("a reconnect is scheduled");
        assert!(next <= t0 + ms(502) + config().backoff_initial, "{next:?}");
        link.handle_timeout(next);
        assert_eq!(drain_actions(&mut link), vec![Action::Connect { attempt: 1 }]);
    }

    #[test]
    fn connects_then_probes_at_once() {
        let t0 = Instant::now();
        let mut link = Link::new(config(), 1);
        assert_eq!(link.phase(), Phase::Idle);
        assert_eq!(link.poll_timeout(), None);
        link.start(t0);
        assert_eq!(drain_actions(&mut link), vec![Action::Connect { attempt: 1 }]);
        assert_eq!(link.poll_timeout(), Some(t0 + ms(1000)));
        assert!(!link.accepts_streams());
        link.handle_connected(t0 + ms(10));
        assert!(link.accepts_streams() && link.is_alive());
        assert_eq!(drain_actions(&mut link), vec![Action::Probe { id: 0 }]);
        assert_eq!(
            drain_events(&mut link),
            vec![
                Event::Phase(Phase::Connecting),
                Event::Phase(Phase::Established),
                Event::Alive(true)
            ]
        );
        link.handle_probe_answered(t0 + ms(13), 0);
        assert_eq!(
            drain_events(&mut link),
            vec![Event::Probe {
                ok: true,
                latency: Some(ms(3))
            }]
        );
        // Next probe one interval after the first was sent.
        assert_eq!(link.poll_timeout(), Some(t0 + ms(510)));
        link.handle_timeout(t0 + ms(509));
        assert_eq!(drain_actions(&mut link), vec![]);
        link.handle_timeout(t0 + ms(510));
        assert_eq!(drain_actions(&mut link), vec![Action::Probe { id: 1 }]);
    }

    #[test]
    fn unanswered_probes_kill_the_link_and_it_reconnects() {
        let t0 = Instant::now();
        let mut link = established(t0);
        drain_actions(&mut link);
        drain_events(&mut link);
        // Probe 0 times out at 300ms.
        assert_eq!(link.poll_timeout(), Some(t0 + ms(300)));
        link.handle_timeout(t0 + ms(300));
        assert_eq!(
            drain_events(&mut link),
            vec![Event::Probe {
                ok: false,
                latency: None
            }]
        );
        assert!(link.is_alive(), "one failure is not enough");
        link.handle_timeout(t0 + ms(500));
        assert_eq!(drain_actions(&mut link), vec![Action::Probe { id: 1 }]);
        // A late answer to probe 0 is ignored.
        link.handle_probe_answered(t0 + ms(600), 0);
        assert!(drain_events(&mut link).is_empty());
        link.handle_timeout(t0 + ms(800));
        assert_eq!(
            drain_actions(&mut link),
            vec![Action::Abort {
                reason: AbortReason::ProbesFailed
            }]
        );
        let events = drain_events(&mut link);
        assert_eq!(
            events[0],
            Event::Probe {
                ok: false,
                latency: None
            }
        );
        assert_eq!(events[1], Event::Alive(false));
        assert_eq!(events[2], Event::Phase(Phase::Backoff));
        assert!(matches!(events[3], Event::Reconnecting { attempt: 1, .. }));
        assert_eq!(link.phase(), Phase::Backoff);
        assert!(!link.accepts_streams());
        let until = link.poll_timeout().unwrap();
        link.handle_timeout(until);
        assert_eq!(drain_actions(&mut link), vec![Action::Connect { attempt: 1 }]);
    }

    #[test]
    fn a_failed_probe_then_an_answer_keeps_the_link_alive() {
        let t0 = Instant::now();
        let mut link = established(t0);
        drain_actions(&mut link);
        link.handle_probe_failed(t0 + ms(5), 0);
        link.handle_timeout(t0 + ms(500));
        assert_eq!(drain_actions(&mut link), vec![Action::Probe { id: 1 }]);
        link.handle_probe_answered(t0 + ms(501), 1);
        link.handle_timeout(t0 + ms(1000));
        link.handle_probe_failed(t0 + ms(1001), 2);
        assert!(link.is_alive(), "failures are consecutive only");
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter_and_resets() {
        let t0 = Instant::now();
        let mut link = Link::new(config(), 42);
        link.start(t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            link.handle_connect_failed(now);
            let until = link.poll_timeout().unwrap();
            delays.push(until - now);
            now = until;
            link.handle_timeout(now);
        }
        let caps = [100, 200, 400, 800, 1600, 1600, 1600, 1600];
        for (delay, cap) in delays.iter().zip(caps) {
            assert!(*delay >= ms(cap / 2) && *delay <= ms(cap), "{delay:?} vs {cap}");
        }
        assert_eq!(
            drain_actions(&mut link).last(),
            Some(&Action::Connect { attempt: 9 })
        );
        // An established connection resets the counter.
        link.handle_connected(now);
        link.handle_connection_lost(now);
        let delay = link.poll_timeout().unwrap() - now;
        assert!(delay <= ms(100), "{delay:?}");
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed_and_varies_between_seeds() {
        let schedule = |seed| {
            let t0 = Instant::now();
            let mut link = Link::new(config(), seed);
            link.start(t0);
            (0..6)
                .map(|_| {
                    link.handle_connect_failed(t0);
                    let d = link.poll_timeout().unwrap() - t0;
                    link.handle_timeout(t0 + d);
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(3), schedule(3));
        assert_ne!(schedule(3), schedule(4));
    }

    #[test]
    fn connect_timeout_aborts_and_backs_off() {
        let t0 = Instant::now();
        let mut link = Link::new(config(), 1);
        link.start(t0);
        drain_actions(&mut link);
        link.handle_timeout(t0 + ms(999));
        assert_eq!(link.phase(), Phase::Connecting);
        link.handle_timeout(t0 + ms(1000));
        assert_eq!(
            drain_actions(&mut link),
            vec![Action::Abort {
                reason: AbortReason::ConnectTimeout
            }]
        );
        assert_eq!(link.phase(), Phase::Backoff);
        // A late success of the abandoned attempt is ignored.
        link.handle_connected(t0 + ms(1001));
        assert_eq!(link.phase(), Phase::Backoff);
    }

    #[test]
    fn stats_report_loss_deltas() {
        let t0 = Instant::now();
        let mut link = established(t0);
        drain_events(&mut link);
        link.handle_stats(ConnStats {
            rtt: ms(2),
            lost_packets: 5,
        });
        link.handle_stats(ConnStats {
            rtt: ms(3),
            lost_packets: 8,
        });
        assert_eq!(
            drain_events(&mut link),
            vec![
                Event::Stats {
                    rtt: ms(2),
                    lost_packets: 5
                },
                Event::Stats {
                    rtt: ms(3),
                    lost_packets: 3
                }
            ]
        );
    }

    #[test]
    fn shutdown_drains_until_idle_or_deadline() {
        let t0 = Instant::now();
        let mut link = established(t0);
        drain_actions(&mut link);
        drain_events(&mut link);
        link.handle_shutdown(t0 + ms(1));
        assert_eq!(link.phase(), Phase::Draining);
        assert!(!link.accepts_streams());
        assert_eq!(
            drain_events(&mut link),
            vec![Event::Alive(false), Event::Phase(Phase::Draining)]
        );
        assert_eq!(link.poll_timeout(), Some(t0 + ms(2001)));
        link.handle_streams_idle();
        assert_eq!(drain_actions(&mut link), vec![Action::Close]);
        assert_eq!(link.phase(), Phase::Closed);
        assert_eq!(link.poll_timeout(), None);

        let mut link = established(t0);
        drain_actions(&mut link);
        link.handle_shutdown(t0);
        link.handle_timeout(t0 + ms(2000));
        assert_eq!(drain_actions(&mut link), vec![Action::Close]);
        assert_eq!(link.phase(), Phase::Closed);
        // Nothing ever again.
        link.handle_timeout(t0 + ms(100_000));
        link.start(t0);
        assert_eq!(drain_actions(&mut link), vec![]);
    }

    #[test]
    fn shutdown_while_connecting_or_backing_off_closes() {
        let t0 = Instant::now();
        let mut link = Link::new(config(), 1);
        link.start(t0);
        drain_actions(&mut link);
        link.handle_shutdown(t0);
        assert_eq!(
            drain_actions(&mut link),
            vec![Action::Abort {
                reason: AbortReason::ConnectTimeout
            }]
        );
        assert_eq!(link.phase(), Phase::Closed);

        let mut link = Link::new(config(), 1);
        link.start(t0);
        link.handle_connect_failed(t0);
        assert_eq!(drain_actions(&mut link), vec![Action::Connect { attempt: 1 }]);
        link.handle_shutdown(t0);
        assert_eq!(link.phase(), Phase::Closed);
        link.handle_timeout(t0 + ms(10_000));
        assert_eq!(drain_actions(&mut link), vec![]);
    }

    #[test]
    fn connection_lost_while_draining_closes() {
        let t0 = Instant::now();
        let mut link = established(t0);
        link.handle_shutdown(t0);
        link.handle_connection_lost(t0);
        assert_eq!(link.phase(), Phase::Closed);
    }
}
