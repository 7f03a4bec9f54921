use super::*;

fn ctx(now_ms: u64) -> EntityContext<'static> {
    EntityContext { id: "c1", now_ms }
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

#[test]
fn create_then_get() {
    let mut s = None;
    let h = run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    assert!(h.changed);
    let c = h.reply.unwrap().unwrap();
    assert_eq!(
        (c.id.as_str(), c.name.as_str(), c.version, c.created_ms),
        ("c1", "Ada", 1, 10)
    );
    let got = run(&mut s, CustomerCommand::Get, 20);
    assert!(!got.changed);
    assert_eq!(got.reply.unwrap().unwrap(), c);
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
    let c = run(&mut s, CustomerCommand::Update(patch), 30)
        .reply
        .unwrap()
        .unwrap();
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
            reason: "\"nope\" is not an e-mail address".into()
        })
    );
    assert!(!h.changed);
    assert_eq!(s, before);
    let h = run(&mut None, CustomerCommand::Create(new("  ")), 1);
    assert!(matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "name"));
}

#[test]
fn interactions_append_in_order() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    for (i, item) in ["order-1", "ticket-7"].iter().enumerate() {
        let add = NewInteraction {
            kind: "order".into(),
            item: item.to_string(),
            at_ms: None,
        };
        let c = run(&mut s, CustomerCommand::AddInteraction(add), 100 + i as u64)
            .reply
            .unwrap()
            .unwrap();
        assert_eq!(c.interactions.len(), i + 1);
    }
    let c = s.unwrap();
    assert_eq!(
        c.interactions[1],
        Interaction {
            seq: 2,
            kind: "order".into(),
            item: "ticket-7".into(),
            at_ms: 101
        }
    );
}

#[test]
fn delete_removes_the_state() {
    let mut s = None;
    run(&mut s, CustomerCommand::Create(new("Ada")), 10);
    let h = run(&mut s, CustomerCommand::Delete, 20);
    assert!(h.changed);
    assert_eq!(h.reply, Ok(None));
    assert!(s.is_none());
}
