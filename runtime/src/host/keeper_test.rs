use super::*;

use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use ractor::RpcReplyPort;

/// A child that panics when told to, and says which start it is.
struct Fragile;

#[derive(RactorMessage)]
enum FragileMsg {
    Boom,
    Which(RpcReplyPort<u32>),
}

type Slot = Arc<Mutex<Option<ActorRef<FragileMsg>>>>;

impl Actor for Fragile {
    type Msg = FragileMsg;
    type State = u32;
    type Arguments = (u32, Slot);

    async fn pre_start(
        &self,
        myself: ActorRef<FragileMsg>,
        (start, slot): (u32, Slot),
    ) -> Result<u32, ActorProcessingErr> {
        *slot.lock().unwrap() = Some(myself);
        Ok(start)
    }

    async fn handle(
        &self,
        _myself: ActorRef<FragileMsg>,
        msg: FragileMsg,
        start: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FragileMsg::Boom => panic!("boom"),
            FragileMsg::Which(r) => {
                let _ = r.send(*start);
            }
        }
        Ok(())
    }
}

fn policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(10),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        quarantine: Duration::from_millis(300),
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn which(slot: &Slot) -> Option<u32> {
    let child = slot.lock().unwrap().clone()?;
    match child.call(FragileMsg::Which, None).await {
        Ok(ractor::rpc::CallResult::Success(n)) => Some(n),
        _ => None,
    }
}

#[tokio::test]
async fn a_child_that_dies_is_started_again_and_is_not_up_meanwhile() {
    let starts = Arc::new(AtomicU32::new(0));
    let slot: Slot = Arc::default();
    let up = Arc::new(AtomicBool::new(false));
    let restarts = prometheus::IntCounter::new("t_restarts", "t").unwrap();
    let (s, sl) = (starts.clone(), slot.clone());
    let (keeper, handle) = Actor::spawn(
        None,
        Keeper::<Fragile>::new(),
        KeeperArgs {
            name: "fragile",
            start: Box::new(move || (Fragile, (s.fetch_add(1, Ordering::SeqCst) + 1, sl.clone()))),
            policy: RestartPolicy {
                // Long enough to observe the not-up window.
                backoff_base: Duration::from_millis(200),
                ..policy()
            },
            up: up.clone(),
            restarts: restarts.clone(),
        },
    )
    .await
    .unwrap();
    assert!(up.load(Ordering::Acquire), "up once started");
    assert_eq!(which(&slot).await, Some(1));

    // A panic in the child: not up during the backoff, then a new child, up again.
    let first = slot.lock().unwrap().clone().unwrap();
    first.send_message(FragileMsg::Boom).unwrap();
    until("the keeper to see the child die", || {
        !up.load(Ordering::Acquire)
    })
    .await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "no restart before the backoff"
    );
    until("the child to be back", || up.load(Ordering::Acquire)).await;
    assert_eq!(which(&slot).await, Some(2));
    assert_eq!(restarts.get(), 1);
    assert_ne!(
        slot.lock().unwrap().as_ref().unwrap().get_id(),
        first.get_id()
    );

    // A child that stops on its own is essential too.
    slot.lock().unwrap().clone().unwrap().stop(None);
    until("the second restart", || restarts.get() == 2).await;
    assert!(up.load(Ordering::Acquire));
    assert_eq!(which(&slot).await, Some(3));

    // Stopping the keeper stops the child and is not a death.
    let child = slot.lock().unwrap().clone().unwrap();
    keeper.stop(None);
    handle.await.unwrap();
    assert!(!up.load(Ordering::Acquire));
    assert!(child.get_status() >= ractor::ActorStatus::Stopping);
    assert_eq!(starts.load(Ordering::SeqCst), 3);
}

#[test]
fn backoff_grows_and_a_spent_budget_waits_the_quarantine() {
    let p = policy();
    let mut t = RestartTracker::default();
    let now = Instant::now();
    let delays: Vec<u64> = (0..4)
        .map(|i| delay(&mut t, &p, now + Duration::from_millis(i)).as_millis() as u64)
        .collect();
    // 20, 40, 80 ms, then the budget of 3 is spent: the quarantine, never a give-up.
    assert_eq!(&delays[..3], &[20, 40, 80]);
    assert!((290..=300).contains(&delays[3]), "{delays:?}");
    assert_eq!(
        delay(&mut t, &p, now + Duration::from_secs(1)),
        Duration::from_millis(20)
    );
}
