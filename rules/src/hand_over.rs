//! A planned move of a shard's primary role to an in-sync follower, driven by the old primary
//! itself so it stops writing before the new primary starts. Pure steps; the replicator waits,
//! proposes and resumes as told.
//!
//! ```text
//! begin ─▶ refuse (not primary at that epoch)
//!       └▶ Depose(epoch+1): stop taking writes ─▶ drain: writes in flight finish
//!            ├─ drained ─▶ Propose(Handoff) ─┬─ committed ─▶ Done (the follower leads)
//!            │                               └─ refused ─▶ Resume
//!            └─ not drained by the deadline ─▶ Resume (still primary)
//! ```
//! Every write the old primary acknowledged was confirmed by the in-sync follower taking over,
//! and no write of the old primary reaches a follower after the map change.

use crate::shard_map::{MapCommand, Placement};

/// What the replicator does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop accepting writes for the shard until the map reaches this epoch.
    Depose(u64),
    /// Writes are still in flight: wait and ask again.
    Wait,
    /// Commit this map change.
    Propose(MapCommand),
    /// Undo the deposition at this epoch: this node stays primary.
    Resume(u64),
    /// Handed over.
    Done,
}

/// A hand-over in progress.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HandOver {
    shard: u32,
    epoch: u64,
    to: String,
}

impl HandOver {
    /// Starts handing `shard` (seen at `epoch`) to `to`, if `me` leads it at that epoch; the
    /// first step is always [`Step::Depose`].
    pub fn begin(
        me: &str,
        shard: u32,
        placement: &Placement,
        epoch: u64,
        to: &str,
    ) -> Result<(Self, Step), String> {
        if placement.primary != me || placement.epoch != epoch {
            return Err(format!(
                "{me} is not primary of shard {shard} at epoch {epoch}"
            ));
        }
        let h = Self {
            shard,
            epoch,
            to: to.to_string(),
        };
        Ok((h, Step::Depose(epoch + 1)))
    }

    /// With `in_flight` writes still running, and whether the drain deadline passed.
    pub fn drain(&self, in_flight: u32, past_deadline: bool) -> Step {
        match (in_flight, past_deadline) {
            (0, _) => Step::Propose(MapCommand::Handoff {
                shard: self.shard,
                epoch: self.epoch,
                to: self.to.clone(),
            }),
            (_, true) => Step::Resume(self.epoch + 1),
            _ => Step::Wait,
        }
    }

    /// After the proposal was committed (`true`) or refused.
    pub fn proposed(&self, committed: bool) -> Step {
        if committed {
            Step::Done
        } else {
            Step::Resume(self.epoch + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            epoch: 4,
            primary: "n1".into(),
            in_sync: vec!["n2".into()],
            learners: vec![],
        }
    }

    #[test]
    fn the_steps_in_order() {
        let (h, first) = HandOver::begin("n1", 0, &placement(), 4, "n2").unwrap();
        assert_eq!(first, Step::Depose(5));
        assert_eq!(h.drain(2, false), Step::Wait);
        assert_eq!(
            h.drain(0, false),
            Step::Propose(MapCommand::Handoff {
                shard: 0,
                epoch: 4,
                to: "n2".into()
            })
        );
        assert_eq!(h.proposed(true), Step::Done);
        assert_eq!(h.proposed(false), Step::Resume(5));
    }

    #[test]
    fn only_the_primary_at_that_epoch_begins_and_a_stuck_drain_resumes() {
        assert!(HandOver::begin("n2", 0, &placement(), 4, "n1").is_err());
        assert!(HandOver::begin("n1", 0, &placement(), 3, "n2").is_err());
        let (h, _) = HandOver::begin("n1", 0, &placement(), 4, "n2").unwrap();
        assert_eq!(h.drain(1, true), Step::Resume(5));
    }
}
