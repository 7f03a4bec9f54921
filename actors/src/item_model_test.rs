use keelson_recommend::data::Row;
use keelson_recommend::offline::Model;
use keelson_recommend::Profile;
use keelson_runtime::EntityContext;

use super::*;

fn run(
    id: &str,
    state: &mut Option<ItemModelState>,
    cmd: ItemModelCommand,
) -> (ItemModelReply, bool) {
    let ctx = EntityContext::new(id, 0);
    let done = ItemModel::handle(&ctx, state, cmd).unwrap();
    (done.reply, done.changed)
}

/// Interactions with planted structure: customers of group g mostly touch items g*10..g*10+9.
fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for u in 0..30u32 {
        let g = u % 3;
        for n in 0..8u32 {
            let item = if n == 7 {
                (u * 7) % 30
            } else {
                g * 10 + (u + n * 3) % 10
            };
            out.push(Row {
                user: format!("u{u}"),
                item: format!("i{item}"),
                rating: 1.0,
                at: u64::from(n),
            });
        }
    }
    out
}

fn apply(
    states: &mut [Option<ItemModelState>],
    updates: &[(String, u64, Delta)],
) -> Vec<(String, u64)> {
    let mut behind = Vec::new();
    for (k, st) in states.iter_mut().enumerate() {
        let k = k as u32;
        let ups = updates
            .iter()
            .map(|(c, seq, d)| ModelUpdate {
                customer: c.clone(),
                seq: *seq,
                delta: d.for_partition(k),
            })
            .collect();
        let (reply, _) = run(
            &item_model_id(k),
            st,
            ItemModelCommand::Apply {
                updates: ups,
                heads: vec![],
            },
        );
        if let Ok(ItemModelAnswer::Applied { behind: b, .. }) = reply {
            behind.extend(b);
        }
    }
    behind
}

#[test]
fn partitions_answer_what_one_model_in_memory_answers() {
    let data = rows();
    let mut profiles: HashMap<String, (Profile, u64)> = HashMap::new();
    let mut updates = Vec::new();
    for r in &data {
        let (p, seq) = profiles.entry(r.user.clone()).or_default();
        if let Some(d) = Delta::record(p, &r.item, 1) {
            *seq += 1;
            updates.push((r.user.clone(), *seq, d));
        }
    }
    let mut states: Vec<Option<ItemModelState>> = vec![None; ITEM_PARTITIONS as usize];
    // Every update twice: the second time each is a duplicate and changes nothing.
    assert!(apply(&mut states, &updates).is_empty());
    let before: Vec<Counts> = states
        .iter()
        .map(|s| s.as_ref().unwrap().counts.clone())
        .collect();
    assert!(apply(&mut states, &updates).is_empty());
    let after: Vec<Counts> = states
        .iter()
        .map(|s| s.as_ref().unwrap().counts.clone())
        .collect();
    assert_eq!(before, after, "duplicates change nothing");

    let model = Model::train(&data, 1);
    let params = SimParams::default();
    let table = model.neighbour_table(&params);
    for user in ["u0", "u1", "u2", "u17"] {
        let history: Vec<(String, u32)> = model.profiles[user]
            .items()
            .map(|(i, w)| (i.clone(), w))
            .collect();
        let mut merged = Scores::default();
        let mut all = Vec::new();
        for (k, st) in states.iter_mut().enumerate() {
            let (reply, changed) = run(
                &item_model_id(k as u32),
                st,
                ItemModelCommand::Score {
                    history: history.clone(),
                    limit: 10,
                    params,
                },
            );
            assert!(!changed);
            let Ok(ItemModelAnswer::Scored { items, .. }) = reply else {
                panic!("{reply:?}")
            };
            all.extend(items);
        }
        for s in &all {
            merged.add_candidate(&s.item, &[("x", 1, s.score)]);
        }
        let got: Vec<String> = merged
            .top(10, |_| true)
            .into_iter()
            .map(|s| s.item)
            .collect();
        let want: Vec<String> = model
            .recommend(user, 10, &table)
            .into_iter()
            .map(|s| s.item)
            .collect();
        assert_eq!(got, want, "{user}");
        assert!(!want.is_empty());
    }
}

#[test]
fn a_gap_is_reported_and_nothing_past_it_is_applied() {
    let mut p = Profile::default();
    let d1 = Delta::record(&mut p, "a", 1).unwrap();
    let d2 = Delta::record(&mut p, "b", 1).unwrap();
    let d3 = Delta::record(&mut p, "c", 1).unwrap();
    let mut st = None;
    let id = item_model_id(partition_of("a"));
    let k = partition_of("a");
    let up = |seq: u64, d: &Delta| ModelUpdate {
        customer: "c1".into(),
        seq,
        delta: d.for_partition(k),
    };
    let (reply, changed) = run(
        &id,
        &mut st,
        ItemModelCommand::Apply {
            updates: vec![up(1, &d1), up(3, &d3)],
            heads: vec![("c2".into(), 4)],
        },
    );
    assert!(changed);
    assert_eq!(
        reply,
        Ok(ItemModelAnswer::Applied {
            applied: 1,
            duplicates: 0,
            behind: vec![("c1".into(), 1), ("c2".into(), 0)],
            version: 1
        })
    );
    let (reply, _) = run(
        &id,
        &mut st,
        ItemModelCommand::Apply {
            updates: vec![up(2, &d2), up(3, &d3), up(1, &d1)],
            heads: vec![],
        },
    );
    assert!(
        matches!(reply, Ok(ItemModelAnswer::Applied { applied: 2, duplicates: 1, ref behind, .. }) if behind.is_empty())
    );
    assert_eq!(st.unwrap().counts.norms.len(), 3);
}

#[test]
fn only_partition_ids_are_models() {
    for bad in ["p32", "q1", "p01", "p", "p-1"] {
        let (reply, changed) = run(bad, &mut None, ItemModelCommand::Popular { limit: 3 });
        assert!(
            matches!(reply, Err(DomainError::Invalid { ref field, .. }) if field == "id"),
            "{bad}"
        );
        assert!(!changed);
    }
}
