use super::*;

const TIMEOUT: Duration = Duration::from_millis(1000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn detector(t0: Instant) -> FailureDetector {
    FailureDetector::new(TIMEOUT, ["n2".to_string(), "n3".to_string()], t0)
}

#[test]
fn peers_start_joining_and_come_up_when_heard() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    assert_eq!(fd.state("n2"), Some(PeerState::Joining));
    let t = fd.heard("n2", ms(1), t0 + ms(10)).expect("transition");
    assert_eq!(
        (t.from, t.to, t.cause),
        (PeerState::Joining, PeerState::Up, Cause::Heard)
    );
    assert_eq!(
        fd.heard("n2", ms(1), t0 + ms(20)),
        None,
        "already up: no transition"
    );
}

#[test]
fn silence_up_to_the_timeout_is_tolerated() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    fd.heard("n2", ms(1), t0);
    fd.heard("n3", ms(1), t0);
    assert!(fd.tick(t0 + TIMEOUT).is_empty());
}

#[test]
fn silence_past_the_timeout_marks_down_once() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    fd.heard("n2", ms(1), t0);
    fd.heard("n3", ms(1), t0 + ms(600));
    let down = fd.tick(t0 + ms(1001));
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].peer, "n2");
    assert_eq!(down[0].to, PeerState::Down);
    assert_eq!(down[0].cause, Cause::Silent(ms(1001)));
    assert!(fd.tick(t0 + ms(1100)).is_empty(), "down is reported once");
    assert_eq!(fd.state("n3"), Some(PeerState::Up));
}

#[test]
fn a_peer_never_heard_is_marked_down_after_the_timeout() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    let down = fd.tick(t0 + ms(1500));
    assert_eq!(down.len(), 2);
    assert!(down.iter().all(|t| t.from == PeerState::Joining));
}

#[test]
fn connection_loss_marks_an_up_peer_down_at_once() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    fd.heard("n2", ms(1), t0);
    let t = fd.connection_lost("n2", t0 + ms(5)).expect("transition");
    assert_eq!((t.to, t.cause), (PeerState::Down, Cause::ConnectionLost));
    assert_eq!(fd.connection_lost("n2", t0 + ms(6)), None);
    // A joining peer whose dial fails is not "lost": it was never up.
    assert_eq!(fd.connection_lost("n3", t0 + ms(6)), None);
}

#[test]
fn a_down_peer_comes_back_up_when_heard_again() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    fd.heard("n2", ms(1), t0);
    fd.tick(t0 + ms(2000));
    assert_eq!(fd.state("n2"), Some(PeerState::Down));
    let t = fd.heard("n2", ms(3), t0 + ms(5000)).expect("transition");
    assert_eq!((t.from, t.to), (PeerState::Down, PeerState::Up));
    let snap = fd.snapshot(t0 + ms(5100));
    let n2 = &snap.iter().find(|(p, _)| p == "n2").unwrap().1;
    assert_eq!(n2.rtt, Some(ms(3)));
    assert_eq!(n2.for_how_long, ms(100));
}

#[test]
fn unknown_peers_are_ignored() {
    let t0 = Instant::now();
    let mut fd = detector(t0);
    assert_eq!(fd.heard("n9", ms(1), t0), None);
    assert_eq!(fd.state("n9"), None);
}

#[test]
fn every_peer_state_is_a_known_metric_label() {
    let states: Vec<&str> = [PeerState::Joining, PeerState::Up, PeerState::Down]
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(states, crate::metrics::known::PEER_STATES);
}
