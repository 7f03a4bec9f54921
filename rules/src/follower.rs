//! What a follower does with a replicated write from a primary. Pure: the shard host decodes and
//! checks the frame, asks [`on_write`], and performs the verdict.
//!
//! A write is stale only if a newer epoch names another primary: epochs also move when followers
//! come and go, which does not fence the primary. The follower remembers the highest epoch (and
//! its primary) it accepted writes at, so a deposed primary is refused even before this node's
//! map shows the change.

/// The highest epoch a follower accepted writes at for a shard, and who wrote at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mark {
    /// Epoch.
    pub epoch: u64,
    /// The primary that wrote at it.
    pub primary: String,
}

/// What the follower knows of the shard.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// This node.
    pub me: &'a str,
    /// The shard's epoch in this node's map.
    pub map_epoch: u64,
    /// The shard's primary in this node's map.
    pub map_primary: &'a str,
    /// The highest epoch accepted so far.
    pub mark: Option<&'a Mark>,
}

/// The verdict on one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refuse: another primary leads at `epoch`.
    Stale {
        /// The newer epoch this node knows.
        epoch: u64,
    },
    /// Apply it.
    Apply {
        /// The new mark to remember (None: keep the old one).
        mark: Option<Mark>,
        /// This node's map still names it primary, but the writer leads at a newer epoch: stop
        /// serving as primary before acknowledging.
        step_down: bool,
    },
}

/// Decides on a write at `epoch` from `primary`.
pub fn on_write(known: Known<'_>, epoch: u64, primary: &str) -> Verdict {
    let by_map = epoch < known.map_epoch && known.map_primary != primary;
    let by_mark = known
        .mark
        .filter(|m| epoch < m.epoch && m.primary != primary)
        .map(|m| m.epoch);
    if by_map || by_mark.is_some() {
        return Verdict::Stale {
            epoch: by_mark.unwrap_or(0).max(known.map_epoch),
        };
    }
    let mark = known.mark.is_none_or(|m| epoch >= m.epoch).then(|| Mark {
        epoch,
        primary: primary.to_string(),
    });
    let step_down = known.map_primary == known.me && primary != known.me && epoch > known.map_epoch;
    Verdict::Apply { mark, step_down }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known<'a>(map_epoch: u64, map_primary: &'a str, mark: Option<&'a Mark>) -> Known<'a> {
        Known {
            me: "n2",
            map_epoch,
            map_primary,
            mark,
        }
    }

    #[test]
    fn an_older_epoch_of_another_primary_is_stale_but_follower_changes_do_not_fence() {
        assert_eq!(
            on_write(known(5, "n3", None), 4, "n1"),
            Verdict::Stale { epoch: 5 }
        );
        // Same primary, older epoch: the epoch moved because a follower changed.
        assert!(matches!(
            on_write(known(5, "n1", None), 4, "n1"),
            Verdict::Apply { .. }
        ));
    }

    #[test]
    fn the_mark_refuses_a_deposed_primary_before_the_map_shows_it() {
        let mark = Mark {
            epoch: 7,
            primary: "n3".into(),
        };
        assert_eq!(
            on_write(known(5, "n1", Some(&mark)), 5, "n1"),
            Verdict::Stale { epoch: 7 }
        );
        // The newer primary's writes are applied, without moving the mark back.
        assert_eq!(
            on_write(known(5, "n1", Some(&mark)), 6, "n3"),
            Verdict::Apply {
                mark: None,
                step_down: false
            }
        );
    }

    #[test]
    fn a_write_at_a_newer_epoch_makes_a_node_that_thinks_it_leads_step_down() {
        assert_eq!(
            on_write(known(3, "n2", None), 4, "n1"),
            Verdict::Apply {
                mark: Some(Mark {
                    epoch: 4,
                    primary: "n1".into()
                }),
                step_down: true
            }
        );
    }
}
