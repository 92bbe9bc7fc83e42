//! Fuzz-style properties on stable Rust: a seeded generator feeds the header
//! decoders random and mutated frames and the link state machine random input
//! sequences. Every failure prints the seed and input that caused it. The
//! `fuzz/` directory holds the same properties as cargo-fuzz targets for a
//! nightly toolchain.

use std::time::{Duration, Instant};

use super::header::*;
use super::link::{Action, ConnStats, Link, LinkConfig, Phase};

/// xorshift64*: deterministic from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn label(&mut self) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let len = 1 + self.below(12) as usize;
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect()
    }
}

fn random_request(rng: &mut Rng) -> Request {
    match rng.below(7) {
        0 => return Request::Probe,
        1 => return Request::Watch(Resource::ALL[rng.below(Resource::ALL.len() as u64) as usize]),
        _ => {}
    }
    let labels = 1 + rng.below(5) as usize;
    let authority = (0..labels).map(|_| rng.label()).collect::<Vec<_>>().join(".");
    let identity = if rng.below(2) == 0 {
        None
    } else {
        let name = format!(
            "{}.{}.serviceaccount.identity.linkerd.{}.local",
            rng.label(),
            rng.label(),
            rng.label()
        );
        Some(name.parse().expect("generated identities are valid"))
    };
    let protocol = [Protocol::Opaque, Protocol::Http1, Protocol::Http2][rng.below(3) as usize];
    Request::Open(Target {
        authority: Authority::new(authority).expect("generated authorities are valid"),
        port: 1 + rng.below(65535) as u16,
        protocol,
        identity,
        endpoint: match rng.below(3) {
            0 => None,
            1 => Some(std::net::Ipv4Addr::from(rng.next() as u32).into()),
            _ => Some(std::net::Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())).into()),
        },
    })
}

fn random_reply(rng: &mut Rng) -> Reply {
    if rng.below(3) == 0 {
        let app_port = (rng.below(2) == 0).then(|| 1 + rng.below(65535) as u16);
        return Reply::Accepted { app_port };
    }
    let reason = RefusalReason::ALL[rng.below(RefusalReason::ALL.len() as u64) as usize];
    let message: String = (0..rng.below(300))
        .map(|_| ['a', 'é', '≠', ' ', '😀'][rng.below(5) as usize])
        .collect();
    Reply::Refused { reason, message }
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] = rng.byte();
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.insert(i, rng.byte());
            }
            3 if !bytes.is_empty() => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes.remove(i);
            }
            _ => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
        }
    }
}

/// Checks the properties every decode result must have on `input`.
fn check_request_decode(input: &[u8]) {
    match decode_entry_request(input) {
        Ok(Progress::Complete(d)) => {
            assert!(d.consumed >= ENVELOPE_LEN && d.consumed <= input.len().min(MAX_FRAME_LEN));
            assert!((1..=VERSION).contains(&d.version), "version {}", d.version);
            // Whatever decodes re-encodes to the bytes it came from, in the lowest
            // version that carries it (never a higher one than received).
            let mut again = Vec::new();
            encode_entry_request(d.frame.link.as_ref(), &d.frame.request, &mut again);
            assert!(again[4] <= d.version, "re-encoded in version {}", again[4]);
            let mut canonical = input[..d.consumed].to_vec();
            canonical[4] = again[4];
            assert_eq!(again, canonical, "re-encoding differs");
        }
        Ok(Progress::Incomplete { needed }) => {
            assert!(
                needed > input.len(),
                "needs {needed} with {} in hand",
                input.len()
            );
            assert!(needed <= MAX_FRAME_LEN);
        }
        Err(_) => {}
    }
}

fn check_reply_decode(input: &[u8]) {
    match decode_reply(input) {
        Ok(Progress::Complete(d)) => {
            assert!(d.consumed <= input.len().min(MAX_FRAME_LEN));
            let mut again = Vec::new();
            encode_reply(&d.frame, d.version, &mut again);
            assert_eq!(again, &input[..d.consumed], "re-encoding differs");
        }
        Ok(Progress::Incomplete { needed }) => {
            assert!(needed > input.len() && needed <= MAX_FRAME_LEN);
        }
        Err(_) => {}
    }
}

#[test]
fn requests_round_trip_and_mutations_never_panic() {
    for seed in 1..3000u64 {
        let mut rng = Rng(seed);
        let request = random_request(&mut rng);
        // Half of them as a proxy entry reads them: naming their link (version 3).
        let link =
            (rng.below(2) == 0).then(|| LinkName::new(rng.label()).expect("generated labels are valid"));
        let mut bytes = Vec::new();
        encode_entry_request(link.as_ref(), &request, &mut bytes);
        assert!(bytes.len() <= MAX_FRAME_LEN);
        let Ok(Progress::Complete(d)) = decode_entry_request(&bytes) else {
            panic!("seed {seed}: {request:?} did not decode");
        };
        assert_eq!(d.frame.request, request, "seed {seed}");
        assert_eq!(d.frame.link, link, "seed {seed}");
        assert_eq!(d.consumed, bytes.len());
        for _ in 0..8 {
            let mut mutated = bytes.clone();
            mutate(&mut rng, &mut mutated);
            let result = std::panic::catch_unwind(|| check_request_decode(&mutated));
            assert!(result.is_ok(), "seed {seed}: input {mutated:02x?}");
        }
    }
}

#[test]
fn replies_round_trip_and_mutations_never_panic() {
    for seed in 1..3000u64 {
        let mut rng = Rng(seed);
        let reply = random_reply(&mut rng);
        let mut bytes = Vec::new();
        encode_reply(&reply, VERSION, &mut bytes);
        let Ok(Progress::Complete(d)) = decode_reply(&bytes) else {
            panic!("seed {seed}: {reply:?} did not decode");
        };
        // Messages may have been cut, never changed otherwise.
        match (&d.frame, &reply) {
            (
                Reply::Refused {
                    reason: a,
                    message: m,
                },
                Reply::Refused {
                    reason: b,
                    message: full,
                },
            ) => {
                assert_eq!(a, b);
                assert!(full.starts_with(m.as_str()) && m.len() <= MAX_MESSAGE_LEN);
            }
            (a, b) => assert_eq!(a, b, "seed {seed}"),
        }
        for _ in 0..8 {
            let mut mutated = bytes.clone();
            mutate(&mut rng, &mut mutated);
            let result = std::panic::catch_unwind(|| check_reply_decode(&mutated));
            assert!(result.is_ok(), "seed {seed}: input {mutated:02x?}");
        }
    }
}

#[test]
fn random_bytes_never_panic_and_respect_bounds() {
    for seed in 1..20_000u64 {
        let mut rng = Rng(seed);
        let len = rng.below(2 * MAX_FRAME_LEN as u64) as usize;
        let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Half the inputs get a valid envelope so the body parser is reached.
        if seed % 2 == 0 && input.len() >= ENVELOPE_LEN {
            input[..4].copy_from_slice(&MAGIC);
            input[4] = VERSION;
            let body = (input.len() - ENVELOPE_LEN).min(MAX_BODY_LEN) as u16;
            let body = rng.below(u64::from(body) + 1) as u16;
            input[5..7].copy_from_slice(&body.to_be_bytes());
        }
        let result = std::panic::catch_unwind(|| {
            check_request_decode(&input);
            check_reply_decode(&input);
        });
        assert!(result.is_ok(), "seed {seed}: input {input:02x?}");
    }
}

#[test]
fn link_never_breaks_its_invariants_under_random_inputs() {
    let config = LinkConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(100),
        probe_interval: Duration::from_millis(50),
        probe_timeout: Duration::from_millis(30),
        probe_failures_to_dead: 2,
        drain_timeout: Duration::from_millis(300),
    };
    let t0 = Instant::now();
    for seed in 1..500u64 {
        let mut rng = Rng(seed);
        let mut link = Link::new(config.clone(), seed);
        let mut now = t0;
        let mut shut_down = false;
        let mut last_probe = None;
        link.start(now);
        assert_eq!(link.poll_action(), Some(Action::Connect { attempt: 1 }));
        for step in 0..300 {
            now += Duration::from_millis(rng.below(60));
            match rng.below(10) {
                0 => link.handle_connected(now),
                1 => link.handle_connect_failed(now),
                2 => link.handle_connection_lost(now),
                3 => link.handle_probe_answered(now, last_probe.unwrap_or(rng.below(4))),
                4 if rng.below(4) == 0 => link.handle_peer_draining(now, last_probe.unwrap_or(rng.below(4))),
                4 => link.handle_probe_failed(now, rng.below(4)),
                5 => link.handle_stats(ConnStats {
                    rtt: Duration::from_micros(rng.below(10_000)),
                    lost_packets: rng.below(1000),
                }),
                6 if rng.below(20) == 0 => {
                    shut_down = true;
                    link.handle_shutdown(now);
                }
                7 => link.handle_streams_idle(),
                _ => {
                    if let Some(t) = link.poll_timeout() {
                        now = now.max(t);
                    }
                    link.handle_timeout(now);
                }
            }
            if let Some(t) = link.poll_timeout() {
                // Never a deadline further away than the longest configured wait.
                assert!(t <= now + Duration::from_millis(300), "seed {seed} step {step}");
            }
            while let Some(action) = link.poll_action() {
                match action {
                    Action::Connect { attempt } => {
                        assert!(!shut_down, "seed {seed} step {step}: connect after shutdown");
                        assert!(attempt >= 1);
                        assert_eq!(link.phase(), Phase::Connecting);
                    }
                    Action::Probe { id } => {
                        assert!(!shut_down, "seed {seed} step {step}: probe after shutdown");
                        assert!(last_probe.is_none_or(|p| id > p), "probe ids increase");
                        last_probe = Some(id);
                    }
                    Action::Retire => {
                        assert_eq!(
                            link.phase(),
                            Phase::Backoff,
                            "seed {seed} step {step}: a retired connection is not the link's"
                        );
                        assert!(!link.is_alive());
                    }
                    Action::Abort { .. } | Action::Close => {}
                }
            }
            while link.poll_event().is_some() {}
            assert_eq!(link.is_alive(), link.is_alive() && link.accepts_streams());
            if shut_down {
                assert!(matches!(link.phase(), Phase::Draining | Phase::Closed));
            }
        }
    }
}
