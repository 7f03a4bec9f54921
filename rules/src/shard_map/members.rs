//! The members of the map: nodes join (with the address they advertise), drain (given nothing
//! new while their copies move elsewhere) and, once they hold nothing, leave.

use serde::{Deserialize, Serialize};

use super::{MapCommand, MapError, ShardMap};

/// Where a node that joined listens, as it advertises itself (a DNS name or an IP address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Host name or IP address peers dial.
    pub host: String,
    /// Its cluster port.
    pub cluster_port: u16,
    /// Its ops port (health, metrics).
    pub ops_port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (ops {})",
            self.host, self.cluster_port, self.ops_port
        )
    }
}

impl ShardMap {
    /// Where a node that joined listens (`None` for a seed node: see nodes.toml).
    pub fn addr(&self, node: &str) -> Option<&NodeAddr> {
        self.addrs.get(node)
    }

    /// True while `node` is draining.
    pub fn is_draining(&self, node: &str) -> bool {
        self.draining.contains(node)
    }

    /// Members that are not draining: the nodes copies may be placed on.
    pub fn active_nodes(&self) -> impl Iterator<Item = &String> {
        self.nodes.iter().filter(|n| !self.draining.contains(*n))
    }

    /// True when no shard has a copy (or a copy in progress) on `node`.
    pub fn holds_nothing(&self, node: &str) -> bool {
        self.shards.iter().all(|p| p.replicas().all(|n| n != node))
    }

    /// The command that starts draining `node`, or why it may not leave: it is not a member,
    /// or the nodes left would be fewer than the replication factor.
    pub fn drain(&self, node: &str) -> Result<MapCommand, MapError> {
        if !self.nodes.iter().any(|n| n == node) {
            return Err(MapError::Members(format!("\"{node}\" is not a member")));
        }
        let active = self.active_nodes().count();
        let left = active - usize::from(!self.draining.contains(node));
        if left < self.replication_factor {
            return Err(MapError::Members(format!(
                "removing \"{node}\" would leave {left} node(s) for a replication factor of {}; add a node first",
                self.replication_factor
            )));
        }
        Ok(MapCommand::DrainNode {
            node: node.to_string(),
            active: active as u32,
        })
    }

    /// The command that starts removing `node` ([`ShardMap::drain`]), or why it may not go:
    /// also refused when `node` votes and the other `voters` that are `up` would be no
    /// majority of them (the cluster would stop committing anything, its own removal included).
    pub fn removal(
        &self,
        node: &str,
        voters: &[String],
        up: &dyn Fn(&str) -> bool,
    ) -> Result<MapCommand, MapError> {
        let cmd = self.drain(node)?;
        if voters.iter().any(|v| v == node) {
            let left = voters.iter().filter(|v| *v != node && up(v)).count();
            let majority = voters.len() / 2 + 1;
            if left < majority {
                return Err(MapError::Members(format!(
                    "removing \"{node}\" would leave {left} of the {} voting nodes up, fewer than the majority of {majority} that consensus needs; bring the others back first",
                    voters.len()
                )));
            }
        }
        Ok(cmd)
    }

    /// Applies a change of the members, or refuses it leaving the map unchanged.
    pub(super) fn apply_to_members(&mut self, cmd: &MapCommand) -> Result<(), MapError> {
        let refuse = |reason: String| Err(MapError::Members(reason));
        match cmd {
            MapCommand::AddNode { node, addr } => {
                if self.draining.contains(node) {
                    return refuse(format!(
                        "\"{node}\" is draining; it can join again once it has been removed"
                    ));
                }
                if !self.nodes.contains(node) {
                    self.nodes.push(node.clone());
                }
                // A member that joins again tells where it is now (a new address after a
                // restart); the seeds' addresses stay in nodes.toml.
                self.addrs.insert(node.clone(), addr.clone());
            }
            MapCommand::DrainNode { node, active } => {
                if !self.nodes.contains(node) {
                    return refuse(format!("\"{node}\" is not a member"));
                }
                if self.draining.contains(node) {
                    return Ok(());
                }
                let now = self.active_nodes().count();
                if now != *active as usize {
                    return refuse(format!(
                        "the members changed while removing \"{node}\" ({active} active then, {now} now); try again"
                    ));
                }
                if now <= 1 {
                    return refuse(format!("\"{node}\" is the last node"));
                }
                self.draining.insert(node.clone());
            }
            MapCommand::RemoveNode { node } => {
                if !self.nodes.contains(node) {
                    return refuse(format!("\"{node}\" is not a member"));
                }
                if !self.draining.contains(node) {
                    return refuse(format!("\"{node}\" must be drained before it is removed"));
                }
                if !self.holds_nothing(node) {
                    return refuse(format!("\"{node}\" still holds copies"));
                }
                self.nodes.retain(|n| n != node);
                self.draining.remove(node);
                self.addrs.remove(node);
            }
            _ => return refuse("not a change of the members".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "members_test.rs"]
mod tests;
