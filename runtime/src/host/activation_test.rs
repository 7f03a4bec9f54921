use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_cap_evicts_the_least_recently_used() {
    let t0 = Instant::now();
    let mut t = ActivationTable::new(3, secs(300));
    for k in ["a", "b", "c"] {
        assert!(t.touch(&k, t0).is_empty());
    }
    t.touch(&"a", t0); // a is now the most recent
    assert_eq!(t.touch(&"d", t0), vec!["b"]);
    assert_eq!(t.touch(&"e", t0), vec!["c"]);
    assert_eq!(t.len(), 3);
}

#[test]
fn retouching_does_not_grow_the_table() {
    let t0 = Instant::now();
    let mut t = ActivationTable::new(2, secs(300));
    for _ in 0..10 {
        assert!(t.touch(&"a", t0).is_empty());
    }
    assert_eq!(t.len(), 1);
}

#[test]
fn idle_entities_are_taken_oldest_first_and_only_once() {
    let t0 = Instant::now();
    let mut t = ActivationTable::new(10, secs(60));
    t.touch(&"a", t0);
    t.touch(&"b", t0 + secs(30));
    t.touch(&"c", t0 + secs(50));
    assert!(
        t.take_idle(t0 + secs(60)).is_empty(),
        "exactly the timeout is not idle yet"
    );
    assert_eq!(t.take_idle(t0 + secs(91)), vec!["a", "b"]);
    assert!(t.take_idle(t0 + secs(91)).is_empty());
    assert_eq!(t.len(), 1);
}

#[test]
fn removed_entities_are_neither_idle_nor_evicted() {
    let t0 = Instant::now();
    let mut t = ActivationTable::new(2, secs(1));
    t.touch(&"a", t0);
    t.touch(&"b", t0);
    t.remove(&"a");
    assert!(t.touch(&"c", t0).is_empty());
    assert_eq!(t.take_idle(t0 + secs(5)), vec!["b", "c"]);
    assert!(t.is_empty());
}
