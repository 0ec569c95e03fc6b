//! Errors of the node layer.

use orb_proto::wire::{ErrorKind, WireError};

/// Everything that can go wrong starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] orb_store::StoreError),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] orb_transport::TransportError),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] orb_runtime::RuntimeError),
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A peer answered with an error.
    #[error("{0}")]
    Remote(WireError),
    /// A peer answered with an unexpected message.
    #[error("unexpected answer from peer: {0}")]
    Protocol(String),
    /// No super node is connected.
    #[error("not connected to any super node")]
    NoSuper,
    /// A bug or an OS failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// The wire error to send to a peer for this failure.
    pub fn to_wire(&self) -> WireError {
        match self {
            NodeError::Remote(e) => e.clone(),
            NodeError::NoSuper => WireError::new(ErrorKind::Unavailable, self.to_string()),
            NodeError::Transport(_) => WireError::new(ErrorKind::Unavailable, self.to_string()),
            NodeError::Runtime(orb_runtime::RuntimeError::Busy) => {
                WireError::new(ErrorKind::Busy, self.to_string())
            }
            _ => WireError::new(ErrorKind::Internal, self.to_string()),
        }
    }
}
