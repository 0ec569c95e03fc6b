//! Default limits. Nodes may lower or raise some of them by configuration;
//! the codec's frame limit is fixed because both ends must agree on it.

/// Largest control frame (a bincode-encoded [`crate::wire::Request`] or
/// [`crate::wire::Response`]), excluding any body that follows it.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Default cap on a function call's request body (8 MiB).
pub const DEFAULT_MAX_INPUT: usize = 8 * 1024 * 1024;

/// Default cap on a function call's output (8 MiB).
pub const DEFAULT_MAX_OUTPUT: usize = 8 * 1024 * 1024;

/// Largest WebAssembly module a node accepts (32 MiB).
pub const MAX_MODULE: usize = 32 * 1024 * 1024;

/// Longest function name.
pub const MAX_NAME_LEN: usize = 64;

/// Largest stderr excerpt carried back with a result.
pub const MAX_STDERR_EXCERPT: usize = 16 * 1024;
