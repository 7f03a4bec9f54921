//! The cluster as the runner sees it from outside: its members, the gateway, the link control.
//! It waits for the cluster to settle, makes one probe key per shard, and turns the names a
//! scenario uses (`busy-primary`, `random-node`, `nodes`, `all`, `rest`, labels) into members.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::{RunError, Target};
use crate::control::LinkClient;
use crate::faults::{apply, status, ProcessFault};
use crate::history::Outcome;
use crate::scenario::Scenario;
use crate::workload::Gateway;

/// Labels bound by earlier faults: label → the members it names.
pub(super) type Labels = HashMap<String, Vec<String>>;

/// The primary of the busiest shard, looked up only when a fault names `busy-primary`.
pub(super) type BusyPrimary<'a> = &'a dyn Fn() -> Option<String>;

pub(super) struct Cluster<'a> {
    pub(super) target: &'a Target,
    pub(super) gateway: Gateway,
    pub(super) links: Option<LinkClient>,
    /// Every node and the gateway.
    pub(super) members: Vec<String>,
    pub(super) nodes: Vec<String>,
}

impl<'a> Cluster<'a> {
    /// The cluster of `target`, with a link client when the scenario works on links.
    pub(super) fn new(scenario: &Scenario, target: &'a Target) -> Result<Self, RunError> {
        let links = if scenario.needs_link_proxies() {
            Some(LinkClient::for_cluster(
                &target.data_dir,
                target.api.http.clone(),
            )?)
        } else {
            None
        };
        let nodes: Vec<String> = target.nodes.iter().map(|(n, _)| n.clone()).collect();
        let mut members = nodes.clone();
        members.push(target.gateway.clone());
        Ok(Self {
            target,
            gateway: target.api.clone(),
            links,
            members,
            nodes,
        })
    }

    /// Waits until the gateway sees every node up and no shard under-replicated.
    pub(super) async fn settle(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer from the gateway");
        while Instant::now() < deadline {
            if let Some(v) = self.gateway.get_json("/v1/cluster").await {
                let up = v["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter(|m| m["role"] == "node" && m["state"] == "up")
                            .count()
                    })
                    .unwrap_or(0);
                let under = v["under_replicated"].as_u64().unwrap_or(u64::MAX);
                let learners = v["learners"].as_u64().unwrap_or(u64::MAX);
                if up == self.nodes.len() && under == 0 && learners == 0 {
                    return Ok(());
                }
                last = format!(
                    "{up}/{} nodes up, {under} shards under-replicated, {learners} copies in progress",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// Undoes what the scenario left behind (link faults, frozen members), so the final reads
    /// see a whole cluster, then waits for it to settle.
    pub(super) async fn heal_and_settle(&self) -> Result<(), String> {
        if let Some(links) = &self.links {
            let _ = links.heal().await;
        }
        if let Ok(members) = status(&self.target.data_dir) {
            for m in members.iter().filter(|m| m.state == "frozen") {
                let _ = apply(&self.target.data_dir, &m.name, ProcessFault::Thaw);
            }
        }
        self.settle(Duration::from_secs(60)).await
    }

    /// Finds a key on every shard, creates them, and returns them by shard.
    pub(super) async fn probe_keys(&self, prefix: &str) -> Result<HashMap<u32, String>, String> {
        let mut found: HashMap<u32, String> = HashMap::new();
        let mut j = 0u32;
        let limit = self.target.shards * 40;
        while found.len() < self.target.shards as usize && j < limit {
            let batch: Vec<String> = (j..j + 64).map(|i| format!("{prefix}-p{i}")).collect();
            j += 64;
            let located = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|id| async move { (id.clone(), self.gateway.shard_of(id).await) }),
            )
            .await;
            for (id, shard) in located {
                if let Some(s) = shard {
                    found.entry(s).or_insert(id);
                }
            }
        }
        let ids: Vec<(u32, String)> = found.iter().map(|(s, k)| (*s, k.clone())).collect();
        for chunk in ids.chunks(32) {
            let created = futures_util::future::join_all(
                chunk.iter().map(|(_, id)| self.gateway.create(id, 1)),
            )
            .await;
            if created.contains(&Outcome::Unknown) {
                return Err("could not create the probe keys".to_string());
            }
        }
        Ok(found)
    }

    /// Every member but `subjects`.
    pub(super) fn everyone_but(&self, subjects: &[String]) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !subjects.contains(m))
            .cloned()
            .collect()
    }

    /// The members one name stands for.
    pub(super) fn resolve_one(
        &self,
        name: &str,
        labels: &Labels,
        busy_primary: BusyPrimary,
    ) -> Result<Vec<String>, String> {
        match name {
            "busy-primary" => busy_primary()
                .map(|p| vec![p])
                .ok_or_else(|| "no primary known for the busiest shard".to_string()),
            "random-node" => self.random_node().map(|n| vec![n]),
            "nodes" => Ok(self.nodes.clone()),
            "all" => Ok(self.members.clone()),
            other => Ok(labels
                .get(other)
                .cloned()
                .unwrap_or_else(|| vec![other.to_string()])),
        }
    }

    fn random_node(&self) -> Result<String, String> {
        let running: Vec<String> = status(&self.target.data_dir)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|m| m.role == "node" && m.state == "running")
            .map(|m| m.name)
            .collect();
        if running.is_empty() {
            return Err("no node is running".to_string());
        }
        Ok(running[rand::rng().random_range(0..running.len())].clone())
    }

    /// The members a group stands for; `rest` is every member not in `other`.
    pub(super) fn resolve_group(
        &self,
        group: &[String],
        other: &[String],
        labels: &Labels,
        busy_primary: BusyPrimary,
    ) -> Result<Vec<String>, String> {
        if group.len() == 1 && group[0] == "rest" {
            return Ok(self.everyone_but(other));
        }
        let mut out = Vec::new();
        for g in group {
            for m in self.resolve_one(g, labels, busy_primary)? {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }
}
