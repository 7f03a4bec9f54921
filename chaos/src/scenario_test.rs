use super::*;

const SHIPPED: [&str; 6] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/kill-primary.toml"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/freeze-node.toml"),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/rolling-restart.toml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/partition-minority.toml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/partition-isolates-primary.toml"
    ),
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/latency-sweep.toml"),
];

const BASE: &str = r#"
name = "t"
description = "test"
duration_s = 30

[workload]
keys = 10
concurrency = 2
rate = 50
mix = { create = 1, update = 1, read = 1 }
"#;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn nodes() -> Vec<String> {
    strings(&["n1", "n2", "n3", "n4"])
}

fn members() -> Vec<String> {
    strings(&["n1", "n2", "n3", "n4", "gateway"])
}

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, Path::new("s.toml"))
}

/// The problems `BASE` followed by `extra` has (empty if it is valid).
fn problems(extra: &str) -> Vec<String> {
    match parse(&format!("{BASE}{extra}")) {
        Ok(_) => vec![],
        Err(e @ ScenarioError::Invalid { .. }) => e.problems(),
        Err(e) => panic!("expected semantic problems, got {e}"),
    }
}

/// Asserts there is exactly one problem, starting with `path: ` and containing `text`.
fn one_problem(extra: &str, path: &str, text: &str) {
    let p = problems(extra);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with(&format!("{path}: ")), "{p:?}");
    assert!(p[0].contains(text), "{p:?}");
}

fn members_problems(extra: &str) -> Vec<String> {
    let s = parse(&format!("{BASE}{extra}")).expect("valid");
    s.check_members(&nodes(), &members())
        .err()
        .unwrap_or_default()
}

#[test]
fn every_shipped_scenario_is_valid_for_a_four_node_cluster() {
    for path in SHIPPED {
        let s = Scenario::load(Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Path::new(path).file_stem().unwrap().to_str().unwrap(),
            s.name
        );
        assert_eq!(s.check_members(&nodes(), &members()), Ok(()), "{path}");
    }
    let kill = Scenario::load(Path::new(SHIPPED[0])).unwrap();
    assert_eq!(kill.duration_s, 30);
    assert_eq!(kill.workload.timeout_ms, 5000);
    assert_eq!(kill.faults[0].action, Action::Kill);
    assert_eq!(kill.faults[0].label.as_deref(), Some("victim"));
    assert_eq!(kill.gates.min_availability, Some(0.95));
    assert!(!kill.needs_link_proxies());
    let sweep = Scenario::load(Path::new(SHIPPED[5])).unwrap();
    let delays: Vec<u64> = sweep.faults.iter().filter_map(|f| f.delay_ms).collect();
    assert_eq!(delays, vec![5, 10, 25, 50, 100]);
    assert!(sweep.gates.require_linearizable);
    assert!(sweep.needs_link_proxies());
}

#[test]
fn a_scenario_survives_a_round_trip_through_toml() {
    for path in SHIPPED {
        let s = Scenario::load(Path::new(path)).unwrap();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(parse(&text).unwrap(), s, "{path}");
    }
}

#[test]
fn a_missing_file_says_which() {
    let e = Scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(matches!(e, ScenarioError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with("cannot read scenario /nonexistent/x.toml: "));
}

#[test]
fn a_syntax_error_names_the_line() {
    let e = parse("name = \"t\"\ndescription = \"d\"\nduration_s = = 30\n").unwrap_err();
    let ScenarioError::Parse { path, message } = &e else {
        panic!("expected Parse, got {e:?}");
    };
    assert_eq!(path, Path::new("s.toml"));
    assert!(message.contains("line 3"), "{message}");
    assert!(e.to_string().starts_with("s.toml: "));
}

#[test]
fn an_unknown_field_is_named() {
    let e = parse(&BASE.replace("rate = 50", "rate = 50\nrps = 3")).unwrap_err();
    assert!(matches!(e, ScenarioError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("rps"), "{e}");
    let e = parse(&format!(
        "{BASE}[[fault]]\nat_s = 1.0\naction = \"explode\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("explode"), "{e}");
}

#[test]
fn top_level_and_workload_ranges() {
    assert_eq!(problems(""), Vec::<String>::new());
    let bad = |from: &str, to: &str| parse(&BASE.replace(from, to)).unwrap_err().problems();
    assert_eq!(
        bad("name = \"t\"", "name = \"Kill Primary\""),
        vec!["name: \"Kill Primary\" must be non-empty and only a-z, 0-9 and '-' (it names the report directory)"]
    );
    assert_eq!(
        bad("description = \"test\"", "description = \" \""),
        vec!["description: must not be empty"]
    );
    assert_eq!(
        bad("duration_s = 30", "duration_s = 4"),
        vec!["duration_s: 4 is out of range 5..=3600"]
    );
    assert_eq!(
        bad("keys = 10", "keys = 0"),
        vec!["workload.keys: 0 is out of range 1..=100000"]
    );
    assert_eq!(
        bad("concurrency = 2", "concurrency = 257"),
        vec!["workload.concurrency: 257 is out of range 1..=256"]
    );
    assert_eq!(
        bad("rate = 50", "rate = 100001"),
        vec!["workload.rate: 100001 is out of range 1..=100000"]
    );
    assert_eq!(
        bad("rate = 50", "rate = 50\ntimeout_ms = 99"),
        vec!["workload.timeout_ms: 99 is out of range 100..=60000"]
    );
    assert_eq!(
        bad("mix = { create = 1, update = 1, read = 1 }", "mix = {}"),
        vec!["workload.mix: weights sum to 0; give at least one of create, update, read a weight"]
    );
}

#[test]
fn fault_times_must_be_inside_the_run_and_in_order() {
    one_problem(
        "[[fault]]\nat_s = 45.0\naction = \"heal\"\n",
        "fault[0].at_s",
        "45 is past the end of the run (duration_s = 30)",
    );
    one_problem(
        "[[fault]]\nat_s = 0.0\naction = \"heal\"\n",
        "fault[0].at_s",
        "above 0",
    );
    one_problem(
        "[[fault]]\nat_s = 10.0\naction = \"heal\"\n[[fault]]\nat_s = 5.0\naction = \"heal\"\n",
        "fault[1].at_s",
        "earlier than fault[0] (at_s = 10)",
    );
    assert_eq!(
        problems(
            "[[fault]]\nat_s = 5.0\naction = \"heal\"\n[[fault]]\nat_s = 5.0\naction = \"heal\"\n"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn each_action_requires_and_forbids_its_fields() {
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\n",
        "fault[0].target",
        "required for action \"kill\"",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n1\"\ngroups = [[\"n1\"], [\"rest\"]]\n",
        "fault[0].groups",
        "forbidden for action \"kill\"",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"thaw\"\ntarget = \"n1\"\nlabel = \"x\"\n",
        "fault[0].label",
        "forbidden for action \"thaw\"",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"partition\"\n",
        "fault[0].groups",
        "required for action \"partition\"",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"latency\"\nbetween = [[\"all\"], [\"all\"]]\n",
        "fault[0].delay_ms",
        "required for action \"latency\"",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"restart\"\ntarget = \"n1\"\none_way = false\n",
        "fault[0].one_way",
        "forbidden for action \"restart\"",
    );
    let heal_with_everything = "[[fault]]\nat_s = 1.0\naction = \"heal\"\ntarget = \"n1\"\n\
        label = \"x\"\ngroups = [[\"n1\"], [\"n2\"]]\none_way = true\n\
        between = [[\"n1\"], [\"n2\"]]\ndelay_ms = 5\njitter_ms = 1\n";
    let p = problems(heal_with_everything);
    let fields: Vec<&str> = p
        .iter()
        .map(|l| l.split(':').next().unwrap().trim_start_matches("fault[0]."))
        .collect();
    assert_eq!(
        fields,
        [
            "target",
            "label",
            "groups",
            "one_way",
            "between",
            "delay_ms",
            "jitter_ms"
        ]
    );
    assert!(p
        .iter()
        .all(|l| l.ends_with("forbidden for action \"heal\"")));
}

#[test]
fn latency_delay_and_jitter_ranges() {
    let latency = |delay: u64, jitter: u64| {
        format!(
            "[[fault]]\nat_s = 1.0\naction = \"latency\"\nbetween = [[\"nodes\"], [\"gateway\"]]\n\
             delay_ms = {delay}\njitter_ms = {jitter}\n"
        )
    };
    assert_eq!(problems(&latency(10, 10)), Vec::<String>::new());
    one_problem(
        &latency(0, 0),
        "fault[0].delay_ms",
        "0 is out of range 1..=10000",
    );
    one_problem(&latency(10_001, 0), "fault[0].delay_ms", "out of range");
    one_problem(
        &latency(10, 11),
        "fault[0].jitter_ms",
        "11 is more than delay_ms (10)",
    );
}

#[test]
fn labels_must_be_bound_before_use() {
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"thaw\"\ntarget = \"victim\"\n\
         [[fault]]\nat_s = 2.0\naction = \"freeze\"\ntarget = \"n1\"\nlabel = \"victim\"\n",
        "fault[0].target",
        "\"victim\" is not a label bound by an earlier fault",
    );
    // A fault cannot use its own label.
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"me\"\nlabel = \"me\"\n",
        "fault[0].target",
        "not a label bound by an earlier fault",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"partition\"\ngroups = [[\"later\"], [\"rest\"]]\n\
         [[fault]]\nat_s = 2.0\naction = \"kill\"\ntarget = \"n1\"\nlabel = \"later\"\n",
        "fault[0].groups[0]",
        "\"later\" is not a label bound by an earlier fault",
    );
    assert_eq!(
        problems(
            "[[fault]]\nat_s = 1.0\naction = \"partition\"\ngroups = [[\"busy-primary\"], [\"rest\"]]\n\
             label = \"cut\"\n[[fault]]\nat_s = 2.0\naction = \"latency\"\n\
             between = [[\"cut\"], [\"all\"]]\ndelay_ms = 5\n"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn labels_are_unique_names_that_are_not_reserved() {
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n1\"\nlabel = \"rest\"\n",
        "fault[0].label",
        "\"rest\" is a reserved word",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n1\"\nlabel = \"Victim\"\n",
        "fault[0].label",
        "only a-z, 0-9 and '-'",
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n1\"\nlabel = \"v\"\n\
         [[fault]]\nat_s = 2.0\naction = \"kill\"\ntarget = \"n2\"\nlabel = \"v\"\n",
        "fault[1].label",
        "\"v\" is already bound by fault[0]",
    );
}

#[test]
fn a_process_target_is_one_member() {
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"nodes\"\n",
        "fault[0].target",
        "\"nodes\" names a group",
    );
    assert_eq!(
        problems("[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"random-node\"\n"),
        Vec::<String>::new()
    );
}

#[test]
fn partition_groups_rules() {
    let partition = |groups: &str| {
        format!("[[fault]]\nat_s = 1.0\naction = \"partition\"\ngroups = {groups}\n")
    };
    one_problem(
        &partition("[[\"n1\"]]"),
        "fault[0].groups",
        "needs exactly two groups, found 1",
    );
    one_problem(
        &partition("[[\"n1\"], []]"),
        "fault[0].groups[1]",
        "must not be empty",
    );
    one_problem(
        &partition("[[\"rest\"], [\"rest\"]]"),
        "fault[0].groups",
        "\"rest\" may be used in only one of the two groups",
    );
    one_problem(
        &partition("[[\"n1\"], [\"rest\", \"n2\"]]"),
        "fault[0].groups[1]",
        "\"rest\" must be alone in its group",
    );
    one_problem(
        &partition("[[\"n1\"], [\"all\"]]"),
        "fault[0].groups[1]",
        "\"all\" is only for latency",
    );
    assert_eq!(
        problems(&partition("[[\"nodes\"], [\"gateway\"]]")),
        Vec::<String>::new()
    );
    one_problem(
        "[[fault]]\nat_s = 1.0\naction = \"latency\"\nbetween = [[\"all\"], [\"rest\", \"n1\"]]\ndelay_ms = 5\n",
        "fault[0].between[1]",
        "\"rest\" must be alone in its group",
    );
}

#[test]
fn gate_ranges() {
    let p = problems("[gates]\nmin_availability = 1.5\nmax_p99_ms = 0.0\nmax_recovery_ms = 0\n");
    assert_eq!(
        p,
        vec![
            "gates.min_availability: 1.5 is out of range 0.0..=1.0",
            "gates.max_p99_ms: 0 must be a number above 0",
            "gates.max_recovery_ms: must be at least 1",
        ]
    );
    let s = parse(BASE).unwrap();
    assert_eq!(s.gates, Gates::default());
    assert!(s.gates.require_linearizable);
    assert_eq!(s.gates.max_lost_writes, 0);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = BASE
        .replace("duration_s = 30", "duration_s = 20")
        .replace("rate = 50", "rate = 0")
        + "[[fault]]\nat_s = 25.0\naction = \"thaw\"\ntarget = \"ghost\"\n\
           [[fault]]\nat_s = 5.0\naction = \"latency\"\nbetween = [[\"all\"]]\ndelay_ms = 5\n\
           [[fault]]\nat_s = 6.0\naction = \"freeze\"\ntarget = \"n1\"\nlabel = \"ghost\"\n";
    let e = parse(&text).unwrap_err();
    let p = e.problems();
    assert_eq!(
        p,
        vec![
            "workload.rate: 0 is out of range 1..=100000",
            "fault[0].at_s: 25 is past the end of the run (duration_s = 20)",
            "fault[0].target: \"ghost\" is not a label bound by an earlier fault",
            "fault[1].at_s: 5 is earlier than fault[0] (at_s = 25); list faults in time order",
            "fault[1].between: needs exactly two groups, found 1",
        ]
    );
    assert_eq!(e.to_string(), format!("s.toml: {}", p.join("; ")));
}

#[test]
fn literal_names_must_be_members() {
    assert_eq!(
        members_problems("[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n9\"\n"),
        vec!["fault[0].target: \"n9\" is not a member (members: n1, n2, n3, n4, gateway)"]
    );
    assert_eq!(
        members_problems(
            "[[fault]]\nat_s = 1.0\naction = \"partition\"\ngroups = [[\"n5\"], [\"rest\"]]\n\
             [[fault]]\nat_s = 2.0\naction = \"latency\"\nbetween = [[\"all\"], [\"gw\"]]\ndelay_ms = 5\n"
        ),
        vec![
            "fault[0].groups[0]: \"n5\" is not a member (members: n1, n2, n3, n4, gateway)",
            "fault[1].between[1]: \"gw\" is not a member (members: n1, n2, n3, n4, gateway)",
        ]
    );
    assert_eq!(
        members_problems(
            "[[fault]]\nat_s = 1.0\naction = \"restart\"\ntarget = \"gateway\"\n\
             [[fault]]\nat_s = 2.0\naction = \"freeze\"\ntarget = \"busy-primary\"\nlabel = \"f\"\n\
             [[fault]]\nat_s = 3.0\naction = \"thaw\"\ntarget = \"f\"\n"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        members_problems(
            "[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"n2\"\nlabel = \"n1\"\n"
        ),
        vec![
            "fault[0].label: \"n1\" is also a member name; pick another so it cannot hide the member"
        ]
    );
    let s = parse(&format!(
        "{BASE}[[fault]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"random-node\"\n"
    ))
    .unwrap();
    assert_eq!(
        s.check_members(&[], &strings(&["gateway"])),
        Err(vec![
            "fault[0].target: \"random-node\" needs at least one node".to_string()
        ])
    );
}

#[test]
fn link_faults_need_proxies() {
    for (action, extra, needs) in [
        ("kill", "target = \"n1\"", false),
        ("heal", "", true),
        ("partition", "groups = [[\"n1\"], [\"rest\"]]", true),
        (
            "latency",
            "between = [[\"all\"], [\"all\"]]\ndelay_ms = 1",
            true,
        ),
    ] {
        let s = parse(&format!(
            "{BASE}[[fault]]\nat_s = 1.0\naction = \"{action}\"\n{extra}\n"
        ))
        .unwrap();
        assert_eq!(s.needs_link_proxies(), needs, "{action}");
    }
    assert!(!parse(BASE).unwrap().needs_link_proxies());
}

#[test]
fn mix_pick_maps_ranges_in_order() {
    let mix = Mix {
        create: 5,
        update: 55,
        read: 40,
    };
    assert_eq!(mix.total(), 100);
    assert_eq!(mix.pick(0), OpChoice::Create);
    assert_eq!(mix.pick(4), OpChoice::Create);
    assert_eq!(mix.pick(5), OpChoice::Update);
    assert_eq!(mix.pick(59), OpChoice::Update);
    assert_eq!(mix.pick(60), OpChoice::Read);
    assert_eq!(mix.pick(99), OpChoice::Read);
    let counts = (0..mix.total()).fold([0; 3], |mut c, r| {
        c[mix.pick(r) as usize] += 1;
        c
    });
    assert_eq!(counts, [5, 55, 40]);

    let reads_only = Mix {
        create: 0,
        update: 0,
        read: 3,
    };
    assert!((0..3).all(|r| reads_only.pick(r) == OpChoice::Read));
    let no_update = Mix {
        create: 1,
        update: 0,
        read: 1,
    };
    assert_eq!(no_update.pick(0), OpChoice::Create);
    assert_eq!(no_update.pick(1), OpChoice::Read);
}
