//! The `strt` stream-open header of the cross-cluster path and its reply, as bytes
//! (sans-IO: no socket, no clock).
//!
//! It lives in the proxy crate because two hops speak it: a proxy opening a
//! cross-cluster connection at its local gateway's proxy entry (TCP), and a gateway
//! opening a stream to the remote gateway (one bidirectional QUIC stream per relayed
//! connection). `strait_gateway::proto::header` re-exports this module. The opening
//! side writes one [`Request`] frame and may pipeline payload right behind it; the
//! accepting side answers with one [`Reply`] frame before any payload of its own,
//! or with a refusal and the end of the stream.
//!
//! Both frames share one envelope, all integers big-endian:
//!
//! ```text
//! magic "strt" (4) | version u8 | body length u16 | body (length bytes)
//! ```
//!
//! Request body (version 1, and version 2 which adds the endpoint):
//!
//! ```text
//! kind u8 (1 = open, 2 = probe, 3 = watch)
//! open:  protocol u8 | port u16 | authority len u8 | authority | identity len u8 | identity
//!        version 2, optional: endpoint len u8 (4 or 16) | endpoint address (IPv4 or IPv6)
//! probe: nothing
//! watch: resource u8 (1 = services, 2 = pods)
//! ```
//!
//! A watch asks the accepting gateway for its cluster's catalog: after an acceptance
//! the stream carries the accepting side's frames of one resource's watch (the
//! mirror's catalog codec, `strait_mirror::catalog`) until either side ends it. It is
//! how a linked cluster's mirror reads exported services through the link instead of
//! through the target's API server.
//!
//! `protocol` is 0 opaque, 1 HTTP/1, 2 HTTP/2. The authority is a DNS name or
//! IPv4 literal (1–253 bytes, lowercase LDH labels). The identity (0 bytes = none)
//! is the mesh identity the client expects of the server behind the gateway.
//! The optional endpoint names one endpoint of the service, by its address in the
//! accepting cluster: a client proxy that balances requests over a remote service's
//! endpoints (their addresses come from the mirror) opens one stream per endpoint, and
//! the accepting gateway delivers each to the endpoint it names while that endpoint is
//! ready, else to any eligible one.
//!
//! Version 3 (requests to a gateway's proxy entry only) names the link the request is
//! for: one entry serves every link of its gateway, and the opener says which:
//!
//! ```text
//! link len u8 (1-63) | link (the Link's targetClusterName, a DNS label) | a version-2 body
//! ```
//!
//! The entry reads the link, opens the stream on it and forwards the inner request, which
//! it encodes again in the lowest version that carries it: the link never travels between
//! gateways, so a remote gateway of any version understands what reaches it. A gateway's
//! ingress that receives a version-3 request anyway (nothing sends one there) ignores the
//! link.
//!
//! A request is encoded in the lowest version that carries it: one naming its link in
//! version 3, an open naming an endpoint in version 2, everything else in version 1,
//! byte for byte as before version 2 existed. An entry that speaks only version 2 (one
//! entry per link, before version 3) refuses a version-3 request with
//! `unsupported-version`; the opener then opens again without the link, which such an
//! entry does not need. So a peer that speaks only version 1 (a linked cluster not yet upgraded)
//! understands every request but a named open, which it refuses with
//! `unsupported-version`; the opener then opens again without the endpoint.
//!
//! Reply body (version 1):
//!
//! ```text
//! code u8 (0 = accepted, else a refusal reason) | message len u8 | message (UTF-8)
//! accepted only, optional: app port u16 (an acceptance's message is empty)
//! ```
//!
//! The app port of an acceptance is the application port of the endpoint the
//! accepting gateway chose (the ingress knows it from its Destination lookup, the
//! opener only knows the service port). A client proxy names it in the Linkerd
//! transport header inside its TLS session, so a server proxy that is not behind
//! iptables (explicit capture) forwards to the right port.
//!
//! Draining: a gateway that is shutting down refuses probes and watches on its links
//! with `shutting-down`, lets the streams it relays finish (for its drain period), ends
//! catalog watches, and still relays an open that arrives before the linking side has
//! learned of the drain. A linking gateway whose probe is refused that way stops opening
//! streams on that connection and links again (to the same address, where a successor
//! may answer), instead of waiting for failed probes to declare the link dead and cut the
//! streams still open on it.
//!
//! Version negotiation: a peer that does not speak the request's version answers
//! with a reply in its own highest version whose code is `unsupported-version`;
//! the opener learns that version from the reply envelope. Nothing after the
//! envelope's declared length belongs to the frame: decoders report how many
//! bytes they consumed and leave the rest (pipelined payload) to the relay.
//!
//! Decoding is strict (unknown kinds, codes and protocols, trailing bytes inside
//! the body, bad names and zero ports are errors) and bounded: a body longer
//! than [`MAX_BODY_LEN`] is refused before it is buffered.

use std::fmt;
use std::net::IpAddr;

use strait_identity::IdentityName;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"strt";
/// The highest version this side speaks (it speaks every version from 1).
pub const VERSION: u8 = 3;
/// The first version whose open may name an endpoint ([`Target::endpoint`]).
pub const ENDPOINT_VERSION: u8 = 2;
/// The first version whose requests may name their link ([`EntryRequest::link`]).
pub const LINK_VERSION: u8 = 3;
/// Longest link name (a DNS label).
pub const MAX_LINK_LEN: usize = 63;
/// Envelope length: magic, version, body length.
pub const ENVELOPE_LEN: usize = 7;
/// Largest body accepted: two 253-byte names, an IPv6 endpoint, a 63-byte link name and
/// the fixed fields, rounded up.
pub const MAX_BODY_LEN: usize = 600;
/// Longest authority (a DNS name).
pub const MAX_AUTHORITY_LEN: usize = 253;
/// Longest refusal message; longer messages are cut at a character boundary.
pub const MAX_MESSAGE_LEN: usize = 255;
/// Longest frame of either kind, envelope included: what a reader must be
/// ready to buffer.
pub const MAX_FRAME_LEN: usize = ENVELOPE_LEN + MAX_BODY_LEN;

const KIND_OPEN: u8 = 1;
const KIND_PROBE: u8 = 2;
const KIND_WATCH: u8 = 3;

/// How the bytes of a relayed connection are to be treated downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Opaque TCP: relay bytes as they are.
    Opaque,
    /// The client speaks HTTP/1.x.
    Http1,
    /// The client speaks HTTP/2.
    Http2,
}

impl Protocol {
    fn code(self) -> u8 {
        match self {
            Protocol::Opaque => 0,
            Protocol::Http1 => 1,
            Protocol::Http2 => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Protocol::Opaque),
            1 => Some(Protocol::Http1),
            2 => Some(Protocol::Http2),
            _ => None,
        }
    }
}

/// A validated target authority: a lowercase DNS name or IPv4 literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authority(String);

impl Authority {
    /// Validates `name`: 1–253 bytes, dot-separated labels of 1–63 lowercase
    /// letters, digits and inner hyphens.
    pub fn new(name: impl Into<String>) -> Result<Self, HeaderError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_AUTHORITY_LEN {
            return Err(HeaderError::BadAuthority {
                authority: name,
                reason: "length must be 1-253 bytes",
            });
        }
        for label in name.split('.') {
            let reason = if label.is_empty() || label.len() > 63 {
                Some("each dot-separated label must be 1-63 characters")
            } else if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                Some("only lowercase letters, digits, '-' and '.' are allowed")
            } else if label.starts_with('-') || label.ends_with('-') {
                Some("a label cannot start or end with '-'")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(HeaderError::BadAuthority {
                    authority: name,
                    reason,
                });
            }
        }
        Ok(Authority(name))
    }

    /// The authority as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a link: the linked cluster's name (a Link's `targetClusterName`), a
/// DNS label of 1-63 lowercase letters, digits and inner hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkName(String);

impl LinkName {
    /// Validates `name` as a DNS label.
    pub fn new(name: impl Into<String>) -> Result<Self, HeaderError> {
        let name = name.into();
        if name.contains('.') || name.len() > MAX_LINK_LEN {
            return Err(HeaderError::BadLink {
                link: name,
                reason: "a link name is one DNS label of 1-63 characters (no '.')",
            });
        }
        match Authority::new(name) {
            Ok(Authority(name)) => Ok(LinkName(name)),
            Err(HeaderError::BadAuthority { authority, reason }) => Err(HeaderError::BadLink {
                link: authority,
                reason,
            }),
            Err(other) => Err(other),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an opened stream is to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service authority in the remote cluster, e.g.
    /// `myapp.default.svc.cluster.local`.
    pub authority: Authority,
    /// The service port (never 0).
    pub port: u16,
    /// How the relayed bytes should be treated.
    pub protocol: Protocol,
    /// The identity the client expects of the server, if it said.
    pub identity: Option<IdentityName>,
    /// The endpoint of the service to deliver to, by its address in the accepting
    /// cluster, if the client balances over them itself (see the module docs).
    pub endpoint: Option<IpAddr>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.authority, self.port)
    }
}

/// What a [`Request::Watch`] asks a gateway's cluster for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Every Service.
    Services,
    /// Meshed pods, reduced to what identifies their service account.
    Pods,
}

impl Resource {
    /// Every resource, in code order.
    pub const ALL: [Resource; 2] = [Resource::Services, Resource::Pods];

    fn code(self) -> u8 {
        match self {
            Resource::Services => 1,
            Resource::Pods => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Resource::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::Pods => "pods",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first frame on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Relay this stream to `Target`.
    Open(Target),
    /// A liveness probe: answer immediately, relay nothing.
    Probe,
    /// Stream the accepting gateway's cluster catalog of one resource.
    Watch(Resource),
}

/// A request as a gateway's proxy entry reads it (see the module docs on version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRequest {
    /// The link the opener named, if it did (an entry of one link needs none).
    pub link: Option<LinkName>,
    /// The request to forward on that link.
    pub request: Request,
}

/// Why the accepting gateway refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The target authority is not known in this cluster.
    UnknownTarget,
    /// The target is known but has no endpoint to connect to.
    NoEndpoints,
    /// Connecting to the chosen endpoint failed.
    ConnectFailed,
    /// The endpoint's identity is not the one the client expects.
    IdentityMismatch,
    /// The request's version is not spoken here (see the reply's version).
    UnsupportedVersion,
    /// The request could not be decoded.
    Malformed,
    /// The gateway is shutting down and takes no new streams.
    ShuttingDown,
    /// Too many streams are open.
    Overloaded,
    /// The gateway's link to the target cluster is down (sent by a gateway's proxy
    /// entry to a local proxy; never on a link).
    LinkDown,
    /// The gateway does not serve what was asked (a watch to a gateway that does not
    /// serve its cluster's catalog).
    NotServed,
}

impl RefusalReason {
    /// Every reason, in code order.
    pub const ALL: [RefusalReason; 10] = [
        RefusalReason::UnknownTarget,
        RefusalReason::NoEndpoints,
        RefusalReason::ConnectFailed,
        RefusalReason::IdentityMismatch,
        RefusalReason::UnsupportedVersion,
        RefusalReason::Malformed,
        RefusalReason::ShuttingDown,
        RefusalReason::Overloaded,
        RefusalReason::LinkDown,
        RefusalReason::NotServed,
    ];

    fn code(self) -> u8 {
        match self {
            RefusalReason::UnknownTarget => 1,
            RefusalReason::NoEndpoints => 2,
            RefusalReason::ConnectFailed => 3,
            RefusalReason::IdentityMismatch => 4,
            RefusalReason::UnsupportedVersion => 5,
            RefusalReason::Malformed => 6,
            RefusalReason::ShuttingDown => 7,
            RefusalReason::Overloaded => 8,
            RefusalReason::LinkDown => 9,
            RefusalReason::NotServed => 10,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        RefusalReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A stable lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownTarget => "unknown-target",
            RefusalReason::NoEndpoints => "no-endpoints",
            RefusalReason::ConnectFailed => "connect-failed",
            RefusalReason::IdentityMismatch => "identity-mismatch",
            RefusalReason::UnsupportedVersion => "unsupported-version",
            RefusalReason::Malformed => "malformed",
            RefusalReason::ShuttingDown => "shutting-down",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::LinkDown => "link-down",
            RefusalReason::NotServed => "not-served",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accepting side's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The stream is connected to the target; payload follows.
    Accepted {
        /// The application port of the endpoint the stream was delivered to, when
        /// the accepting side knows it (see the module docs).
        app_port: Option<u16>,
    },
    /// The stream is refused; the stream ends after this frame.
    Refused {
        /// Why.
        reason: RefusalReason,
        /// For the operator (at most [`MAX_MESSAGE_LEN`] bytes).
        message: String,
    },
}

/// A decoded frame and how many bytes of the input it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The frame.
    pub frame: T,
    /// The envelope version it was sent with.
    pub version: u8,
    /// Bytes consumed; anything after belongs to the payload.
    pub consumed: usize,
}

/// The outcome of decoding a prefix of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// A whole frame.
    Complete(Decoded<T>),
    /// Not enough bytes yet: at least `needed` in total are required.
    Incomplete {
        /// The total input length at which decoding can make progress.
        needed: usize,
    },
}

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The stream does not start with `strt`: not a Strait gateway peer.
    #[error("stream does not start with the gateway header magic (found {found:02x?})")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version this side does not speak; answer with
    /// [`RefusalReason::UnsupportedVersion`].
    #[error("header version {version} is not supported (this side speaks 1 to {VERSION})")]
    UnsupportedVersion {
        /// The version received.
        version: u8,
    },
    /// The declared body length exceeds [`MAX_BODY_LEN`].
    #[error("header body of {len} bytes exceeds the limit of {MAX_BODY_LEN}")]
    BodyTooLong {
        /// The declared length.
        len: usize,
    },
    /// The body ended before a field did.
    #[error("header body is truncated: {field} needs {needed} more bytes")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The body continues after the last field.
    #[error("header body has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// An unknown request kind.
    #[error("unknown request kind {0}")]
    UnknownKind(u8),
    /// An unknown protocol hint.
    #[error("unknown protocol hint {0}")]
    UnknownProtocol(u8),
    /// An unknown watch resource.
    #[error("unknown watch resource {0}")]
    UnknownResource(u8),
    /// An unknown reply code.
    #[error("unknown reply code {0}")]
    UnknownReplyCode(u8),
    /// Port 0.
    #[error("target port must be 1-65535, found 0")]
    ZeroPort,
    /// The authority is not a valid name.
    #[error("target authority {authority:?} is invalid: {reason}")]
    BadAuthority {
        /// What was received (lossily decoded).
        authority: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The expected identity is not a mesh identity.
    #[error("expected server identity {identity:?} is not a mesh identity")]
    BadIdentity {
        /// What was received (lossily decoded).
        identity: String,
    },
    /// The link name is not a DNS label.
    #[error("link name {link:?} is invalid: {reason}")]
    BadLink {
        /// What was received (lossily decoded).
        link: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The endpoint address is neither 4 nor 16 bytes.
    #[error("endpoint address must be 4 (IPv4) or 16 (IPv6) bytes, found {0}")]
    BadEndpoint(usize),
    /// The refusal message is not UTF-8.
    #[error("refusal message is not UTF-8")]
    BadMessage,
    /// An acceptance carries a message (only refusals explain themselves).
    #[error("an acceptance carries no message, found {0} bytes")]
    AcceptanceMessage(usize),
}

impl HeaderError {
    /// The refusal to answer this error with.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            HeaderError::UnsupportedVersion { .. } => RefusalReason::UnsupportedVersion,
            _ => RefusalReason::Malformed,
        }
    }
}

/// Appends the encoding of `request` to `out`, in the lowest version that carries it
/// (see the module docs).
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    encode_entry_request(None, request, out);
}

/// Appends the encoding of `request` for a gateway's proxy entry, naming `link` when
/// given (version 3; see the module docs), else as [`encode_request`] does.
pub fn encode_entry_request(link: Option<&LinkName>, request: &Request, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(64);
    let mut version = 1;
    if let Some(link) = link {
        version = LINK_VERSION;
        push_short(&mut body, link.as_str().as_bytes());
    }
    match request {
        Request::Probe => body.push(KIND_PROBE),
        Request::Watch(resource) => body.extend_from_slice(&[KIND_WATCH, resource.code()]),
        Request::Open(target) => {
            body.push(KIND_OPEN);
            body.push(target.protocol.code());
            body.extend_from_slice(&target.port.to_be_bytes());
            push_short(&mut body, target.authority.as_str().as_bytes());
            push_short(
                &mut body,
                target
                    .identity
                    .as_ref()
                    .map_or(&[][..], |i| i.as_str().as_bytes()),
            );
            if let Some(ip) = target.endpoint {
                version = version.max(ENDPOINT_VERSION);
                match ip {
                    IpAddr::V4(ip) => push_short(&mut body, &ip.octets()),
                    IpAddr::V6(ip) => push_short(&mut body, &ip.octets()),
                }
            }
        }
    }
    envelope(version, &body, out);
}

/// Appends the encoding of `reply` (in `version`, normally [`VERSION`]) to
/// `out`. Messages are cut to [`MAX_MESSAGE_LEN`] bytes.
pub fn encode_reply(reply: &Reply, version: u8, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(64);
    match reply {
        Reply::Accepted { app_port } => {
            body.push(0);
            body.push(0);
            if let Some(port) = app_port {
                body.extend_from_slice(&port.to_be_bytes());
            }
        }
        Reply::Refused { reason, message } => {
            body.push(reason.code());
            push_short(&mut body, truncate_utf8(message, MAX_MESSAGE_LEN).as_bytes());
        }
    }
    envelope(version, &body, out);
}

/// Decodes a request from the start of `input` (a version-3 request's link is read
/// and left out: only a proxy entry needs it, see [`decode_entry_request`]).
pub fn decode_request(input: &[u8]) -> Result<Progress<Request>, HeaderError> {
    Ok(match decode_entry_request(input)? {
        Progress::Complete(d) => Progress::Complete(Decoded {
            frame: d.frame.request,
            version: d.version,
            consumed: d.consumed,
        }),
        Progress::Incomplete { needed } => Progress::Incomplete { needed },
    })
}

/// Decodes a request as a gateway's proxy entry reads it: with the link a version-3
/// request names.
pub fn decode_entry_request(input: &[u8]) -> Result<Progress<EntryRequest>, HeaderError> {
    decode_frame(input, |version, body| {
        let mut r = Reader::new(body);
        let link = if version >= LINK_VERSION {
            let name = r.short("link")?;
            Some(LinkName::new(String::from_utf8_lossy(name).into_owned())?)
        } else {
            None
        };
        let request = match r.u8("kind")? {
            KIND_PROBE => Request::Probe,
            KIND_WATCH => {
                let code = r.u8("resource")?;
                Request::Watch(Resource::from_code(code).ok_or(HeaderError::UnknownResource(code))?)
            }
            KIND_OPEN => {
                let protocol = r.u8("protocol")?;
                let protocol = Protocol::from_code(protocol).ok_or(HeaderError::UnknownProtocol(protocol))?;
                let port = r.u16("port")?;
                if port == 0 {
                    return Err(HeaderError::ZeroPort);
                }
                let authority = r.short("authority")?;
                let authority = Authority::new(String::from_utf8_lossy(authority).into_owned())?;
                let identity = r.short("identity")?;
                let identity = if identity.is_empty() {
                    None
                } else {
                    let text = String::from_utf8_lossy(identity).into_owned();
                    Some(
                        text.parse::<IdentityName>()
                            .map_err(|_| HeaderError::BadIdentity { identity: text })?,
                    )
                };
                let endpoint = if r.remaining() == 0 || version < ENDPOINT_VERSION {
                    None
                } else {
                    let ip = r.short("endpoint")?;
                    Some(match <[u8; 4]>::try_from(ip) {
                        Ok(v4) => IpAddr::from(v4),
                        Err(_) => IpAddr::from(
                            <[u8; 16]>::try_from(ip).map_err(|_| HeaderError::BadEndpoint(ip.len()))?,
                        ),
                    })
                };
                Request::Open(Target {
                    authority,
                    port,
                    protocol,
                    identity,
                    endpoint,
                })
            }
            other => return Err(HeaderError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(EntryRequest { link, request })
    })
}

/// Decodes a reply from the start of `input`. Replies in any version decode
/// (the envelope is stable); a refusal's [`Decoded::version`] tells the
/// opener which version the peer speaks.
pub fn decode_reply(input: &[u8]) -> Result<Progress<Reply>, HeaderError> {
    let any_version = true;
    decode_envelope(input, any_version, |_, body| {
        let mut r = Reader::new(body);
        let code = r.u8("code")?;
        let message = r.short("message")?;
        let message = std::str::from_utf8(message)
            .map_err(|_| HeaderError::BadMessage)?
            .to_owned();
        if code == 0 {
            if !message.is_empty() {
                return Err(HeaderError::AcceptanceMessage(message.len()));
            }
            let app_port = if r.remaining() == 2 {
                match r.u16("app port")? {
                    0 => return Err(HeaderError::ZeroPort),
                    port => Some(port),
                }
            } else {
                None
            };
            r.finish()?;
            return Ok(Reply::Accepted { app_port });
        }
        r.finish()?;
        let reason = RefusalReason::from_code(code).ok_or(HeaderError::UnknownReplyCode(code))?;
        Ok(Reply::Refused { reason, message })
    })
}

fn decode_frame<T>(
    input: &[u8],
    body: impl FnOnce(u8, &[u8]) -> Result<T, HeaderError>,
) -> Result<Progress<T>, HeaderError> {
    decode_envelope(input, false, body)
}

fn decode_envelope<T>(
    input: &[u8],
    any_version: bool,
    body: impl FnOnce(u8, &[u8]) -> Result<T, HeaderError>,
) -> Result<Progress<T>, HeaderError> {
    // Check the magic on whatever prefix we have, so a non-gateway peer is
    // refused at its first bytes instead of after a stall.
    let have = input.len().min(MAGIC.len());
    if input[..have] != MAGIC[..have] {
        let mut found = [0; 4];
        found[..have].copy_from_slice(&input[..have]);
        return Err(HeaderError::BadMagic { found });
    }
    if input.len() < ENVELOPE_LEN {
        return Ok(Progress::Incomplete { needed: ENVELOPE_LEN });
    }
    let version = input[4];
    if !any_version && !(1..=VERSION).contains(&version) {
        return Err(HeaderError::UnsupportedVersion { version });
    }
    let len = usize::from(u16::from_be_bytes([input[5], input[6]]));
    if len > MAX_BODY_LEN {
        return Err(HeaderError::BodyTooLong { len });
    }
    let total = ENVELOPE_LEN + len;
    if input.len() < total {
        return Ok(Progress::Incomplete { needed: total });
    }
    let frame = body(version, &input[ENVELOPE_LEN..total])?;
    Ok(Progress::Complete(Decoded {
        frame,
        version,
        consumed: total,
    }))
}

fn envelope(version: u8, body: &[u8], out: &mut Vec<u8>) {
    // Every body built by the encoders is bounded by construction (two short
    // strings plus a few fixed bytes), well under MAX_BODY_LEN.
    debug_assert!(body.len() <= MAX_BODY_LEN);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u8::MAX));
    out.push(len as u8);
    out.extend_from_slice(&bytes[..len]);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Self {
        Reader { body, at: 0 }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], HeaderError> {
        let rest = &self.body[self.at..];
        if rest.len() < n {
            return Err(HeaderError::Truncated {
                field,
                needed: n - rest.len(),
            });
        }
        self.at += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HeaderError> {
        Ok(self.take(field, 1)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HeaderError> {
        let b = self.take(field, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn short(&mut self, field: &'static str) -> Result<&'a [u8], HeaderError> {
        let len = self.u8(field)?;
        self.take(field, usize::from(len))
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.at
    }

    fn finish(self) -> Result<(), HeaderError> {
        match self.body.len() - self.at {
            0 => Ok(()),
            extra => Err(HeaderError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            authority: Authority::new("myapp.default.svc.cluster.local").unwrap(),
            port: 8080,
            protocol: Protocol::Http2,
            identity: Some(
                "myapp.default.serviceaccount.identity.linkerd.cluster.local"
                    .parse()
                    .unwrap(),
            ),
            endpoint: None,
        }
    }

    fn encoded(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(request, &mut out);
        out
    }

    /// An envelope around a hand-built body.
    fn raw(version: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(version);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// An open body with the given fields.
    fn open_body(protocol: u8, port: u16, authority: &[u8], identity: &[u8]) -> Vec<u8> {
        let mut b = vec![KIND_OPEN, protocol];
        b.extend_from_slice(&port.to_be_bytes());
        b.push(authority.len() as u8);
        b.extend_from_slice(authority);
        b.push(identity.len() as u8);
        b.extend_from_slice(identity);
        b
    }

    #[test]
    fn open_round_trips_with_pipelined_payload() {
        let request = Request::Open(target());
        let mut bytes = encoded(&request);
        let frame_len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let Progress::Complete(d) = decode_request(&bytes).unwrap() else {
            panic!("complete frame expected")
        };
        assert_eq!(d.frame, request);
        assert_eq!(d.version, 1, "an open naming no endpoint is version 1");
        assert_eq!(d.consumed, frame_len);
        assert_eq!(&bytes[d.consumed..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn an_endpoint_hint_round_trips_and_its_absence_keeps_the_old_encoding() {
        for ip in ["10.42.0.7", "fd00:5::7"] {
            let request = Request::Open(Target {
                endpoint: Some(ip.parse().unwrap()),
                ..target()
            });
            let bytes = encoded(&request);
            let Progress::Complete(d) = decode_request(&bytes).unwrap() else {
                panic!("complete frame expected")
            };
            assert_eq!(d.frame, request);
            assert_eq!(d.version, ENDPOINT_VERSION, "a named open needs version 2");
            assert_eq!(d.consumed, bytes.len());
        }
        // Without a hint: version 1, the body ending at the identity, byte for byte as
        // before version 2 existed, so version-1 peers understand it.
        let t = target();
        let identity = t.identity.as_ref().unwrap().as_str().as_bytes();
        let body = open_body(2, 8080, t.authority.as_str().as_bytes(), identity);
        assert_eq!(encoded(&Request::Open(t)), raw(1, &body));
        assert_eq!(encoded(&Request::Probe), raw(1, &[KIND_PROBE]));
        // Version 1 has no endpoint: bytes after the identity are trailing.
        let mut b = body.clone();
        b.extend_from_slice(&[4, 10, 0, 0, 7]);
        assert_eq!(
            decode_request(&raw(1, &b)),
            Err(HeaderError::TrailingBytes { extra: 5 })
        );
        // An address of any other length is refused, naming it.
        for len in [0usize, 5, 15, 17] {
            let mut b = body.clone();
            b.push(len as u8);
            b.extend(std::iter::repeat_n(1u8, len));
            assert_eq!(decode_request(&raw(2, &b)), Err(HeaderError::BadEndpoint(len)));
        }
        let mut b = body.clone();
        b.extend_from_slice(&[4, 10, 0]);
        assert_eq!(
            decode_request(&raw(2, &b)),
            Err(HeaderError::Truncated {
                field: "endpoint",
                needed: 2
            })
        );
    }

    #[test]
    fn open_without_identity_and_probe_round_trip() {
        for request in [
            Request::Open(Target {
                identity: None,
                protocol: Protocol::Opaque,
                ..target()
            }),
            Request::Probe,
            Request::Watch(Resource::Services),
            Request::Watch(Resource::Pods),
        ] {
            let bytes = encoded(&request);
            let Progress::Complete(d) = decode_request(&bytes).unwrap() else {
                panic!("complete frame expected")
            };
            assert_eq!(d.frame, request);
            assert_eq!(d.consumed, bytes.len());
        }
    }

    #[test]
    fn every_prefix_is_incomplete_with_a_growing_need() {
        let bytes = encoded(&Request::Open(target()));
        for cut in 0..bytes.len() {
            match decode_request(&bytes[..cut]).unwrap() {
                Progress::Incomplete { needed } => {
                    assert!(needed > cut, "needed {needed} at {cut}");
                    assert!(needed <= bytes.len());
                }
                Progress::Complete(_) => panic!("complete at {cut} of {}", bytes.len()),
            }
        }
    }

    #[test]
    fn bad_magic_is_refused_at_the_first_byte() {
        assert_eq!(
            decode_request(b"G").unwrap_err(),
            HeaderError::BadMagic { found: *b"G\0\0\0" }
        );
        assert_eq!(
            decode_request(b"GET / HTTP/1.1\r\n").unwrap_err(),
            HeaderError::BadMagic { found: *b"GET " }
        );
    }

    #[test]
    fn other_versions_are_refused_with_the_version() {
        for version in [0, VERSION + 1, u8::MAX] {
            let mut bytes = encoded(&Request::Probe);
            bytes[4] = version;
            let err = decode_request(&bytes).unwrap_err();
            assert_eq!(err, HeaderError::UnsupportedVersion { version });
            assert_eq!(err.refusal(), RefusalReason::UnsupportedVersion);
            // Known before the body arrives.
            assert_eq!(
                decode_request(&bytes[..ENVELOPE_LEN]).unwrap_err(),
                HeaderError::UnsupportedVersion { version }
            );
        }
        // Every version from 1 decodes (version 3 puts the link first: tested below).
        for version in 1..LINK_VERSION {
            let mut bytes = encoded(&Request::Probe);
            bytes[4] = version;
            assert!(matches!(decode_request(&bytes), Ok(Progress::Complete(_))));
        }
    }

    #[test]
    fn oversized_bodies_are_refused_before_buffering() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        bytes.extend_from_slice(&(MAX_BODY_LEN as u16 + 1).to_be_bytes());
        assert_eq!(
            decode_request(&bytes).unwrap_err(),
            HeaderError::BodyTooLong {
                len: MAX_BODY_LEN + 1
            }
        );
        assert_eq!(
            decode_reply(&bytes).unwrap_err(),
            HeaderError::BodyTooLong {
                len: MAX_BODY_LEN + 1
            }
        );
    }

    #[test]
    fn malformed_bodies_have_precise_errors() {
        let id = b"a.b.serviceaccount.identity.linkerd.cluster.local";
        let cases: Vec<(Vec<u8>, HeaderError)> = vec![
            (
                raw(1, &[]),
                HeaderError::Truncated {
                    field: "kind",
                    needed: 1,
                },
            ),
            (raw(1, &[9]), HeaderError::UnknownKind(9)),
            (raw(1, &[KIND_PROBE, 0]), HeaderError::TrailingBytes { extra: 1 }),
            (
                raw(1, &[KIND_WATCH]),
                HeaderError::Truncated {
                    field: "resource",
                    needed: 1,
                },
            ),
            (raw(1, &[KIND_WATCH, 3]), HeaderError::UnknownResource(3)),
            (raw(1, &[KIND_WATCH, 0]), HeaderError::UnknownResource(0)),
            (
                raw(1, &[KIND_WATCH, 1, 1]),
                HeaderError::TrailingBytes { extra: 1 },
            ),
            (
                raw(1, &[KIND_OPEN]),
                HeaderError::Truncated {
                    field: "protocol",
                    needed: 1,
                },
            ),
            (raw(1, &[KIND_OPEN, 7]), HeaderError::UnknownProtocol(7)),
            (
                raw(1, &[KIND_OPEN, 0, 1]),
                HeaderError::Truncated {
                    field: "port",
                    needed: 1,
                },
            ),
            (raw(1, &open_body(0, 0, b"a", b"")), HeaderError::ZeroPort),
            (
                raw(1, &[KIND_OPEN, 0, 0, 80, 5, b'a']),
                HeaderError::Truncated {
                    field: "authority",
                    needed: 4,
                },
            ),
            (
                raw(1, &[KIND_OPEN, 0, 0, 80, 1, b'a']),
                HeaderError::Truncated {
                    field: "identity",
                    needed: 1,
                },
            ),
            (
                raw(1, &open_body(0, 80, b"", b"")),
                HeaderError::BadAuthority {
                    authority: String::new(),
                    reason: "length must be 1-253 bytes",
                },
            ),
            (
                raw(1, &open_body(0, 80, b"My.App", b"")),
                HeaderError::BadAuthority {
                    authority: "My.App".into(),
                    reason: "only lowercase letters, digits, '-' and '.' are allowed",
                },
            ),
            (
                raw(1, &open_body(0, 80, b"a..b", b"")),
                HeaderError::BadAuthority {
                    authority: "a..b".into(),
                    reason: "each dot-separated label must be 1-63 characters",
                },
            ),
            (
                raw(1, &open_body(0, 80, b"-a.b", b"")),
                HeaderError::BadAuthority {
                    authority: "-a.b".into(),
                    reason: "a label cannot start or end with '-'",
                },
            ),
            (
                raw(1, &open_body(0, 80, &[0xff, 0xfe], b"")),
                HeaderError::BadAuthority {
                    authority: "\u{fffd}\u{fffd}".into(),
                    reason: "only lowercase letters, digits, '-' and '.' are allowed",
                },
            ),
            (
                raw(1, &open_body(0, 80, b"a", b"not-an-identity")),
                HeaderError::BadIdentity {
                    identity: "not-an-identity".into(),
                },
            ),
            (
                raw(1, &[open_body(0, 80, b"a", id).as_slice(), b"x"].concat()),
                HeaderError::TrailingBytes { extra: 1 },
            ),
            // In version 2 a byte after the identity starts the optional endpoint.
            (
                raw(2, &[open_body(0, 80, b"a", id).as_slice(), b"x"].concat()),
                HeaderError::Truncated {
                    field: "endpoint",
                    needed: usize::from(b'x'),
                },
            ),
            (
                raw(
                    2,
                    &[open_body(0, 80, b"a", id).as_slice(), &[4, 10, 0, 0, 7, 0]].concat(),
                ),
                HeaderError::TrailingBytes { extra: 1 },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_request(&bytes), Err(expected.clone()), "{bytes:02x?}");
            assert_eq!(expected.refusal(), RefusalReason::Malformed);
        }
    }

    #[test]
    fn long_labels_and_names_are_refused() {
        let label = "a".repeat(64);
        assert!(matches!(
            Authority::new(label.as_str()),
            Err(HeaderError::BadAuthority { .. })
        ));
        let long = ["a"; 127].join(".");
        assert_eq!(long.len(), 253);
        assert!(Authority::new(long.clone()).is_ok());
        assert!(Authority::new(format!("{long}.b")).is_err());
        assert!(Authority::new("10.0.0.1").is_ok());
    }

    #[test]
    fn replies_round_trip_in_any_version() {
        for reply in [
            Reply::Accepted { app_port: None },
            Reply::Accepted { app_port: Some(8080) },
            Reply::Refused {
                reason: RefusalReason::UnknownTarget,
                message: "no service nope.default.svc.cluster.local".into(),
            },
        ] {
            for version in [1, 7] {
                let mut bytes = Vec::new();
                encode_reply(&reply, version, &mut bytes);
                bytes.extend_from_slice(b"payload");
                let Progress::Complete(d) = decode_reply(&bytes).unwrap() else {
                    panic!("complete expected")
                };
                assert_eq!(d.frame, reply);
                assert_eq!(d.version, version);
                assert_eq!(&bytes[d.consumed..], b"payload");
            }
        }
        for reason in RefusalReason::ALL {
            let mut bytes = Vec::new();
            let reply = Reply::Refused {
                reason,
                message: String::new(),
            };
            encode_reply(&reply, VERSION, &mut bytes);
            let Progress::Complete(d) = decode_reply(&bytes).unwrap() else {
                panic!("complete expected")
            };
            assert_eq!(d.frame, reply);
        }
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(200); // 400 bytes
        let mut bytes = Vec::new();
        let reply = Reply::Refused {
            reason: RefusalReason::ConnectFailed,
            message,
        };
        encode_reply(&reply, VERSION, &mut bytes);
        let Progress::Complete(d) = decode_reply(&bytes).unwrap() else {
            panic!("complete expected")
        };
        let Reply::Refused { message, .. } = d.frame else {
            panic!("refusal expected")
        };
        assert_eq!(message.len(), 254);
        assert!(message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn malformed_replies_have_precise_errors() {
        assert_eq!(
            decode_reply(&raw(1, &[99, 0])),
            Err(HeaderError::UnknownReplyCode(99))
        );
        assert_eq!(decode_reply(&raw(1, &[1, 1, 0xff])), Err(HeaderError::BadMessage));
        assert_eq!(
            decode_reply(&raw(1, &[0, 0, 0])),
            Err(HeaderError::TrailingBytes { extra: 1 })
        );
        assert_eq!(decode_reply(&raw(1, &[0, 0, 0, 0])), Err(HeaderError::ZeroPort));
        // Whatever decodes re-encodes to the same bytes: an acceptance has no message.
        assert_eq!(
            decode_reply(&raw(1, &[0, 2, b'o', b'k'])),
            Err(HeaderError::AcceptanceMessage(2))
        );
        assert_eq!(
            decode_reply(&raw(1, &[0, 0, 0x1f, 0x90, 0])),
            Err(HeaderError::TrailingBytes { extra: 3 })
        );
        // A refusal never carries a port.
        assert_eq!(
            decode_reply(&raw(1, &[1, 0, 0x1f, 0x90])),
            Err(HeaderError::TrailingBytes { extra: 2 })
        );
        assert_eq!(
            decode_reply(&raw(1, &[0])),
            Err(HeaderError::Truncated {
                field: "message",
                needed: 1
            })
        );
    }

    #[test]
    fn the_largest_request_fits_the_bound() {
        let long = ["a"; 127].join(".");
        let identity: IdentityName = format!(
            "{}.{}.serviceaccount.identity.linkerd.{}",
            "s".repeat(63),
            "n".repeat(63),
            ["t"; 45].join(".")
        )
        .parse()
        .unwrap();
        let request = Request::Open(Target {
            authority: Authority::new(long).unwrap(),
            port: u16::MAX,
            protocol: Protocol::Opaque,
            identity: Some(identity),
            endpoint: Some("fd00::1".parse().unwrap()),
        });
        let link = LinkName::new("l".repeat(MAX_LINK_LEN)).unwrap();
        let mut bytes = Vec::new();
        encode_entry_request(Some(&link), &request, &mut bytes);
        assert!(bytes.len() <= MAX_FRAME_LEN, "{}", bytes.len());
        assert!(matches!(decode_entry_request(&bytes), Ok(Progress::Complete(_))));
    }

    fn entry_encoded(link: &str, request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry_request(Some(&LinkName::new(link).unwrap()), request, &mut out);
        out
    }

    #[test]
    fn a_named_link_round_trips_in_version_3_and_only_the_entry_reads_it() {
        let named = Request::Open(Target {
            endpoint: Some("10.42.0.7".parse().unwrap()),
            ..target()
        });
        for request in [
            Request::Open(target()),
            named,
            Request::Watch(Resource::Pods),
            Request::Probe,
        ] {
            let mut bytes = entry_encoded("east", &request);
            bytes.extend_from_slice(b"payload");
            let Progress::Complete(d) = decode_entry_request(&bytes).unwrap() else {
                panic!("complete frame expected")
            };
            assert_eq!(d.version, LINK_VERSION);
            assert_eq!(d.frame.link.as_ref().map(LinkName::as_str), Some("east"));
            assert_eq!(d.frame.request, request);
            assert_eq!(&bytes[d.consumed..], b"payload");
            // The body is the link, then the request's body as version 2 has it.
            let mut inner = Vec::new();
            encode_request(&request, &mut inner);
            assert_eq!(
                &bytes[ENVELOPE_LEN..d.consumed],
                [&[4u8][..], b"east", &inner[ENVELOPE_LEN..]].concat()
            );
            // An ingress reads the request and leaves the link out.
            let Progress::Complete(plain) = decode_request(&bytes).unwrap() else {
                panic!("complete frame expected")
            };
            assert_eq!(plain.frame, request);
        }
        // Without a link nothing changes: older versions, no link.
        let bytes = encoded(&Request::Open(target()));
        let Progress::Complete(d) = decode_entry_request(&bytes).unwrap() else {
            panic!("complete frame expected")
        };
        assert_eq!((d.version, d.frame.link), (1, None));
    }

    #[test]
    fn bad_link_names_are_refused_naming_them() {
        for bad in [
            "",
            "East",
            "east.west",
            "-east",
            "e_st",
            &"l".repeat(MAX_LINK_LEN + 1),
        ] {
            assert!(
                matches!(LinkName::new(bad), Err(HeaderError::BadLink { ref link, .. }) if link == bad),
                "{bad:?}"
            );
            // On the wire too (bodies are built by hand: the encoder takes valid names only).
            let mut body = vec![bad.len() as u8];
            body.extend_from_slice(bad.as_bytes());
            body.push(KIND_PROBE);
            let err = decode_entry_request(&raw(LINK_VERSION, &body)).unwrap_err();
            assert!(matches!(err, HeaderError::BadLink { .. }), "{bad:?}: {err}");
            assert_eq!(err.refusal(), RefusalReason::Malformed);
        }
        // A link whose length runs past the body is truncated, not misread.
        assert_eq!(
            decode_entry_request(&raw(LINK_VERSION, &[9, b'e', b'a'])),
            Err(HeaderError::Truncated {
                field: "link",
                needed: 7
            })
        );
        // A version-3 body with a link and no request.
        assert_eq!(
            decode_entry_request(&raw(LINK_VERSION, &[4, b'e', b'a', b's', b't'])),
            Err(HeaderError::Truncated {
                field: "kind",
                needed: 1
            })
        );
    }
}
