//! Session tickets a restarted gateway still accepts.
//!
//! rustls's own ticketers draw a random key per process, so a gateway that restarts
//! (a rollout, a crash) cannot resume any session it issued, and every linked gateway
//! pays a full handshake — certificate chains both ways and two signatures — exactly
//! when failover is waiting for the link. [`Tickets`] derives its key from a secret the
//! gateway keeps across restarts (its private key): the same gateway, restarted,
//! decrypts its predecessor's tickets and the link resumes.
//!
//! - Keys roll: one per [`EPOCH`] (HKDF-SHA256 of the secret, salted, with the epoch
//!   number as info); a ticket is accepted in its epoch and the next, so it lives at
//!   most two epochs, and a leaked key exposes at most that window.
//! - Tickets are ChaCha20-Poly1305 sealed, with a random nonce and the epoch
//!   authenticated: `epoch u64 | nonce (12) | ciphertext | tag (16)`. Anything else is
//!   refused without panicking (the input is attacker-controlled).
//! - A new gateway key (certificate rotation) means new ticket keys: old tickets stop
//!   working and the next link does a full handshake.
//!
//! Stateless tickets rule out 0-RTT in rustls (single use cannot be enforced), which the
//! link does not use anyway: it waits for the handshake before carrying streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use strait_identity::rustls::server::ProducesTickets;

/// How long one ticket key is used to seal tickets.
pub const EPOCH: Duration = Duration::from_secs(12 * 3600);
const SALT: &[u8] = b"strait gateway session tickets v1";
const HEADER: usize = 8 + NONCE_LEN;

/// A ticketer whose keys derive from a secret that outlives the process.
pub struct Tickets {
    prk: hkdf::Prk,
    rng: SystemRandom,
    clock: fn() -> u64,
    /// Tickets accepted (sessions resumed by a linking gateway).
    accepted: Arc<AtomicU64>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / EPOCH.as_secs())
}

impl Tickets {
    /// Keys from `secret` (the gateway's private key, DER); `accepted` counts resumptions.
    pub fn new(secret: &[u8], accepted: Arc<AtomicU64>) -> Self {
        Self::with_clock(secret, accepted, epoch_now)
    }

    fn with_clock(secret: &[u8], accepted: Arc<AtomicU64>, clock: fn() -> u64) -> Self {
        Tickets {
            prk: hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret),
            rng: SystemRandom::new(),
            clock,
            accepted,
        }
    }

    fn key(&self, epoch: u64) -> Option<LessSafeKey> {
        let info = epoch.to_be_bytes();
        let info = [&info[..]];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn seal(&self, epoch: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.key(epoch)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(HEADER + plain.len() + key.algorithm().tag_len());
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(epoch.to_be_bytes()),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open(&self, now: u64, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < HEADER + aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let epoch = u64::from_be_bytes(cipher[..8].try_into().ok()?);
        if epoch != now && epoch.checked_add(1) != Some(now) {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&cipher[8..HEADER]).ok()?;
        let mut body = cipher[HEADER..].to_vec();
        let plain = self
            .key(epoch)?
            .open_in_place(nonce, Aad::from(epoch.to_be_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // A ticket sealed at the end of an epoch still opens through the next one.
        u32::try_from(EPOCH.as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal((self.clock)(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.open((self.clock)(), cipher)?;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickets(secret: &[u8]) -> Tickets {
        Tickets::with_clock(secret, Arc::default(), || 1000)
    }

    #[test]
    fn a_restarted_gateway_opens_its_predecessors_tickets() {
        let before = tickets(b"the gateway key");
        let ticket = before.encrypt(b"session state").unwrap();
        let after = tickets(b"the gateway key");
        assert_eq!(after.decrypt(&ticket).unwrap(), b"session state");
        assert_eq!(after.accepted.load(Ordering::Relaxed), 1);
        // Another key (a rotated certificate, another gateway) opens nothing.
        let other = tickets(b"another key");
        assert_eq!(other.decrypt(&ticket), None);
        assert_eq!(other.accepted.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn tickets_live_two_epochs_and_tampering_is_refused() {
        let t = tickets(b"k");
        let ticket = t.seal(999, b"x").unwrap();
        assert_eq!(t.open(999, &ticket).unwrap(), b"x");
        assert_eq!(t.open(1000, &ticket).unwrap(), b"x");
        assert_eq!(t.open(1001, &ticket), None, "expired");
        assert_eq!(t.open(998, &ticket), None, "from the future");
        // Relabelled to a current epoch: the epoch is authenticated.
        let mut relabelled = ticket.clone();
        relabelled[..8].copy_from_slice(&1001u64.to_be_bytes());
        assert_eq!(t.open(1001, &relabelled), None);
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert_eq!(t.open(999, &bad), None, "byte {i} flipped");
        }
        for len in 0..ticket.len() {
            assert_eq!(t.open(999, &ticket[..len]), None, "cut to {len}");
        }
        // Two tickets of the same state differ (random nonces).
        assert_ne!(t.seal(999, b"x").unwrap(), ticket);
    }
}
