use keelson_recommend::data::Row;
use keelson_recommend::offline::Model;
use keelson_recommend::{Index, Profile};
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
        let ups = for_partition(k, updates);
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

/// The part of each of `updates` partition `k` is sent.
fn for_partition(k: u32, updates: &[(String, u64, Delta)]) -> Vec<ModelUpdate> {
    updates
        .iter()
        .map(|(c, seq, d)| ModelUpdate {
            customer: c.clone(),
            seq: *seq,
            delta: d.for_partition(k),
        })
        .collect()
}

/// Every customer's deltas of `data`, numbered.
fn updates_of(data: &[Row]) -> Vec<(String, u64, Delta)> {
    let mut profiles: HashMap<String, (Profile, u64)> = HashMap::new();
    let mut updates = Vec::new();
    for r in data {
        let (p, seq) = profiles.entry(r.user.clone()).or_default();
        if let Some(d) = Delta::record(p, &r.item, 1) {
            *seq += 1;
            updates.push((r.user.clone(), *seq, d));
        }
    }
    updates
}

#[test]
fn partitions_answer_what_one_model_in_memory_answers() {
    let data = rows();
    let updates = updates_of(&data);
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
    let (mut lists, mut popularity) = (Vec::new(), Vec::new());
    for (k, st) in states.iter_mut().enumerate() {
        let mut after = None;
        loop {
            let (reply, changed) = run(
                &item_model_id(k as u32),
                st,
                ItemModelCommand::Neighbours {
                    params,
                    unless: None,
                    after: after.clone(),
                },
            );
            assert!(!changed);
            let Ok(ItemModelAnswer::Neighbours {
                lists: page,
                popularity: p,
                more,
                version,
            }) = reply
            else {
                panic!("{reply:?}")
            };
            assert!(
                after.is_none() || p.is_empty(),
                "popularity on the first page only"
            );
            let (unchanged, _) = run(
                &item_model_id(k as u32),
                st,
                ItemModelCommand::Neighbours {
                    params,
                    unless: Some(version),
                    after: None,
                },
            );
            assert_eq!(unchanged, Ok(ItemModelAnswer::Unchanged { version }));
            after = page.last().map(|(j, _)| j.clone());
            lists.extend(page);
            popularity.extend(p);
            if !more {
                break;
            }
        }
    }
    let served = Index::build(lists, popularity);
    let offline = model.index(&params);
    assert_eq!(served.len(), offline.len());
    assert_eq!(served.entries(), offline.entries());
    assert_eq!(
        served.popular(50, |_| false),
        offline.popular(50, |_| false)
    );
    for user in ["u0", "u1", "u2", "u17"] {
        let history: Vec<(&str, u32)> = model.profiles[user]
            .items()
            .map(|(i, w)| (i.as_str(), w))
            .collect();
        let want = model.recommend(user, 10, &offline);
        assert_eq!(served.recommend(&history, 10), want, "{user}");
        assert!(!want.is_empty());
    }
}

#[test]
fn a_large_partition_answers_in_pages() {
    let mut p = Profile::default();
    let mut st = Some(ItemModelState::default());
    let me = 0;
    // Enough items co-occurring with each other that one page cannot hold every list.
    let items: Vec<String> = (0..20_000)
        .map(|n| format!("i{n}"))
        .filter(|i| partition_of(i) == me)
        .take(250)
        .collect();
    let mut updates = Vec::new();
    let mut seq = 0;
    for i in &items {
        if let Some(d) = Delta::record(&mut p, i, 1) {
            seq += 1;
            updates.push(ModelUpdate {
                customer: "c".into(),
                seq,
                delta: d.for_partition(me),
            });
        }
    }
    let (applied, _) = run(
        &item_model_id(me),
        &mut st,
        ItemModelCommand::Apply {
            updates,
            heads: vec![],
        },
    );
    assert!(matches!(
        applied,
        Ok(ItemModelAnswer::Applied { applied: 250, .. })
    ));
    let params = SimParams {
        neighbours: 1000,
        ..SimParams::default()
    };
    let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let (reply, _) = run(
            &item_model_id(me),
            &mut st,
            ItemModelCommand::Neighbours {
                params,
                unless: None,
                after: after.clone(),
            },
        );
        let Ok(ItemModelAnswer::Neighbours { lists, more, .. }) = reply else {
            panic!("{reply:?}")
        };
        let entries: usize = lists.iter().map(|(_, n)| n.len()).sum();
        assert!(entries <= NEIGHBOUR_PAGE_ENTRIES || lists.len() == 1);
        pages += 1;
        after = lists.last().map(|(j, _)| j.clone());
        seen.extend(lists.into_iter().map(|(j, _)| j));
        if !more {
            break;
        }
    }
    let mut want = items.clone();
    want.sort();
    assert_eq!(seen, want, "every list once, by name");
    assert!(
        pages > 1,
        "250 lists of 249 neighbours fill more than one page"
    );
    // The rows page the same way: each once, by name, the items on the first page only.
    let (mut rows_seen, mut pages, mut after, mut items_seen) = (Vec::new(), 0, None, 0);
    loop {
        let (reply, _) = run(
            &item_model_id(me),
            &mut st,
            ItemModelCommand::Rows {
                unless: None,
                after: after.clone(),
            },
        );
        let Ok(ItemModelAnswer::Rows {
            rows, items, more, ..
        }) = reply
        else {
            panic!("{reply:?}")
        };
        assert!(pages == 0 || items.is_empty());
        items_seen += items.len();
        pages += 1;
        after = rows.last().map(|(i, _)| i.clone());
        assert!(rows.iter().all(|(_, r)| r.len() == 249));
        rows_seen.extend(rows.into_iter().map(|(i, _)| i));
        if !more {
            break;
        }
    }
    assert_eq!(rows_seen, want, "every row once, by name");
    assert_eq!(items_seen, 250);
    assert!(pages > 1, "250 rows of 249 counts fill more than one page");
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
    for bad in ["p64", "q1", "p01", "p", "p-1"] {
        let (reply, changed) = run(bad, &mut None, ItemModelCommand::Counts);
        assert!(
            matches!(reply, Err(DomainError::Invalid { ref field, .. }) if field == "id"),
            "{bad}"
        );
        assert!(!changed);
    }
}

#[test]
fn the_rows_of_every_partition_give_the_ease_lists_of_one_model_in_memory() {
    let data = rows();
    let mut states: Vec<Option<ItemModelState>> = vec![None; ITEM_PARTITIONS as usize];
    assert!(apply(&mut states, &updates_of(&data)).is_empty());
    let (mut rows_all, mut norms) = (HashMap::new(), HashMap::new());
    for (k, st) in states.iter_mut().enumerate() {
        let (mut after, mut first) = (None, true);
        loop {
            let (reply, changed) = run(
                &item_model_id(k as u32),
                st,
                ItemModelCommand::Rows {
                    unless: None,
                    after: after.clone(),
                },
            );
            assert!(!changed);
            let Ok(ItemModelAnswer::Rows {
                rows,
                items,
                more,
                version,
            }) = reply
            else {
                panic!("{reply:?}")
            };
            assert!(first || items.is_empty(), "items on the first page only");
            first = false;
            let (unchanged, _) = run(
                &item_model_id(k as u32),
                st,
                ItemModelCommand::Rows {
                    unless: Some(version),
                    after: None,
                },
            );
            assert_eq!(unchanged, Ok(ItemModelAnswer::Unchanged { version }));
            for (i, n, _) in items {
                assert_eq!(partition_of(&i), k as u32, "{i} is not p{k}'s");
                assert!(norms.insert(i, n).is_none(), "an item given twice");
            }
            after = rows.last().map(|(i, _)| i.clone());
            for (i, r) in rows {
                rows_all.insert(i, r.into_iter().collect::<HashMap<String, u64>>());
            }
            if !more {
                break;
            }
        }
    }
    let model = Model::train(&data, 1);
    assert_eq!(norms, model.counts.norms);
    assert_eq!(rows_all, model.counts.rows);
    let gathered = Counts {
        norms,
        customers: HashMap::new(),
        rows: rows_all,
    };
    let served = keelson_recommend::ease::solve_counts(&gathered, 300.0, 200).unwrap();
    let offline = keelson_recommend::ease::solve_counts(&model.counts, 300.0, 200).unwrap();
    assert_eq!(
        served, offline,
        "the same counts solve to the same lists, bit for bit"
    );
}

#[test]
fn replaying_the_records_of_applies_rebuilds_the_partition_they_were_appended_on() {
    let updates = updates_of(&rows());
    let k = 3u32;
    let id = item_model_id(k);
    let mut live = None;
    let mut records = Vec::new();
    // In batches of 7, the last one again (all duplicates: nothing to record).
    let mut batches: Vec<&[(String, u64, Delta)]> = updates.chunks(7).collect();
    batches.push(batches[batches.len() - 1]);
    for batch in batches {
        let ups = for_partition(k, batch);
        let ctx = EntityContext::new(&id, 0);
        let done = ItemModel::handle(
            &ctx,
            &mut live,
            ItemModelCommand::Apply {
                updates: ups,
                heads: vec![],
            },
        )
        .unwrap();
        assert_eq!(done.changed, !done.append.is_empty());
        records.extend(done.append);
    }
    assert_eq!(
        records.len(),
        updates.len().div_ceil(7),
        "duplicates append nothing"
    );
    let mut replayed = None;
    for r in &records {
        ItemModel::replay(&id, &mut replayed, r).unwrap();
    }
    let (live, replayed) = (live.unwrap(), replayed.unwrap());
    assert_eq!(replayed.counts, live.counts);
    assert_eq!(replayed.last, live.last);
    assert_eq!(replayed.version, live.version);
    // Replaying a record twice changes nothing (each update applies once by its number).
    let mut again = Some(replayed.clone());
    ItemModel::replay(&id, &mut again, &records[0]).unwrap();
    assert_eq!(again.unwrap().counts, replayed.counts);
    assert!(ItemModel::replay(&id, &mut None, b"junk").is_err());
}

#[test]
fn an_erased_customer_leaves_the_counts_of_the_others_and_no_id() {
    let data = rows();
    let erased = "u4";
    let mut states: Vec<Option<ItemModelState>> = vec![None; ITEM_PARTITIONS as usize];
    let mut updates = updates_of(&data);
    // The erased customer's removals, numbered after its interactions.
    let mut profile = Profile::default();
    let mut seq = 0;
    for (c, n, d) in &updates {
        if c == erased {
            profile.add(&d.item, d.after - d.before);
            seq = *n;
        }
    }
    let items: Vec<String> = profile.weights.keys().cloned().collect();
    for item in items {
        seq += 1;
        let d = Delta::remove(&mut profile, &item).unwrap();
        updates.push((erased.to_string(), seq, d));
    }
    assert!(apply(&mut states, &updates).is_empty());
    let others: Vec<Row> = data.iter().filter(|r| r.user != erased).cloned().collect();
    let mut want: Vec<Option<ItemModelState>> = vec![None; ITEM_PARTITIONS as usize];
    assert!(apply(&mut want, &updates_of(&others)).is_empty());
    for (k, (got, want)) in states.iter_mut().zip(&want).enumerate() {
        let id = item_model_id(k as u32);
        let (got_counts, want_counts) = (
            got.as_ref().map(|s| s.counts.clone()).unwrap_or_default(),
            want.as_ref().map(|s| s.counts.clone()).unwrap_or_default(),
        );
        assert_eq!(got_counts, want_counts, "{id}");
        let forget = |st: &mut Option<ItemModelState>, seq: u64| {
            run(
                &id,
                st,
                ItemModelCommand::Forget {
                    customer: erased.into(),
                    seq,
                },
            )
        };
        // A Forget at another number changes nothing; at the last removal it drops the id.
        let (reply, changed) = forget(got, seq - 1);
        assert_eq!(reply, Ok(ItemModelAnswer::Forgot { held: Some(seq) }));
        assert!(!changed);
        let (reply, changed) = forget(got, seq);
        assert_eq!(reply, Ok(ItemModelAnswer::Forgot { held: Some(seq) }));
        assert!(changed);
        let st = got.as_ref().unwrap();
        assert!(!st.last.contains_key(erased), "{id}");
        assert_eq!(st.last.len(), 29, "{id}");
        let (reply, changed) = forget(got, seq);
        assert_eq!(reply, Ok(ItemModelAnswer::Forgot { held: None }));
        assert!(!changed);
    }
}
