//! The node's decisions as pure functions and small state machines: no
//! sockets, no disk, no clock of their own (time is passed in), so each is
//! unit-tested on its own like the overlay's `Core`. The async code in the
//! roles gathers the inputs, asks a policy, and carries out the answer.
//!
//! * [`placement`]: which clients get a replica, and how many go through
//!   other supers.
//! * [`scaling`]: when a function gets one more replica or one fewer.
//! * [`routing`]: which replica serves a call, and when a failed attempt
//!   may move on to another without ever running a call twice.
//! * [`accounting`]: how a receipt is checked and changes balances.
//! * [`health`]: when a client that misses pings is given up.
//! * [`versions`]: version numbers, rollback targets, and what a super does
//!   with a record the DHT has moved past.
//! * [`api_access`]: which requests the client's local API serves.

pub mod accounting;
pub mod api_access;
pub mod health;
pub mod placement;
pub mod routing;
pub mod scaling;
pub mod versions;
