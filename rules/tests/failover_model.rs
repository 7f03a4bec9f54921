//! The failover protocol, model-checked: every interleaving of writes, heartbeats, planning,
//! hand-overs, catch-up, map learning, message loss and reordering, crashes, pauses and link cuts
//! within small bounds, explored breadth-first by stateright over keelson-rules' functions.
//!
//! Promises checked in every reachable state (one per property, named):
//! - one_writer_per_shard: never two nodes that could both get a write acknowledged for a shard;
//! - no_acknowledged_write_lost: every copy that can be promoted (the newest map's primary and
//!   in-sync followers) holds every acknowledged write;
//! - reads_are_never_stale: whatever node would answer a read answers with a value at least as
//!   new as every acknowledged write;
//! - no_duplicate_primary_counted: the primary's own fencing check never fires.
//!
//! Known-bad variants must be caught: the protocol as it was before this model (a peer that had
//! applied a newer map still supported the old primary's lease, and a promoted primary served at
//! once), a promoted primary that serves before the old primary's lease has surely run out, and
//! a planner that seizes the primary role instead of asking the old primary to hand it over.

#[path = "failover_model/model.rs"]
mod model;

use std::time::Instant;

use keelson_rules::ShardId;
use model::{actions, step, Action, Bounds, State, Variant};
use stateright::{Checker, HasDiscoveries, Model, Property};

struct Failover(Bounds);

impl Model for Failover {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.0.init()]
    }

    fn actions(&self, state: &State, out: &mut Vec<Action>) {
        actions(&self.0, state, out);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        step(&self.0, state, &action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one_writer_per_shard", |m: &Self, s: &State| {
                one_writer_per_shard(&m.0, s)
            }),
            Property::always("no_acknowledged_write_lost", |_, s: &State| {
                no_acknowledged_write_lost(s)
            }),
            Property::always("reads_are_never_stale", |m: &Self, s: &State| {
                reads_are_never_stale(&m.0, s)
            }),
            Property::always("no_duplicate_primary_counted", |_, s: &State| {
                !s.fenced_badly
            }),
            Property::sometimes("a_promoted_primary_acknowledges_a_write", |_, s: &State| {
                let first = &s.log[0];
                s.acked
                    .iter()
                    .any(|(sh, lsn)| lsn >> 40 > first.epoch(ShardId(u32::from(*sh))))
            }),
        ]
    }
}

fn one_writer_per_shard(b: &Bounds, st: &State) -> bool {
    (0..b.shards as u8).all(|s| {
        (0..b.nodes as u8)
            .filter(|n| st.could_acknowledge(b, *n, s))
            .count()
            <= 1
    })
}

fn no_acknowledged_write_lost(st: &State) -> bool {
    let map = st.log.last().expect("a map");
    st.acked.iter().all(|(s, lsn)| {
        let p = map.placement(ShardId(u32::from(*s)));
        std::iter::once(&p.primary)
            .chain(&p.in_sync)
            .all(|n| st.store_of(n, *s) >= *lsn)
    })
}

fn reads_are_never_stale(b: &Bounds, st: &State) -> bool {
    (0..b.shards as u8).all(|s| {
        let newest = st.acked.iter().filter(|a| a.0 == s).map(|a| a.1).max();
        (0..b.nodes as u8).all(|n| match (st.read(b, n, s), newest) {
            (Some(lsn), Some(acked)) => lsn >= acked,
            _ => true,
        })
    })
}

fn bounds(nodes: usize, shards: u32, variant: Variant) -> Bounds {
    Bounds {
        nodes,
        shards,
        rf: nodes.min(3),
        writes: 1,
        faults: 1,
        map_changes: 1,
        failure_timeout: 8,
        moved: false,
        variant,
    }
}

fn explore(b: Bounds, stop_at_first_failure: bool) -> impl Checker<Failover> {
    let label = format!("{b:?}");
    let started = Instant::now();
    let mut builder = Failover(b).checker().threads(2);
    if stop_at_first_failure {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_dfs().join();
    eprintln!(
        "{label}: {} states ({} unique), depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    checker
}

/// Explores `b` and asserts that `promise` breaks, printing the counterexample.
fn caught(b: Bounds, promise: &'static str) {
    let c = explore(b, true);
    let path = c.assert_any_discovery(promise);
    eprintln!("{promise} broken by: {:?}", path.into_actions());
}

#[test]
fn keelson_keeps_its_promises_3_nodes_1_shard() {
    explore(bounds(3, 1, Variant::Keelson), false).assert_properties();
}

#[test]
fn keelson_keeps_its_promises_through_a_hand_over() {
    let b = Bounds {
        moved: true,
        ..bounds(3, 1, Variant::Keelson)
    };
    explore(b, false).assert_properties();
}

#[test]
fn the_protocol_before_the_model_is_caught_serving_stale_reads() {
    caught(
        bounds(3, 1, Variant::SupportFromNewerMaps),
        "reads_are_never_stale",
    );
}

#[test]
fn serving_before_the_old_lease_ran_out_is_caught() {
    caught(
        bounds(3, 1, Variant::ServeWithoutWaitingOutTheLease),
        "reads_are_never_stale",
    );
}

#[test]
fn seizing_the_primary_role_instead_of_handing_over_is_caught() {
    let b = Bounds {
        moved: true,
        map_changes: 2,
        ..bounds(3, 1, Variant::SeizeInsteadOfHandOver)
    };
    caught(b, "reads_are_never_stale");
}

/// Larger bounds, run by `.ci/run` in release: four nodes.
#[test]
#[ignore = "minutes; run by .ci/run"]
fn keelson_keeps_its_promises_4_nodes_1_shard() {
    explore(bounds(4, 1, Variant::Keelson), false).assert_properties();
}

/// Larger bounds, run by `.ci/run` in release: two shards on three nodes.
#[test]
#[ignore = "minutes; run by .ci/run"]
fn keelson_keeps_its_promises_3_nodes_2_shards() {
    explore(bounds(3, 2, Variant::Keelson), false).assert_properties();
}

/// Larger bounds, run by `.ci/run` in release: two map changes (a failover and a drop, or a
/// hand-over and a failover) on three nodes.
#[test]
#[ignore = "minutes; run by .ci/run"]
fn keelson_keeps_its_promises_3_nodes_2_map_changes() {
    let b = Bounds {
        map_changes: 2,
        ..bounds(3, 1, Variant::Keelson)
    };
    explore(b, false).assert_properties();
}

/// For sizing the bounds: `KEELSON_MODEL="nodes shards writes faults changes variant"`.
#[test]
#[ignore = "sizing aid; run by hand"]
fn explore_from_env() {
    let v: Vec<String> = std::env::var("KEELSON_MODEL")
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let mut b = bounds(
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        Variant::Keelson,
    );
    b.writes = v[2].parse().unwrap();
    b.faults = v[3].parse().unwrap();
    b.map_changes = v[4].parse().unwrap();
    b.moved = v.get(6).is_some_and(|m| m == "moved");
    b.variant = match v[5].as_str() {
        "nowait" => Variant::ServeWithoutWaitingOutTheLease,
        "seize" => Variant::SeizeInsteadOfHandOver,
        "before" => Variant::SupportFromNewerMaps,
        _ => Variant::Keelson,
    };
    let c = explore(b, std::env::var("KEELSON_MODEL_STOP").is_ok());
    for (name, path) in c.discoveries() {
        eprintln!("{name}: {:?}", path.into_actions());
    }
}
