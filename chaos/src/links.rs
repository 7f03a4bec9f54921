//! Link faults between cluster members: which direction of which link is delayed or cut. Pure
//! bookkeeping; the control server applies it to the proxies.
//!
//! ```text
//! latency a b 25ms   ─┐
//! partition a | b    ─┼─▶ LinkTable (per direction from→to) ─▶ proxy_faults(dialer, target)
//! heal               ─┘        to_target = from dialer to target, to_client = the way back
//! ```
//!
//! A session between two members may have been dialled by either side, so every direction is
//! kept on its own and mapped onto each proxy both ways.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::{Faults, LinkFaults};

/// A link fault that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A name that is not a member.
    #[error("unknown member \"{0}\" (members: {1})")]
    UnknownMember(String, String),
    /// A group with nobody in it.
    #[error("{0} group is empty")]
    EmptyGroup(&'static str),
    /// The same member on both sides of a partition.
    #[error("\"{0}\" is in both groups: a member cannot be partitioned from itself")]
    Overlap(String),
    /// Jitter larger than the delay.
    #[error("jitter {jitter:?} is larger than the delay {delay:?}")]
    Jitter {
        /// Delay asked.
        delay: Duration,
        /// Jitter asked.
        jitter: Duration,
    },
}

/// One direction of one link with a fault on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFault {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Added delay, ms.
    pub delay_ms: u64,
    /// Jitter around the delay, ms.
    pub jitter_ms: u64,
    /// Nothing gets through.
    pub blocked: bool,
}

/// Faults on every direction of every link between `members`.
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    members: Vec<String>,
    faults: BTreeMap<(String, String), LinkFaults>,
}

impl LinkTable {
    /// No faults between `members`.
    pub fn new(members: Vec<String>) -> Self {
        Self {
            members,
            faults: BTreeMap::new(),
        }
    }

    /// Every member.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    fn check(&self, group: &[String], which: &'static str) -> Result<(), LinkError> {
        if group.is_empty() {
            return Err(LinkError::EmptyGroup(which));
        }
        for m in group {
            if !self.members.contains(m) {
                return Err(LinkError::UnknownMember(m.clone(), self.members.join(", ")));
            }
        }
        Ok(())
    }

    fn pairs<'a>(
        a: &'a [String],
        b: &'a [String],
    ) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
        a.iter()
            .flat_map(move |x| b.iter().map(move |y| (x, y)))
            .filter(|(x, y)| x != y)
    }

    fn edit(&mut self, from: &str, to: &str, f: impl FnOnce(&mut LinkFaults)) {
        let key = (from.to_string(), to.to_string());
        let entry = self.faults.entry(key.clone()).or_default();
        f(entry);
        if *entry == LinkFaults::default() {
            self.faults.remove(&key);
        }
    }

    /// Delays both directions of every link between a member of `a` and one of `b`.
    /// Checks everything before changing anything.
    pub fn set_latency(
        &mut self,
        a: &[String],
        b: &[String],
        delay: Duration,
        jitter: Duration,
    ) -> Result<(), LinkError> {
        self.check(a, "first")?;
        self.check(b, "second")?;
        if jitter > delay {
            return Err(LinkError::Jitter { delay, jitter });
        }
        for (x, y) in Self::pairs(a, b).collect::<Vec<_>>() {
            for (from, to) in [(x, y), (y, x)] {
                self.edit(from, to, |l| {
                    l.delay = delay;
                    l.jitter = jitter;
                });
            }
        }
        Ok(())
    }

    /// Cuts traffic from `a` to `b`, and from `b` to `a` unless `one_way`.
    pub fn partition(
        &mut self,
        a: &[String],
        b: &[String],
        one_way: bool,
    ) -> Result<(), LinkError> {
        self.check(a, "first")?;
        self.check(b, "second")?;
        if let Some(m) = a.iter().find(|m| b.contains(m)) {
            return Err(LinkError::Overlap(m.clone()));
        }
        for (x, y) in Self::pairs(a, b).collect::<Vec<_>>() {
            self.edit(x, y, |l| l.blocked = true);
            if !one_way {
                self.edit(y, x, |l| l.blocked = true);
            }
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&mut self) {
        self.faults.clear();
    }

    /// Faults on traffic from `from` to `to`.
    pub fn direction(&self, from: &str, to: &str) -> LinkFaults {
        self.faults
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// What the proxy `dialer` uses to reach `target` must do.
    pub fn proxy_faults(&self, dialer: &str, target: &str) -> Faults {
        Faults {
            to_target: self.direction(dialer, target),
            to_client: self.direction(target, dialer),
        }
    }

    /// Every direction with a fault, sorted by sender then receiver.
    pub fn active(&self) -> Vec<LinkFault> {
        self.faults
            .iter()
            .map(|((from, to), l)| LinkFault {
                from: from.clone(),
                to: to.clone(),
                delay_ms: l.delay.as_millis() as u64,
                jitter_ms: l.jitter.as_millis() as u64,
                blocked: l.blocked,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn table() -> LinkTable {
        LinkTable::new(names("n1 n2 n3 gateway"))
    }

    #[test]
    fn a_symmetric_partition_cuts_both_directions_of_every_crossing_link_and_nothing_else() {
        let mut t = table();
        t.partition(&names("n1"), &names("n2 n3"), false).unwrap();
        for other in ["n2", "n3"] {
            assert!(t.direction("n1", other).blocked);
            assert!(t.direction(other, "n1").blocked);
            // Whichever side dialled, the proxy cuts both ways.
            assert!(t.proxy_faults(other, "n1").to_target.blocked);
            assert!(t.proxy_faults(other, "n1").to_client.blocked);
        }
        assert!(!t.direction("n2", "n3").blocked);
        assert!(!t.direction("gateway", "n1").blocked);
        assert_eq!(t.active().len(), 4);
    }

    #[test]
    fn a_one_way_partition_cuts_only_from_the_first_group_to_the_second() {
        let mut t = table();
        t.partition(&names("n1"), &names("n2"), true).unwrap();
        assert!(t.direction("n1", "n2").blocked);
        assert!(!t.direction("n2", "n1").blocked);
        // n2 dialled n1: n1's answers travel to_client on n2's proxy.
        let f = t.proxy_faults("n2", "n1");
        assert!(!f.to_target.blocked && f.to_client.blocked);
        let f = t.proxy_faults("n1", "n2");
        assert!(f.to_target.blocked && !f.to_client.blocked);
    }

    #[test]
    fn latency_applies_to_both_directions_and_composes_with_a_partition() {
        let mut t = table();
        let ms = Duration::from_millis;
        t.set_latency(&names("n1 n2 n3"), &names("n1 n2 n3"), ms(25), ms(5))
            .unwrap();
        assert_eq!(t.direction("n3", "n1").delay, ms(25));
        assert_eq!(t.direction("n1", "n3").jitter, ms(5));
        assert_eq!(t.direction("gateway", "n1"), LinkFaults::default());
        assert_eq!(t.active().len(), 6, "3 links, 2 directions each");
        t.partition(&names("n1"), &names("n2"), false).unwrap();
        let l = t.direction("n1", "n2");
        assert!(l.blocked);
        assert_eq!(l.delay, ms(25));
        t.heal();
        assert!(t.active().is_empty());
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let mut t = table();
        let ms = Duration::from_millis;
        assert_eq!(
            t.partition(&names("n1"), &names("n9"), false),
            Err(LinkError::UnknownMember(
                "n9".into(),
                "n1, n2, n3, gateway".into()
            ))
        );
        assert_eq!(
            t.partition(&names("n1 n2"), &names("n2"), false),
            Err(LinkError::Overlap("n2".into()))
        );
        assert_eq!(
            t.partition(&[], &names("n2"), false),
            Err(LinkError::EmptyGroup("first"))
        );
        assert!(matches!(
            t.set_latency(&names("n1"), &names("n2"), ms(5), ms(10)),
            Err(LinkError::Jitter { .. })
        ));
        assert!(t.active().is_empty());
    }
}
