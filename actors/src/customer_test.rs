use super::*;
use keelson_runtime::encode_payload;

fn ctx(now_ms: u64) -> EntityContext<'static> {
    EntityContext::new("c1", now_ms)
}

fn new(name: &str) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        email: Some("ada@example.com".into()),
        phone: None,
        company: Some("Analytical".into()),
        tags: vec!["vip".into()],
        consent: Consent {
            email: true,
            ..Consent::default()
        },
    }
}

fn run(
    state: &mut Option<CustomerState>,
    cmd: CustomerCommand,
    now: u64,
) -> Handled<CustomerReply> {
    Customer::handle(&ctx(now), state, cmd).unwrap()
}

fn customer(h: Handled<CustomerReply>) -> CustomerView {
    match h.reply {
        Ok(CustomerAnswer::Customer(c)) => c,
        other => panic!("expected a customer, got {other:?}"),
    }
}

fn ticket(h: &Handled<CustomerReply>) -> Ticket {
    match &h.reply {
        Ok(CustomerAnswer::Ticket(t)) => t.clone(),
        other => panic!("expected a ticket, got {other:?}"),
    }
}

fn open(alert_id: &str) -> CustomerCommand {
    CustomerCommand::OpenTicket {
        alert_id: alert_id.into(),
        device_id: "th-1".into(),
        summary: "temperature 71.2 above max 60".into(),
    }
}

fn ack(alert_id: &str, status: &str) -> CustomerCommand {
    CustomerCommand::RecordTicketAck {
        alert_id: alert_id.into(),
        command_id: format!("cmd-{alert_id}"),
        status: status.into(),
    }
}

#[test]
fn create_then_get() {
    let mut s = None;
    let h = run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    assert!(h.changed);
    let c = customer(h);
    assert_eq!(
        (c.id.as_str(), c.name.as_str(), c.version, c.created_ms),
        ("c1", "Ada", 1, 10)
    );
    let got = run(&mut s, CustomerCommand::Get, 20);
    assert!(!got.changed);
    assert_eq!(customer(got), c);
}

#[test]
fn duplicate_create_is_refused_and_changes_nothing() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let before = s.clone();
    let h = run(&mut s, CustomerCommand::Create(new("Bob")), 20);
    assert!(!h.changed);
    assert!(matches!(h.reply, Err(DomainError::AlreadyExists { .. })));
    assert_eq!(s, before);
}

#[test]
fn commands_on_a_missing_customer_are_not_found() {
    for cmd in [
        CustomerCommand::Get,
        CustomerCommand::Delete,
        CustomerCommand::Update(CustomerPatch::default()),
    ] {
        let mut s = None;
        let h = run(&mut s, cmd, 1);
        assert!(matches!(h.reply, Err(DomainError::NotFound { .. })));
        assert!(!h.changed && s.is_none());
    }
}

#[test]
fn update_changes_only_given_fields_and_can_clear() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let patch = CustomerPatch {
        phone: Some(Some("+44 20 7946 0000".into())),
        email: Some(None),
        ..Default::default()
    };
    let c = customer(run(&mut s, CustomerCommand::Update(patch), 30));
    assert_eq!(c.name, "Ada");
    assert_eq!(c.email, None);
    assert_eq!(c.phone.as_deref(), Some("+44 20 7946 0000"));
    assert_eq!((c.version, c.updated_ms, c.created_ms), (2, 30, 10));
}

#[test]
fn invalid_fields_are_named_and_change_nothing() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let before = s.clone();
    let patch = CustomerPatch {
        email: Some(Some("nope".into())),
        ..Default::default()
    };
    let h = run(&mut s, CustomerCommand::Update(patch), 20);
    assert_eq!(
        h.reply,
        Err(DomainError::Invalid {
            field: "email".into(),
            reason: "is not an e-mail address (expected name@domain.tld)".into()
        })
    );
    assert!(!h.changed);
    assert_eq!(s, before);
    let h = run(&mut None, CustomerCommand::Create(new("  ")), 1);
    assert!(matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "name"));
}

/// A journal in memory, as the runtime keeps one in the store.
#[derive(Default)]
struct Journal(std::cell::RefCell<Vec<Vec<u8>>>);

impl keelson_runtime::JournalRead for Journal {
    fn page(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        Ok(self
            .0
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.clone()))
            .skip(after as usize)
            .take(limit)
            .collect())
    }
}

/// Runs `cmd` with `journal`, appending what it appends.
fn run_with(
    state: &mut Option<CustomerState>,
    journal: &Journal,
    cmd: CustomerCommand,
    now: u64,
) -> Handled<CustomerReply> {
    let len = journal.0.borrow().len() as u64;
    let h = Customer::handle(&ctx(now).with_journal(len, journal), state, cmd).unwrap();
    journal.0.borrow_mut().extend(h.append.iter().cloned());
    h
}

fn page(s: &mut Option<CustomerState>, j: &Journal, after: u64, limit: u32) -> Vec<Interaction> {
    match run_with(
        s,
        j,
        CustomerCommand::ListInteractions { after, limit },
        500,
    )
    .reply
    {
        Ok(CustomerAnswer::Interactions { items, .. }) => items,
        other => panic!("{other:?}"),
    }
}

#[test]
fn interactions_are_appended_one_record_each_and_read_by_page() {
    let mut s = None;
    let j = Journal::default();
    run_with(&mut s, &j, CustomerCommand::Create(new("Ada")), 10);
    for (i, item) in ["order-1", "ticket-7", "call-3"].iter().enumerate() {
        let add = NewInteraction {
            kind: "order".into(),
            item: item.to_string(),
            at_ms: None,
        };
        let h = run_with(
            &mut s,
            &j,
            CustomerCommand::AddInteraction(add),
            100 + i as u64,
        );
        assert_eq!(h.append.len(), 1, "one record per interaction");
        match h.reply {
            Ok(CustomerAnswer::InteractionAdded { interaction, .. }) => {
                assert_eq!(interaction.seq, i as u64 + 1)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        page(&mut s, &j, 1, 1),
        vec![Interaction {
            seq: 2,
            kind: "order".into(),
            item: "ticket-7".into(),
            at_ms: 101
        }]
    );
    assert_eq!(page(&mut s, &j, 0, 10).len(), 3);
    assert!(page(&mut s, &j, 3, 10).is_empty());
    let view = customer(run_with(&mut s, &j, CustomerCommand::Get, 600));
    assert_eq!(view.interaction_count, 3);
    assert_eq!(
        view.interactions
            .iter()
            .map(|i| i.item.as_str())
            .collect::<Vec<_>>(),
        ["order-1", "ticket-7", "call-3"],
        "the view carries the latest interactions"
    );
    let h = run_with(
        &mut s,
        &j,
        CustomerCommand::ListInteractions { after: 0, limit: 0 },
        600,
    );
    assert!(matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "limit"));
}

#[test]
fn delete_removes_the_state() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let h = run(&mut s, CustomerCommand::Delete, 20);
    assert!(h.changed);
    assert_eq!(h.reply, Ok(CustomerAnswer::Deleted));
    assert!(s.is_none());
}

#[test]
fn opening_a_ticket_twice_returns_the_first_one() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let first = run(&mut s, open("th-1-7"), 20);
    assert!(first.changed);
    let t = ticket(&first);
    assert_eq!(
        (t.id.as_str(), t.status.as_str(), t.opened_ms),
        ("t-th-1-7", TICKET_OPEN, 20)
    );
    let before = s.clone();
    let again = run(
        &mut s,
        CustomerCommand::OpenTicket {
            alert_id: "th-1-7".into(),
            device_id: "th-1".into(),
            summary: "a different summary".into(),
        },
        30,
    );
    assert!(!again.changed);
    assert_eq!(ticket(&again), t);
    assert_eq!(s, before);
    let list = run(&mut s, CustomerCommand::ListTickets, 40);
    assert_eq!(list.reply, Ok(CustomerAnswer::Tickets(vec![t])));
}

#[test]
fn the_first_ticket_acknowledgement_wins() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    run(&mut s, open("th-1-7"), 20);
    let h = run(&mut s, ack("th-1-7", "ok"), 30);
    assert!(h.changed);
    let t = ticket(&h);
    assert_eq!(t.status, TICKET_ACKNOWLEDGED);
    assert_eq!(
        (t.command_id.as_deref(), t.ack_status.as_deref()),
        (Some("cmd-th-1-7"), Some("ok"))
    );
    assert_eq!(t.notes, vec!["command cmd-th-1-7 acknowledged: ok"]);
    let before = s.clone();
    let later = run(&mut s, ack("th-1-7", "failed"), 40);
    assert!(!later.changed);
    assert_eq!(ticket(&later), t);
    assert_eq!(s, before);
}

#[test]
fn acknowledging_a_missing_ticket_is_not_found() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let h = run(&mut s, ack("th-1-9", "ok"), 20);
    assert_eq!(
        h.reply,
        Err(DomainError::NotFound {
            kind: "ticket".into(),
            id: "t-th-1-9".into()
        })
    );
    assert!(!h.changed);
}

#[test]
fn only_the_last_tickets_are_kept_and_views_leave_them_out() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    for i in 0..MAX_TICKETS + 3 {
        run(&mut s, open(&format!("th-1-{i}")), 20);
    }
    let kept = &s.as_ref().unwrap().tickets;
    assert_eq!(kept.len(), MAX_TICKETS);
    assert_eq!(kept[0].alert_id, "th-1-3");
    let json = serde_json::to_value(customer(run(&mut s, CustomerCommand::Get, 30))).unwrap();
    assert!(json.get("tickets").is_none(), "{json}");
    assert_eq!(json["version"], 1 + MAX_TICKETS as u64 + 3);
}

#[test]
fn ticket_fields_are_named_when_invalid() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let cases = [
        (
            CustomerCommand::OpenTicket {
                alert_id: "a/b".into(),
                device_id: "th-1".into(),
                summary: "x".into(),
            },
            "alert_id",
        ),
        (
            CustomerCommand::OpenTicket {
                alert_id: "th-1-1".into(),
                device_id: "".into(),
                summary: "x".into(),
            },
            "device_id",
        ),
        (
            CustomerCommand::OpenTicket {
                alert_id: "th-1-1".into(),
                device_id: "th-1".into(),
                summary: " ".into(),
            },
            "summary",
        ),
        (
            CustomerCommand::RecordTicketAck {
                alert_id: "th-1-1".into(),
                command_id: "c 1".into(),
                status: "ok".into(),
            },
            "command_id",
        ),
        (
            CustomerCommand::RecordTicketAck {
                alert_id: "th-1-1".into(),
                command_id: "c1".into(),
                status: "x".repeat(65),
            },
            "status",
        ),
    ];
    for (cmd, field) in cases {
        let h = run(&mut s, cmd, 20);
        assert!(
            matches!(&h.reply, Err(DomainError::Invalid { field: f, .. }) if f == field),
            "{field}: {:?}",
            h.reply
        );
        assert!(!h.changed);
    }
}

#[test]
fn a_version_1_customer_is_upgraded_with_no_tickets() {
    let old = v1::CustomerState {
        id: "c1".into(),
        name: "Ada".into(),
        email: Some("ada@example.com".into()),
        phone: None,
        company: None,
        tags: vec!["vip".into()],
        consent: Consent::default(),
        interactions: vec![Interaction {
            seq: 1,
            kind: "call".into(),
            item: "intro".into(),
            at_ms: 5,
        }],
        version: 4,
        created_ms: 1,
        updated_ms: 5,
    };
    // The runtime's encoding of the old shape, version byte stripped as the runtime hands it over.
    let body = &encode_payload(&old)[1..];
    let new = Customer::upgrade(1, body).expect("version 1 upgrades");
    assert_eq!(
        (new.name.as_str(), new.version, new.early_interactions.len()),
        ("Ada", 4, 1)
    );
    assert!(new.tickets.is_empty());
    assert_eq!(new.view(&ctx(0)).unwrap().interaction_count, 1);
    // Early interactions come first in a page, journal ones after them.
    let (mut s, j) = (Some(new), Journal::default());
    let add = NewInteraction {
        kind: "call".into(),
        item: "follow-up".into(),
        at_ms: Some(9),
    };
    run_with(&mut s, &j, CustomerCommand::AddInteraction(add), 10);
    let all = page(&mut s, &j, 0, 10);
    assert_eq!(all[0], old.interactions[0]);
    assert_eq!((all[1].seq, all[1].item.as_str()), (2, "follow-up"));
    assert_eq!(page(&mut s, &j, 1, 10).len(), 1);
    assert_eq!(Customer::upgrade(4, body), None);
    assert_eq!(Customer::upgrade(1, &body[..body.len() - 1]), None);
}
