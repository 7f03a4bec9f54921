//! What the primary makes of its followers' answers to one write. Pure: the replicator sends the
//! write, turns each answer into an [`Ack`], and performs the [`AckPlan`].
//!
//! ```text
//! Applied by a follower ─▶ it confirmed (and is no longer suspect)
//! Stale{epoch > write's} ─▶ step down: another node leads at `epoch`; the write fails
//! anything else from an in-sync follower ─▶ suspect it, drop it (Shrink) before confirming
//! anything else from a learner ─▶ ignore (learners never hold up a write)
//! ```
//! A write is confirmed only when every in-sync follower applied it or has been dropped from the
//! in-sync set through consensus; so every follower that can be promoted holds it.

/// One follower's answer, as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Applied and durable.
    Applied,
    /// The follower knows a newer primary, at this epoch (already checked to be newer than the
    /// write's; an implausible one is a [`Ack::Failed`]).
    Stale {
        /// The follower's epoch.
        epoch: u64,
    },
    /// No answer, an error, or an answer that breaks the rules.
    Failed,
}

/// What to do after one write's answers, by index into the targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckPlan {
    /// Some follower applied the write: it may surface after a failover, so it is never taken
    /// back locally.
    pub applied_somewhere: bool,
    /// Followers that applied it: no longer suspect.
    pub confirmed: Vec<usize>,
    /// Another node leads the shard at this epoch: step down, fail the write.
    pub step_down: Option<u64>,
    /// In-sync followers that did not confirm: suspect them (no follower reads) and drop them
    /// from the in-sync set before the write may be confirmed. Empty when stepping down.
    pub shrink: Vec<usize>,
}

/// Classifies the answers; `targets[i]` is `(in_sync, answer)` for the i-th follower or learner.
pub fn classify(targets: &[(bool, Ack)]) -> AckPlan {
    let mut plan = AckPlan::default();
    for (i, (_, ack)) in targets.iter().enumerate() {
        if *ack == Ack::Applied {
            plan.applied_somewhere = true;
            plan.confirmed.push(i);
        }
    }
    for (i, (in_sync, ack)) in targets.iter().enumerate() {
        match ack {
            Ack::Applied => {}
            Ack::Stale { epoch } => {
                plan.step_down = Some(*epoch);
                plan.shrink.clear();
                return plan;
            }
            Ack::Failed if *in_sync => plan.shrink.push(i),
            Ack::Failed => {}
        }
    }
    plan
}

/// Whether the primary's own map shows `follower` out of the in-sync set while `me` still leads:
/// `Some(true)` dropped, `Some(false)` no longer primary (the write fails), `None` not yet (wait).
/// A write whose followers were dropped is confirmed only once this node's map shows it, so a
/// restarted primary, which has forgotten its suspects, never grants a read to a follower that
/// missed an acknowledged write.
pub fn dropped(me: &str, placement: &crate::shard_map::Placement, follower: &str) -> Option<bool> {
    if placement.primary != me {
        return Some(false);
    }
    (!placement.in_sync.iter().any(|n| n == follower)).then_some(true)
}

/// Whether a write that failed must be taken back on the primary: only if no follower applied it
/// (one that did may be promoted with it, so the primary keeps it too).
pub fn take_back(plan: &AckPlan) -> bool {
    !plan.applied_somewhere
}

/// The fencing check once a write is confirmed: true if the node that leads the shard now
/// (`now_primary`, at `now_epoch`) took over after the write's epoch without having been an
/// in-sync follower of it — two primaries at once. Must never happen.
pub fn two_primaries(
    me: &str,
    write_epoch: u64,
    in_sync_at_write: &[String],
    now_primary: &str,
    now_epoch: u64,
) -> bool {
    now_primary != me
        && write_epoch < now_epoch
        && !in_sync_at_write.iter().any(|n| n == now_primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_in_sync_failure_is_dropped_and_learners_never_hold_a_write_up() {
        let plan = classify(&[
            (true, Ack::Applied),
            (true, Ack::Failed),
            (false, Ack::Failed),
            (true, Ack::Failed),
        ]);
        assert_eq!(
            plan,
            AckPlan {
                applied_somewhere: true,
                confirmed: vec![0],
                step_down: None,
                shrink: vec![1, 3],
            }
        );
        assert!(!take_back(&plan));
    }

    #[test]
    fn a_newer_epoch_steps_down_and_drops_nobody() {
        let plan = classify(&[(true, Ack::Failed), (true, Ack::Stale { epoch: 9 })]);
        assert_eq!(plan.step_down, Some(9));
        assert!(plan.shrink.is_empty());
        assert!(take_back(&plan), "nobody applied it");
    }

    #[test]
    fn all_applied_confirms_and_a_learner_alone_counts_as_applied_somewhere() {
        let plan = classify(&[(true, Ack::Applied), (false, Ack::Applied)]);
        assert_eq!(plan.confirmed, vec![0, 1]);
        assert!(plan.shrink.is_empty() && plan.step_down.is_none());
        assert!(classify(&[(false, Ack::Applied)]).applied_somewhere);
        assert!(take_back(&classify(&[])));
    }

    #[test]
    fn a_drop_counts_once_the_map_shows_it_and_only_while_still_primary() {
        let mut p = crate::shard_map::Placement {
            epoch: 3,
            primary: "n1".into(),
            in_sync: vec!["n2".into()],
            learners: vec![],
        };
        assert_eq!(dropped("n1", &p, "n2"), None);
        p.in_sync.clear();
        assert_eq!(dropped("n1", &p, "n2"), Some(true));
        p.primary = "n3".into();
        assert_eq!(dropped("n1", &p, "n2"), Some(false));
    }

    #[test]
    fn a_new_primary_that_was_in_sync_is_no_second_primary() {
        let in_sync = vec!["n2".to_string()];
        assert!(!two_primaries("n1", 3, &in_sync, "n2", 4));
        assert!(two_primaries("n1", 3, &in_sync, "n3", 4));
        assert!(!two_primaries("n1", 3, &in_sync, "n1", 4));
        assert!(!two_primaries("n1", 4, &in_sync, "n3", 4), "same epoch");
    }
}
