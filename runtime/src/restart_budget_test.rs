use super::*;

fn policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 5,
        window: Duration::from_secs(10),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(1000),
        quarantine: Duration::from_secs(30),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = policy();
    let t0 = Instant::now();
    let mut t = RestartTracker::default();
    let afters: Vec<Duration> = (0..5)
        .map(|i| match t.on_failure(&p, t0 + ms(i * 10)) {
            RestartDecision::Restart { after, attempt } => {
                assert_eq!(attempt, i as u32 + 1);
                after
            }
            other => panic!("failure {i}: {other:?}"),
        })
        .collect();
    assert_eq!(afters, vec![ms(100), ms(200), ms(400), ms(800), ms(1000)]);
}

#[test]
fn the_sixth_failure_in_the_window_quarantines() {
    let p = policy();
    let t0 = Instant::now();
    let mut t = RestartTracker::default();
    for i in 0..5 {
        assert!(matches!(
            t.on_failure(&p, t0 + ms(i * 100)),
            RestartDecision::Restart { .. }
        ));
    }
    let now = t0 + ms(600);
    assert_eq!(
        t.on_failure(&p, now),
        RestartDecision::Quarantine {
            until: now + Duration::from_secs(30)
        }
    );
    // The budget starts afresh after a quarantine.
    assert_eq!(
        t.on_failure(&p, now + Duration::from_secs(31)),
        RestartDecision::Restart {
            after: ms(100),
            attempt: 1
        }
    );
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let p = policy();
    let t0 = Instant::now();
    let mut t = RestartTracker::default();
    for i in 0..5 {
        t.on_failure(&p, t0 + Duration::from_secs(3 * i));
    }
    // 15 s after the first: only failures at 6, 9, 12 s are inside the window.
    match t.on_failure(&p, t0 + Duration::from_secs(15)) {
        RestartDecision::Restart { attempt, .. } => assert_eq!(attempt, 4),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tracker_is_idle_once_the_window_has_passed() {
    let p = policy();
    let t0 = Instant::now();
    let mut t = RestartTracker::default();
    assert!(t.is_idle(&p, t0));
    t.on_failure(&p, t0);
    assert!(!t.is_idle(&p, t0 + ms(9_999)));
    assert!(t.is_idle(&p, t0 + ms(10_000)));
}
