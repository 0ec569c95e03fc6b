//! Wire messages.
//!
//! One request per bidirectional QUIC stream: the opener writes a frame
//! holding a [`Request`], optionally followed by a raw body (a module, a
//! call's input) up to the end of its send side; the other end answers with
//! a frame holding a [`Response`] and optionally a raw body (a module, a
//! call's output). Bodies travel outside bincode so large blobs are not
//! copied through the codec and are capped by the reader.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::{ContentHash, OrbId};
use crate::logs::{LogEntry, SignedLogsQuery};
use crate::receipt::SignedReceipt;

/// Version of the message set inside [`crate::ALPN`]'s protocol.
pub const PROTOCOL_VERSION: u32 = 2;

/// What a node is on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A public super node: DHT server, gateway, relay.
    Super,
    /// A desktop daemon, usually behind NAT.
    Client,
}

/// A replica a client holds and is ready to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedReplica {
    /// Function name.
    pub name: String,
    /// Module hash.
    pub hash: ContentHash,
}

/// First request on a new connection: who the dialer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialer's role.
    pub role: Role,
    /// [`PROTOCOL_VERSION`] of the dialer.
    pub version: u32,
    /// Calls the dialer runs at once at most (0: it runs none).
    pub capacity: u32,
    /// Addresses the dialer listens on, as it sees them.
    pub listen_addrs: Vec<SocketAddr>,
    /// Replicas the dialer already holds (after a restart, say).
    pub hosted: Vec<HostedReplica>,
    /// Free-form software name and version, for operators.
    pub agent: String,
}

/// Answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The answering node.
    pub node: OrbId,
    /// The dialer's address as the answering node sees it (STUN-like).
    pub observed_addr: SocketAddr,
}

/// Settings stored with a function.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FunctionSettings {
    /// Replicas wanted at least.
    pub replicas: u32,
    /// Replicas allowed at most.
    pub max_replicas: u32,
    /// Fixed arguments (after argv\[0\]).
    pub args: Vec<String>,
    /// Fixed environment variables.
    pub env: Vec<(String, String)>,
    /// Per-call limits asked for; nodes clamp them to their own maxima.
    pub limits: CallLimits,
    /// `deploy --cgi`: the function writes a CGI header block (`Status:`,
    /// `Content-Type:`, other headers, an empty line) before its body.
    pub cgi: bool,
    /// `deploy --content-type`: the type of a raw (not CGI) answer; `None`:
    /// `application/octet-stream`.
    pub content_type: Option<String>,
    /// `deploy --files`: the file bundle the function sees at `/`.
    pub files: Option<BundleRef>,
    /// `deploy --allow-host`: the hosts (`HOST` or `HOST:PORT`) the
    /// function's outbound HTTP may reach.
    pub allow_hosts: Vec<String>,
}

/// A function's file bundle (see [`crate::bundle`]), stored and fetched by
/// its hash like a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// BLAKE3 of the bundle bytes.
    pub hash: ContentHash,
    /// Size of the bundle in bytes.
    pub size: u64,
    /// Files and directories in it.
    pub entries: u32,
}

/// Per-call limits a function asks for. `None` means the node's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallLimits {
    /// Fuel (metering points).
    pub fuel: Option<u64>,
    /// Linear memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Wall-clock time in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Output (stdout) in bytes.
    pub max_output: Option<u64>,
}

/// HTTP-ish metadata of a call, passed to the function as environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallMeta {
    /// Unique ID of this call.
    pub request_id: String,
    /// HTTP method (POST when called from the CLI).
    pub method: String,
    /// URL query string without the `?`.
    pub query: String,
    /// Request content type.
    pub content_type: String,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// `PATH_INFO`: the path after `/fn/NAME`, percent-decoded; empty when
    /// there is none.
    pub path_info: String,
    /// `REMOTE_ADDR`: the caller's address, where known.
    pub remote_addr: Option<String>,
    /// `SERVER_NAME`: the host the caller addressed (from `Host`).
    pub server_name: String,
    /// `SERVER_PORT`: the port the caller addressed (0 when unknown).
    pub server_port: u16,
    /// How deeply nested this call is: 0 for a call from outside, one more
    /// for each function calling a function.
    pub depth: u8,
    /// The caller's deadline (ms since the Unix epoch) for a nested call:
    /// the callee gets no more time than its caller has left.
    pub deadline_ms: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// The module exited (returned from `_start`, or called `proc_exit`).
    Exited(i32),
    /// The module trapped.
    Trapped(String),
    /// A limit ended the call: which one, and a detail.
    LimitExceeded {
        /// Name of the limit (`fuel`, `memory`, `timeout`, `output`, ...).
        limit: String,
        /// Human-readable detail.
        detail: String,
    },
}

/// Result of running a function once. The output travels as the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Wall-clock duration in microseconds.
    pub duration_us: u64,
    /// The tail of what the function wrote to stderr (capped).
    pub stderr: String,
    /// The HTTP answer the function gave (status, headers), as the node
    /// that ran it read the output: its CGI header block (`deploy --cgi`)
    /// or the deployed content type. `None`: a raw `200
    /// application/octet-stream` answer, or a failed call.
    pub http: Option<HttpHead>,
}

/// The status and headers of a function's HTTP answer; the body is the
/// call's output body. Set by the node that ran the call, so every hop
/// after it (forwarding supers, the gateway, a client's API) passes it on
/// unchanged; the node answering over HTTP still filters the headers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpHead {
    /// Status code, 200-599.
    pub status: u16,
    /// Header lines in order, names lower-case; hop-by-hop and `x-orb-*`
    /// headers are already dropped.
    pub headers: Vec<(String, String)>,
    /// The output was not a valid CGI answer (no header block, a bad
    /// status, headers over the bounds): the node answering over HTTP
    /// answers 502 with this text instead, and the body is empty.
    pub error: Option<String>,
}

impl RunOutcome {
    /// Whether the call succeeded (exit code 0).
    pub fn is_success(&self) -> bool {
        matches!(self.status, RunStatus::Exited(0))
    }
}

/// A function as listed by a super.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Name.
    pub name: String,
    /// Current module hash.
    pub hash: ContentHash,
    /// Owner's node ID.
    pub owner: OrbId,
    /// Module size in bytes.
    pub size: u64,
    /// Settings.
    pub settings: FunctionSettings,
    /// Nodes that hold a ready replica.
    pub replicas: Vec<OrbId>,
}

/// A typed error carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Category, mapped to HTTP status codes by gateways.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl WireError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// Error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Unknown function, module or node.
    NotFound,
    /// The request was malformed or refused (bad module, bad name).
    BadRequest,
    /// A body was over its limit.
    TooLarge,
    /// Every replica is at capacity.
    Busy,
    /// No replica could be reached.
    Unavailable,
    /// The caller is not allowed (a name owned by another key, say).
    Forbidden,
    /// The function ran and failed; see the message.
    FunctionFailed,
    /// Something went wrong inside the node.
    Internal,
    /// A quota (relay rate, volume or circuits; request rate) was used up.
    Quota,
}

/// A request: the first frame on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Introduce the dialer. Answered with [`Response::Welcome`].
    Hello(Hello),
    /// Liveness and round-trip check. Answered with [`Response::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Client to its home super: store and place a function. Body: the
    /// module, then, for a function with files, its bundle (the last
    /// `settings.files.size` bytes).
    Deploy {
        /// Function name.
        name: String,
        /// BLAKE3 of the body; checked by the receiver.
        hash: ContentHash,
        /// Settings.
        settings: FunctionSettings,
        /// Place the first replica on the sender itself (it must have
        /// capacity), e.g. to serve one's own function from one's machine.
        here: bool,
    },
    /// Call a function by name and let the receiver route it. Body: input.
    Invoke {
        /// Function name.
        name: String,
        /// Call metadata.
        meta: CallMeta,
    },
    /// Super to executor: run this replica now. Body: input.
    Run {
        /// Function name.
        name: String,
        /// Module hash the executor must run.
        hash: ContentHash,
        /// Settings (args, env, limits). Boxed, with `meta`, so that every
        /// request (queued per stream) is not as large as this one.
        settings: Box<FunctionSettings>,
        /// Call metadata.
        meta: Box<CallMeta>,
        /// Who asked for the call (named in the receipt).
        caller: OrbId,
    },
    /// Super to client (or super to super): fetch, verify and prepare a
    /// replica, and its file bundle when it has one.
    Place {
        /// Function name.
        name: String,
        /// Module hash.
        hash: ContentHash,
        /// The function's file bundle, fetched from the sender with
        /// [`Request::FetchBundle`] like the module.
        files: Option<BundleRef>,
    },
    /// Ask for a module's bytes. Answered with [`Response::Module`] and the bytes as body.
    FetchModule {
        /// Module hash.
        hash: ContentHash,
    },
    /// List the functions the receiver knows.
    ListFunctions,
    /// A DHT query (see [`crate::dht`]). Answered with [`Response::Dht`].
    Dht(crate::dht::DhtMessage),
    /// Super -> client: stop hosting this replica (scaled down). Answered
    /// with [`Response::Placed`].
    Unplace {
        /// Function name.
        name: String,
        /// Module hash.
        hash: ContentHash,
    },
    /// Client -> super: the sender's credit balance in the super's ledger.
    Balance,
    /// Node -> super: ask `target` (a client whose tunnel ends at this
    /// super) to dial the sender now, at `addrs`, while the sender dials it
    /// (hole punching). Answered with [`Response::PunchAddrs`] holding the
    /// target's addresses.
    Punch {
        /// The node to punch through to.
        target: OrbId,
        /// Where the sender can be reached: its public (observed) and LAN
        /// addresses.
        addrs: Vec<SocketAddr>,
    },
    /// Super -> client: `from` wants a direct path; dial it at `addrs` now.
    /// Answered with [`Response::PunchAddrs`] holding the client's own.
    PunchNow {
        /// Who asked.
        from: OrbId,
        /// Where to dial it.
        addrs: Vec<SocketAddr>,
        /// Round trip between the two, as the super estimates it (ms), to
        /// time retries.
        rtt_ms: u32,
    },
    /// Node -> super: open a relayed circuit to `target`. The stream stays
    /// open as a byte pipe after [`Response::RelayReady`] (no body).
    Relay {
        /// The node to reach.
        target: OrbId,
    },
    /// Super -> client: `from` opened a relayed circuit to you; the stream
    /// is the pipe after the answer [`Response::RelayReady`] (no body).
    RelayIncoming {
        /// Who is on the other end (as the super authenticated it; the
        /// end-to-end TLS handshake inside proves it again).
        from: OrbId,
    },
    /// Client -> super: dial me back at my observed address from a
    /// different socket, to tell whether I am reachable from outside.
    /// Answered with [`Response::DialBack`].
    DialBack,
    /// Caller -> its super: the receipt of a call another node ran for it
    /// directly (node to node), for the ledger.
    Receipt(Box<SignedReceipt>),
    /// Ask for a file bundle's bytes. Answered with [`Response::Bundle`]
    /// and the bytes as body.
    FetchBundle {
        /// Bundle hash.
        hash: ContentHash,
    },
    /// Owner -> the super its function was deployed through, after the
    /// owner published a tombstone: stop the replicas under every super and
    /// drop the function and its modules. Also accepted by a super from
    /// anyone for replicas the name record in the DHT no longer points at
    /// (see `Unplace`). Answered with [`Response::Removed`].
    Remove {
        /// Function name.
        name: String,
    },
    /// Owner -> the super its function was deployed through: make a kept
    /// version current again, as a new version. Answered with
    /// [`Response::RolledBack`].
    Rollback {
        /// Function name.
        name: String,
        /// The version to go back to; `None`: the one before the current.
        to: Option<u64>,
    },
    /// Owner -> the super its function was deployed through: the versions
    /// kept. Answered with [`Response::Versions`].
    Versions {
        /// Function name.
        name: String,
    },
    /// A function's logs for its owner, signed by the owner: from the
    /// owner to its super (`fan_out`: ask the other supers holding replicas
    /// too), and from a super to its clients and to other supers (never
    /// fanned out again). Answered with [`Response::Logs`].
    Logs {
        /// The owner's signed query.
        query: Box<SignedLogsQuery>,
        /// Whether the receiver should ask other supers as well.
        fan_out: bool,
    },
}

impl Request {
    /// The request's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "Hello",
            Request::Ping { .. } => "Ping",
            Request::Deploy { .. } => "Deploy",
            Request::Invoke { .. } => "Invoke",
            Request::Run { .. } => "Run",
            Request::Place { .. } => "Place",
            Request::FetchModule { .. } => "FetchModule",
            Request::ListFunctions => "ListFunctions",
            Request::Dht(_) => "Dht",
            Request::Unplace { .. } => "Unplace",
            Request::Balance => "Balance",
            Request::Punch { .. } => "Punch",
            Request::PunchNow { .. } => "PunchNow",
            Request::Relay { .. } => "Relay",
            Request::RelayIncoming { .. } => "RelayIncoming",
            Request::DialBack => "DialBack",
            Request::Receipt(_) => "Receipt",
            Request::FetchBundle { .. } => "FetchBundle",
            Request::Remove { .. } => "Remove",
            Request::Rollback { .. } => "Rollback",
            Request::Versions { .. } => "Versions",
            Request::Logs { .. } => "Logs",
        }
    }

    /// Whether this request turns its stream into a long-lived byte pipe
    /// (a relay circuit) instead of carrying a body.
    pub fn opens_tunnel(&self) -> bool {
        matches!(self, Request::Relay { .. } | Request::RelayIncoming { .. })
    }
}

/// A response: the first frame on the answering side of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Welcome(Welcome),
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// Answer to [`Request::Deploy`].
    Deployed {
        /// Function name.
        name: String,
        /// Module hash.
        hash: ContentHash,
        /// Nodes the function was placed on.
        placed_on: Vec<OrbId>,
        /// The version this deploy made (0 in answers to `Place`); the
        /// owner signs its name record with it.
        version: u64,
    },
    /// Answer to [`Request::Run`] and [`Request::Invoke`]. Body: the output.
    Ran {
        /// The node that ran the call.
        node: OrbId,
        /// How it went.
        outcome: RunOutcome,
        /// The executor's signed receipt (present when the call ran).
        receipt: Option<Box<SignedReceipt>>,
    },
    /// Answer to [`Request::Place`]: the replica is ready.
    Placed,
    /// Answer to [`Request::FetchModule`]. Body: the module bytes.
    Module {
        /// Module hash.
        hash: ContentHash,
    },
    /// Answer to [`Request::ListFunctions`].
    Functions(Vec<FunctionInfo>),
    /// The request failed.
    Error(WireError),
    /// Answer to [`Request::Dht`].
    Dht(crate::dht::DhtResponse),
    /// Answer to [`Request::Balance`].
    Balance(Credits),
    /// Answer to [`Request::Punch`] and [`Request::PunchNow`].
    PunchAddrs {
        /// The answering side's (or the target's) addresses.
        addrs: Vec<SocketAddr>,
        /// Round-trip estimate for timing retries (ms).
        rtt_ms: u32,
    },
    /// Answer to [`Request::Relay`] and [`Request::RelayIncoming`]: the
    /// stream is now a pipe.
    RelayReady,
    /// Answer to [`Request::DialBack`].
    DialBack {
        /// The address the super dialed.
        dialed: SocketAddr,
        /// Whether the dial from a different socket got through.
        reachable: bool,
    },
    /// Answer to [`Request::Receipt`]: recorded.
    ReceiptRecorded,
    /// Answer to [`Request::FetchBundle`]. Body: the bundle bytes.
    Bundle {
        /// Bundle hash.
        hash: ContentHash,
    },
    /// Answer to [`Request::Remove`].
    Removed {
        /// Function name.
        name: String,
        /// Replicas asked to stop, under this super and the others.
        replicas: u32,
    },
    /// Answer to [`Request::Rollback`]: the version now current.
    RolledBack {
        /// The new current version (a new number, an old module).
        current: Box<VersionInfo>,
        /// Nodes holding a replica of it.
        placed_on: Vec<OrbId>,
    },
    /// Answer to [`Request::Versions`].
    Versions {
        /// The current version.
        current: u64,
        /// The versions kept, oldest first.
        versions: Vec<VersionInfo>,
    },
    /// Answer to [`Request::Logs`]: log entries, oldest first (at most
    /// [`crate::logs::MAX_LOG_ANSWER`]).
    Logs(Vec<LogEntry>),
}

/// One version of a function, as the super it was deployed through keeps
/// it for rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version number.
    pub version: u64,
    /// Module hash.
    pub hash: ContentHash,
    /// Module size in bytes.
    pub size: u64,
    /// Settings of that version.
    pub settings: FunctionSettings,
    /// Unix milliseconds of its deploy (or rollback).
    pub created_ms: u64,
}

/// A node's credit balance as one super's ledger holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credits {
    /// Credits earned by running calls for others.
    pub earned: u64,
    /// Credits spent on calls this node made.
    pub spent: u64,
    /// Calls served.
    pub calls_served: u64,
    /// Calls made.
    pub calls_made: u64,
}
