use std::cell::RefCell;

use keelson_runtime::{EntityContext, JournalRead};

use super::*;

/// A journal in memory, appended to as the runtime would.
#[derive(Default)]
struct Journal(RefCell<Vec<Vec<u8>>>);

impl JournalRead for Journal {
    fn page(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        Ok(self
            .0
            .borrow()
            .iter()
            .enumerate()
            .skip(after as usize)
            .take(limit)
            .map(|(i, r)| (i as u64 + 1, r.clone()))
            .collect())
    }
}

fn run(state: &mut Option<TasteState>, journal: &Journal, cmd: TasteCommand) -> TasteAnswer {
    let len = journal.0.borrow().len() as u64;
    let ctx = EntityContext::new("c1", 0).with_journal(len, journal);
    let done = Taste::handle(&ctx, state, cmd).unwrap();
    journal.0.borrow_mut().extend(done.append);
    done.reply.unwrap()
}

fn i(id: &str, kind: &str, item: &str) -> TasteInteraction {
    TasteInteraction {
        id: id.into(),
        kind: kind.into(),
        item: item.into(),
    }
}

#[test]
fn each_interaction_counts_once_by_its_id_and_bad_ones_change_nothing() {
    let (mut s, j) = (None, Journal::default());
    let TasteAnswer::Recorded { outcomes, seq } = run(
        &mut s,
        &j,
        TasteCommand::Record(vec![
            i("a1", "view", "x"),
            i("a2", "purchase", "y"),
            i("a1", "purchase", "z"),
            i("a3", "teleport", "x"),
            i("a 4", "view", "x"),
        ]),
    ) else {
        panic!("not a record answer")
    };
    assert_eq!(seq, 2);
    assert!(
        matches!(&outcomes[0], Recorded::Applied { seq: 1, delta: Some(d) } if d.pairs.is_empty())
    );
    match &outcomes[1] {
        Recorded::Applied {
            seq: 2,
            delta: Some(d),
        } => {
            assert_eq!((d.before, d.after), (0, 4), "a purchase weighs 4");
            assert_eq!(d.pairs, vec![("x".to_string(), 1)]);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(outcomes[2], Recorded::Duplicate { seq: 1 });
    assert!(
        matches!(&outcomes[3], Recorded::Refused(DomainError::Invalid { field, .. }) if field == "kind")
    );
    assert!(
        matches!(&outcomes[4], Recorded::Refused(DomainError::Invalid { field, .. }) if field == "id")
    );
    assert_eq!(j.0.borrow().len(), 2);
    let again = run(
        &mut s,
        &j,
        TasteCommand::Record(vec![i("a2", "purchase", "y")]),
    );
    assert!(
        matches!(again, TasteAnswer::Recorded { seq: 2, ref outcomes } if outcomes[0] == Recorded::Duplicate { seq: 2 })
    );
    assert_eq!(s.as_ref().unwrap().profile.weight("y"), 4);
}

#[test]
fn deltas_rebuilt_from_the_journal_equal_the_ones_given_when_recorded() {
    let (mut s, j) = (None, Journal::default());
    let mut given = Vec::new();
    let items = ["x", "y", "x", "z", "y", "x", "x", "w"];
    for (n, item) in items.iter().enumerate() {
        let kind = if n % 3 == 0 { "purchase" } else { "view" };
        let TasteAnswer::Recorded { outcomes, .. } = run(
            &mut s,
            &j,
            TasteCommand::Record(vec![i(&format!("i{n}"), kind, item)]),
        ) else {
            panic!()
        };
        if let Recorded::Applied {
            seq,
            delta: Some(d),
        } = &outcomes[0]
        {
            given.push((*seq, d.clone()));
        }
    }
    let TasteAnswer::Deltas { deltas, seq } = run(&mut s, &j, TasteCommand::Deltas { after: 0 })
    else {
        panic!()
    };
    assert_eq!(seq, given.len() as u64);
    assert_eq!(deltas, given);
    let TasteAnswer::Deltas { deltas, .. } = run(&mut s, &j, TasteCommand::Deltas { after: 3 })
    else {
        panic!()
    };
    assert_eq!(deltas, given[3..].to_vec());
}

#[test]
fn ids_are_remembered_for_the_latest_window() {
    let mut st = TasteState::default();
    for n in 0..(MAX_TASTE_IDS + 5) {
        st.remember(format!("id{n}"), 0);
    }
    assert_eq!(st.ids.len(), MAX_TASTE_IDS);
    assert_eq!(st.recent.len(), MAX_TASTE_IDS);
    assert!(!st.ids.contains_key("id4"));
    assert!(st.ids.contains_key("id5"));
}

#[test]
fn forgetting_numbers_a_removal_of_every_item_that_undoes_the_counts_and_refuses_more() {
    use keelson_recommend::Counts;
    let (mut s, j) = (None, Journal::default());
    let mut counts = Counts::default();
    for (n, item) in ["x", "y", "x", "z"].iter().enumerate() {
        let TasteAnswer::Recorded { outcomes, .. } = run(
            &mut s,
            &j,
            TasteCommand::Record(vec![i(&format!("i{n}"), "purchase", item)]),
        ) else {
            panic!()
        };
        if let Recorded::Applied { delta: Some(d), .. } = &outcomes[0] {
            counts.apply(d, |_| true);
        }
    }
    assert_eq!(s.as_ref().unwrap().seq, 4);
    assert!(!counts.rows.is_empty());
    assert_eq!(
        run(&mut s, &j, TasteCommand::Forget),
        TasteAnswer::Forgetting { seq: 7 },
        "one number per item removed (x, y, z)"
    );
    let st = s.as_ref().unwrap();
    assert!(st.erasing() && st.ids.is_empty() && st.recent.is_empty());
    // The removals come back from the journal like any delta, and take everything away.
    let TasteAnswer::Deltas { deltas, seq: 7 } = run(&mut s, &j, TasteCommand::Deltas { after: 4 })
    else {
        panic!()
    };
    assert_eq!(
        deltas.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    for (_, d) in &deltas {
        assert_eq!(d.after, 0, "{d:?}");
        counts.apply(d, |_| true);
    }
    assert_eq!(counts, Counts::default());
    // Sent again: nothing more to remove. Interactions are refused, and change nothing.
    assert_eq!(
        run(&mut s, &j, TasteCommand::Forget),
        TasteAnswer::Forgetting { seq: 7 }
    );
    let TasteAnswer::Recorded { outcomes, seq: 7 } = run(
        &mut s,
        &j,
        TasteCommand::Record(vec![i("late", "view", "w")]),
    ) else {
        panic!()
    };
    assert!(
        matches!(&outcomes[0], Recorded::Refused(DomainError::Invalid { field, .. }) if field == "customer_id"),
        "{outcomes:?}"
    );
    assert_eq!(j.0.borrow().len(), 7);
    // A customer never seen has nothing to forget.
    let mut none = None;
    assert_eq!(
        run(&mut none, &j, TasteCommand::Forget),
        TasteAnswer::Forgetting { seq: 0 }
    );
    assert!(none.is_none());
}

#[test]
fn answers_carry_at_most_about_a_mebibyte_of_deltas_and_the_rest_pages() {
    let (mut s, j) = (None, Journal::default());
    let list: Vec<TasteInteraction> = (0..MAX_TASTE_BATCH)
        .map(|n| i(&format!("i{n}"), "view", &format!("an-item-named-{n:04}")))
        .collect();
    let TasteAnswer::Recorded { outcomes, seq } = run(&mut s, &j, TasteCommand::Record(list))
    else {
        panic!()
    };
    assert_eq!(seq, MAX_TASTE_BATCH as u64);
    let carried: Vec<&Delta> = outcomes
        .iter()
        .filter_map(|o| match o {
            Recorded::Applied { delta: Some(d), .. } => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        outcomes
            .iter()
            .enumerate()
            .all(|(n, o)| matches!(o, Recorded::Applied { seq, .. } if *seq == n as u64 + 1)),
        "every one counted, numbered in order"
    );
    let size: usize = carried.iter().map(|d| d.encoded_size()).sum();
    assert!(
        carried.len() > 100 && carried.len() < MAX_TASTE_BATCH,
        "{}",
        carried.len()
    );
    assert!(size <= MAX_DELTA_BYTES, "{size}");
    // Paged from the journal: every number once, each page about a mebibyte at most.
    let mut after = 0;
    let mut pages = 0;
    while after < seq {
        let TasteAnswer::Deltas { deltas, .. } = run(&mut s, &j, TasteCommand::Deltas { after })
        else {
            panic!()
        };
        let bytes: usize = deltas.iter().map(|(_, d)| d.encoded_size()).sum();
        let last = deltas.last().map(|(_, d)| d.encoded_size()).unwrap_or(0);
        assert!(bytes <= MAX_DELTA_BYTES + last, "{bytes}");
        assert_eq!(deltas[0].0, after + 1);
        if after == 0 {
            assert!(
                deltas.len().abs_diff(carried.len()) <= 1,
                "about the room of the Record answer: {} vs {}",
                deltas.len(),
                carried.len()
            );
        }
        after = deltas.last().unwrap().0;
        pages += 1;
    }
    assert_eq!(after, seq);
    assert!(pages > 2, "{pages}");
}
