//! Which replica serves a call, and when a failed attempt may move on.
//!
//! A call goes to the replica with the fewest calls in flight for its
//! capacity, then the shortest round trip. A call moves to another replica
//! (or another super) only when it cannot have run where it went: the
//! request never left, or the replica is gone so no result can ever come
//! back. Anything else stops, so a call is never run twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use orb_proto::wire::{ErrorKind, WireError};
use orb_proto::{OrbId, PeerAddr};

/// A replica's load as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLoad {
    /// Calls in flight on its node now.
    pub in_flight: u32,
    /// Calls its node runs at once at most.
    pub capacity: u32,
    /// Round trip to its node.
    pub rtt: Duration,
}

/// Indices of `replicas` in the order they should be tried: least loaded
/// for their capacity first, then nearest.
pub fn order_replicas(replicas: &[ReplicaLoad]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..replicas.len()).collect();
    order.sort_by_key(|&i| {
        let r = &replicas[i];
        (
            u64::from(r.in_flight) * 1000 / u64::from(r.capacity.max(1)),
            r.rtt,
        )
    });
    order
}

/// How one attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The call ran (successfully or not): done.
    Answered,
    /// The replica (or every replica behind a super) was at capacity.
    Busy,
    /// The other side answered with an error of this kind.
    Refused(ErrorKind),
    /// The other side answered with a message that is not an answer to a call.
    Unexpected,
    /// The request never left this node.
    NotSent,
    /// The connection was lost before any answer.
    ConnectionLost,
    /// The request was sent and then the stream failed.
    FailedAfterSend,
    /// No answer within the time allowed.
    TimedOut,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stop: the call is answered, or it may have run.
    Stop,
    /// Try the next replica (or super).
    TryNext,
    /// Try the next one, and stop routing to this replica: it lost the
    /// module or its node is gone.
    ForgetAndTryNext,
}

/// After an attempt on a replica of this super's own clients. A replica
/// whose connection was lost is gone (its process or link died), so no
/// result can come back from it and another replica may run the call.
pub fn after_replica(a: Attempt) -> Next {
    match a {
        Attempt::Answered => Next::Stop,
        Attempt::Busy | Attempt::Unexpected => Next::TryNext,
        Attempt::Refused(ErrorKind::NotFound) => Next::ForgetAndTryNext,
        Attempt::Refused(_) => Next::Stop,
        Attempt::NotSent | Attempt::ConnectionLost => Next::ForgetAndTryNext,
        Attempt::FailedAfterSend | Attempt::TimedOut => Next::Stop,
    }
}

/// After an attempt forwarded to another super. Unlike a dead replica, a
/// super whose link failed after the call reached it may have handed it to
/// a live replica that is still running it, so only a call that never left
/// moves on.
pub fn after_forward(a: Attempt) -> Next {
    match a {
        Attempt::Answered => Next::Stop,
        Attempt::Busy | Attempt::Unexpected | Attempt::NotSent => Next::TryNext,
        Attempt::Refused(ErrorKind::Unavailable | ErrorKind::NotFound) => Next::TryNext,
        Attempt::Refused(_) => Next::Stop,
        Attempt::ConnectionLost | Attempt::FailedAfterSend | Attempt::TimedOut => Next::Stop,
    }
}

/// The error for a call that found nothing free: busy when every one tried
/// was busy, else the last error seen (or `fallback`).
pub fn exhausted(busy: usize, tried: usize, last: Option<WireError>, name: &str) -> WireError {
    if tried > 0 && busy == tried {
        return WireError::new(
            ErrorKind::Busy,
            format!("all {busy} replicas of {name:?} are busy"),
        );
    }
    last.unwrap_or_else(|| {
        WireError::new(
            ErrorKind::Unavailable,
            format!("no replica of {name:?} answered"),
        )
    })
}

/// A call that failed on this super's replicas and then elsewhere: which
/// error the caller sees. When nothing elsewhere has the function, or this
/// super's replicas were busy and the others were not, the local answer
/// says more than "no provider" (busy beats unavailable).
pub fn combine(local: WireError, forwarded: WireError) -> WireError {
    if forwarded.kind == ErrorKind::NotFound
        || (local.kind == ErrorKind::Busy && forwarded.kind != ErrorKind::Busy)
    {
        local
    } else {
        forwarded
    }
}

/// Put the supers that could not be reached within `window` last, keeping
/// the order otherwise. They are still asked when the others fail.
pub fn reachable_first(
    supers: &mut [PeerAddr],
    unreachable: &HashMap<OrbId, Instant>,
    now: Instant,
    window: Duration,
) {
    supers.sort_by_key(|s| {
        unreachable
            .get(&s.id)
            .is_some_and(|t| now.saturating_duration_since(*t) < window)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(in_flight: u32, capacity: u32, rtt_us: u64) -> ReplicaLoad {
        ReplicaLoad {
            in_flight,
            capacity,
            rtt: Duration::from_micros(rtt_us),
        }
    }

    #[test]
    fn least_loaded_for_capacity_then_nearest() {
        let r = [
            load(2, 4, 10),
            load(1, 1, 5),
            load(0, 1, 50),
            load(0, 8, 20),
        ];
        // 0/1 and 0/8 are idle: the nearer first; then 2/4; then 1/1 (full).
        assert_eq!(order_replicas(&r), vec![3, 2, 0, 1]);
    }

    #[test]
    fn a_call_that_may_have_run_is_never_moved() {
        for a in [
            Attempt::FailedAfterSend,
            Attempt::TimedOut,
            Attempt::Answered,
        ] {
            assert_eq!(after_replica(a), Next::Stop, "{a:?}");
            assert_eq!(after_forward(a), Next::Stop, "{a:?}");
        }
        // A super lost mid-call may have a live replica running it.
        assert_eq!(after_forward(Attempt::ConnectionLost), Next::Stop);
        // A replica lost mid-call is gone: nobody can answer for it.
        assert_eq!(
            after_replica(Attempt::ConnectionLost),
            Next::ForgetAndTryNext
        );
    }

    #[test]
    fn calls_that_never_ran_move_on() {
        assert_eq!(after_replica(Attempt::Busy), Next::TryNext);
        assert_eq!(after_replica(Attempt::NotSent), Next::ForgetAndTryNext);
        assert_eq!(
            after_replica(Attempt::Refused(ErrorKind::NotFound)),
            Next::ForgetAndTryNext
        );
        assert_eq!(
            after_replica(Attempt::Refused(ErrorKind::BadRequest)),
            Next::Stop
        );
        assert_eq!(after_forward(Attempt::NotSent), Next::TryNext);
        assert_eq!(
            after_forward(Attempt::Refused(ErrorKind::Unavailable)),
            Next::TryNext
        );
        assert_eq!(
            after_forward(Attempt::Refused(ErrorKind::Forbidden)),
            Next::Stop
        );
    }

    #[test]
    fn exhausted_is_busy_only_when_every_one_was() {
        let e = exhausted(3, 3, None, "f");
        assert_eq!(e.kind, ErrorKind::Busy);
        let last = WireError::new(ErrorKind::Unavailable, "gone");
        assert_eq!(exhausted(2, 3, Some(last.clone()), "f"), last);
        assert_eq!(exhausted(0, 0, None, "f").kind, ErrorKind::Unavailable);
    }

    #[test]
    fn local_busy_beats_remote_unavailable() {
        let busy = WireError::new(ErrorKind::Busy, "b");
        let unavailable = WireError::new(ErrorKind::Unavailable, "u");
        let none = WireError::new(ErrorKind::NotFound, "n");
        assert_eq!(combine(busy.clone(), unavailable.clone()), busy);
        assert_eq!(combine(unavailable.clone(), none), unavailable);
        assert_eq!(
            combine(unavailable.clone(), busy.clone()),
            busy,
            "the others' busy is the better answer"
        );
    }

    #[test]
    fn unreachable_supers_go_last_for_a_while() {
        let p = |n: u8| PeerAddr {
            id: OrbId([n; 32]),
            addr: ([127, 0, 0, 1], 7000 + u16::from(n)).into(),
        };
        let now = Instant::now();
        let window = Duration::from_secs(30);
        let marks = HashMap::from([
            (OrbId([1; 32]), now),
            (OrbId([3; 32]), now - Duration::from_secs(31)),
        ]);
        let mut supers = vec![p(1), p(2), p(3)];
        reachable_first(&mut supers, &marks, now, window);
        assert_eq!(
            supers.iter().map(|s| s.id.0[0]).collect::<Vec<_>>(),
            vec![2, 3, 1]
        );
    }
}
