//! Open `Destination/Get` streams, as proxies hold them, with every update timestamped
//! the moment it is read off the wire.
//!
//! Streams share HTTP/2 connections in groups (a proxy multiplexes its lookups over one
//! connection to the control plane). One task per stream reads updates and sends them,
//! with their arrival [`Instant`], to a single channel; the scenario matches them against
//! the changes it applied, so timestamps never wait on the matching.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{self as pb, update::Update as U};
use tokio::sync::mpsc;

use super::BenchError;

/// One thing a stream saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// An update arrived.
    Update {
        /// The stream's index.
        stream: usize,
        /// When it was read.
        at: Instant,
        /// What it says.
        change: Change,
    },
    /// The stream failed or the server ended it.
    Ended {
        /// The stream's index.
        stream: usize,
        /// Why.
        detail: String,
    },
}

/// The content of one `Update`, reduced to addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Addresses added (or changed).
    pub added: Vec<IpAddr>,
    /// Those of `added` that came without a TLS identity (an unmeshed endpoint, or a meshed
    /// one whose pod the controller did not know yet).
    pub unidentified: Vec<IpAddr>,
    /// Addresses removed.
    pub removed: Vec<IpAddr>,
    /// `NoEndpoints` (`exists` is irrelevant here).
    pub no_endpoints: bool,
}

impl Change {
    /// Reads a destination update.
    pub fn of(update: pb::Update) -> Self {
        let ips = |addrs: Vec<Option<linkerd2_proxy_api::net::TcpAddress>>| -> Vec<IpAddr> {
            addrs
                .into_iter()
                .flatten()
                .filter_map(|a| IpAddr::try_from(a.ip?).ok())
                .collect()
        };
        match update.update {
            Some(U::Add(set)) => {
                let (identified, unidentified): (Vec<_>, Vec<_>) =
                    set.addrs.into_iter().partition(|a| a.tls_identity.is_some());
                let unidentified = ips(unidentified.into_iter().map(|a| a.addr).collect());
                let mut added = ips(identified.into_iter().map(|a| a.addr).collect());
                added.extend(&unidentified);
                Self {
                    added,
                    unidentified,
                    ..Default::default()
                }
            }
            Some(U::Remove(set)) => Self {
                removed: ips(set.addrs.into_iter().map(Some).collect()),
                ..Default::default()
            },
            Some(U::NoEndpoints(_)) => Self {
                no_endpoints: true,
                ..Default::default()
            },
            None => Self::default(),
        }
    }

    /// Applies this change to a stream's view of its endpoints.
    pub fn apply_to(&self, addrs: &mut BTreeSet<IpAddr>) {
        if self.no_endpoints {
            addrs.clear();
        }
        for a in &self.removed {
            addrs.remove(a);
        }
        addrs.extend(self.added.iter().copied());
    }
}

/// A set of open streams and the channel their updates arrive on.
pub struct Watches {
    paths: Vec<String>,
    rx: mpsc::UnboundedReceiver<Seen>,
    // Dropping the set aborts every stream task, which closes the streams.
    _tasks: tokio::task::JoinSet<()>,
}

impl Watches {
    /// Opens one `Get` stream per path against `destination`, `per_connection` streams
    /// on each HTTP/2 connection. Returns once every connection is up; the streams' own
    /// answers arrive on [`Watches::next`] (a refused stream arrives as [`Seen::Ended`]).
    pub async fn open(
        destination: SocketAddr,
        paths: Vec<String>,
        per_connection: usize,
    ) -> Result<Self, BenchError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        let uri = format!("http://{destination}");
        for (c, chunk) in paths.chunks(per_connection.max(1)).enumerate() {
            let channel = tonic::transport::Endpoint::from_shared(uri.clone())
                .expect("a socket address is a valid URI")
                .connect()
                .await
                .map_err(|source| BenchError::Connect {
                    addr: destination,
                    source,
                })?;
            for (i, path) in chunk.iter().enumerate() {
                let stream = c * per_connection.max(1) + i;
                let client = DestinationClient::new(channel.clone());
                tasks.spawn(follow(client, stream, path.clone(), tx.clone()));
            }
        }
        Ok(Self {
            paths,
            rx,
            _tasks: tasks,
        })
    }

    /// How many streams.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The authority stream `i` follows.
    pub fn path(&self, i: usize) -> &str {
        &self.paths[i]
    }

    /// The next thing any stream saw, or `None` once `deadline` passes first.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Option<Seen> {
        tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn follow(
    mut client: DestinationClient<tonic::transport::Channel>,
    stream: usize,
    path: String,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let req = pb::GetDestination {
        scheme: "k8s".into(),
        path,
        ..Default::default()
    };
    let mut updates = match client.get(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = tx.send(Seen::Ended {
                stream,
                detail: status.to_string(),
            });
            return;
        }
    };
    loop {
        let seen = match updates.message().await {
            Ok(Some(update)) => Seen::Update {
                stream,
                at: Instant::now(),
                change: Change::of(update),
            },
            Ok(None) => Seen::Ended {
                stream,
                detail: "the server ended the stream".into(),
            },
            Err(status) => Seen::Ended {
                stream,
                detail: status.to_string(),
            },
        };
        let ended = matches!(seen, Seen::Ended { .. });
        if tx.send(seen).is_err() || ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use linkerd2_proxy_api::net::TcpAddress;

    use super::*;

    fn tcp(ip: [u8; 4]) -> TcpAddress {
        TcpAddress {
            ip: Some(std::net::IpAddr::from(ip).into()),
            port: 8080,
        }
    }

    #[test]
    fn updates_reduce_to_address_sets() {
        let mut view = BTreeSet::new();
        let add = Change::of(pb::Update {
            update: Some(U::Add(pb::WeightedAddrSet {
                addrs: vec![
                    pb::WeightedAddr {
                        addr: Some(tcp([10, 0, 0, 1])),
                        tls_identity: Some(pb::TlsIdentity::default()),
                        ..Default::default()
                    },
                    pb::WeightedAddr {
                        addr: Some(tcp([10, 0, 0, 2])),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })),
        });
        assert_eq!(add.unidentified, vec![IpAddr::from([10, 0, 0, 2])]);
        add.apply_to(&mut view);
        assert_eq!(view.len(), 2);
        let remove = Change::of(pb::Update {
            update: Some(U::Remove(pb::AddrSet {
                addrs: vec![tcp([10, 0, 0, 1])],
            })),
        });
        assert_eq!(remove.removed, vec![IpAddr::from([10, 0, 0, 1])]);
        remove.apply_to(&mut view);
        assert_eq!(view, BTreeSet::from([IpAddr::from([10, 0, 0, 2])]));
        Change::of(pb::Update {
            update: Some(U::NoEndpoints(pb::NoEndpoints { exists: true })),
        })
        .apply_to(&mut view);
        assert!(view.is_empty());
    }
}
