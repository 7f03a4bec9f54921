use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[cluster]
name = "local"
cookie = "secret-cookie"

[gateway]
host = "127.0.0.1"
http_port = 8080
cluster_port = 4700
ops_port = 9100

[[node]]
name = "n1"
host = "127.0.0.1"
cluster_port = 4701
ops_port = 9101

[[node]]
name = "n2"
host = "127.0.0.1"
cluster_port = 4702
ops_port = 9102
"#;

fn problems(text: &str) -> Vec<String> {
    match parse(text, Path::new("/base")) {
        Ok(_) => vec![],
        Err(e) => e.problems(),
    }
}

#[test]
fn a_good_file_gets_defaults() {
    let c = parse(GOOD, Path::new("/base")).unwrap();
    assert_eq!(c.shards, 256);
    assert_eq!(c.failure_timeout, Duration::from_millis(1000));
    assert_eq!(c.data_dir, PathBuf::from("/base/data"));
    assert_eq!(c.flush, FlushPolicy::OnWrite);
    assert_eq!(c.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.restart.max_restarts, 5);
    assert_eq!(c.restart.window, Duration::from_secs(10));
    assert_eq!(c.node_names(), vec!["n1", "n2"]);
    assert_eq!(c.gateway.name, "gateway");
    assert_eq!(c.gateway_http, "127.0.0.1:8080".parse().unwrap());
}

#[test]
fn a_reused_port_names_both_nodes() {
    let text = GOOD.replace("cluster_port = 4702", "cluster_port = 4701");
    assert_eq!(
        problems(&text),
        vec!["node \"n2\": cluster port 4701 already used by node \"n1\""]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD
        .replace("name = \"n2\"", "name = \"N 2\"")
        .replace("cookie = \"secret-cookie\"", "cookie = \"x\"\nshards = 0")
        .replace("ops_port = 9100", "ops_port = 9101");
    let p = problems(&text);
    assert!(p.iter().any(|m| m.starts_with("cluster.cookie:")), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("cluster.shards:")), "{p:?}");
    assert!(
        p.iter().any(|m| m.starts_with("node \"N 2\": name must")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m == "gateway \"gateway\": ops port 9101 already used by node \"n1\""),
        "{p:?}"
    );
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let text = GOOD.replace("[gateway]", "[gateway]\nlisten = \"x\"");
    let err = parse(&text, Path::new("/")).unwrap_err().to_string();
    assert!(err.contains("unknown field `listen`"), "{err}");
}

#[test]
fn a_missing_field_is_named() {
    let text = GOOD.replace("http_port = 8080\n", "");
    let err = parse(&text, Path::new("/")).unwrap_err().to_string();
    assert!(err.contains("missing field `http_port`"), "{err}");
}

#[test]
fn failure_timeout_and_heartbeat_must_fit() {
    let text = GOOD.replace(
        "cookie = \"secret-cookie\"",
        "cookie = \"secret-cookie\"\nfailure_timeout_ms = 300\nheartbeat_interval_ms = 200",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("cluster.heartbeat_interval_ms: 200"),
        "{p:?}"
    );
}

#[test]
fn bad_hosts_and_flush_policies_are_named() {
    let text = GOOD
        .replacen(
            "host = \"127.0.0.1\"\ncluster_port = 4701",
            "host = \"local host\"\ncluster_port = 4701",
            1,
        )
        .replace(
            "[[node]]\nname = \"n1\"",
            "[storage]\nflush = \"sometimes\"\n\n[[node]]\nname = \"n1\"",
        );
    let p = problems(&text);
    assert!(
        p.contains(
            &"node \"n1\": host \"local host\" is not an IP address or a DNS name".to_string()
        ),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("storage.flush: \"sometimes\"")),
        "{p:?}"
    );
}

#[test]
fn the_same_port_on_different_addresses_is_fine() {
    let text = GOOD.replacen(
        "host = \"127.0.0.1\"\ncluster_port = 4702\nops_port = 9102",
        "host = \"127.0.0.2\"\ncluster_port = 4701\nops_port = 9101",
        1,
    );
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn for_test_builds_a_valid_cluster() {
    let c = ClusterConfig::for_test(4, 20000, Path::new("/tmp/x"));
    assert_eq!(c.nodes.len(), 4);
    assert_eq!(c.member("n4").unwrap().cluster_addr.port(), 20016);
}

#[test]
fn unsafe_defaults_are_refused_beyond_loopback() {
    let public = GOOD.replace(
        "host = \"127.0.0.1\"\nhttp_port",
        "host = \"10.0.0.5\"\nhttp_port",
    );
    // On a network: TLS off and the shipped example cookie are refused, naming the field.
    let off = public.replace("[gateway]", "[tls]\nenabled = false\n\n[gateway]");
    assert!(
        problems(&off).iter().any(|m| m.starts_with("tls.enabled:")),
        "{:?}",
        problems(&off)
    );
    let example = public.replace("\"secret-cookie\"", &format!("\"{EXAMPLE_COOKIE}\""));
    assert!(problems(&example)
        .iter()
        .any(|m| m.starts_with("cluster.cookie:") && m.contains("example")));
    // On loopback both are allowed (a laptop cluster), and TLS is on by default.
    let c = parse(
        &GOOD.replace("\"secret-cookie\"", &format!("\"{EXAMPLE_COOKIE}\"")),
        Path::new("/b"),
    )
    .unwrap();
    assert!(c.tls.enabled);
    assert_eq!(c.tls.dir, PathBuf::from("/b/data/tls"));
    assert_eq!(
        c.auth.admin_key_file,
        PathBuf::from("/b/data/run/admin.key")
    );
    // The ops port of a public member stays on loopback unless ops_host says otherwise.
    let p = parse(&public, Path::new("/b")).unwrap();
    assert_eq!(p.gateway.ops_addr, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(p.gateway_http, "10.0.0.5:8080".parse().unwrap());
}

#[test]
fn secrets_come_from_files_and_never_reach_debug_output() {
    let dir = std::env::temp_dir().join(format!("keelson-cfg-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cookie"), "cookie-from-a-file\n").unwrap();
    let text = GOOD.replace("cookie = \"secret-cookie\"", "cookie_file = \"cookie\"");
    let c = parse(&text, &dir).unwrap();
    assert_eq!(c.cookie.expose(), "cookie-from-a-file");
    assert!(!format!("{c:?}").contains("cookie-from-a-file"));
    let missing = GOOD.replace("cookie = \"secret-cookie\"", "cookie_file = \"nope\"");
    assert!(problems(&missing)
        .iter()
        .any(|m| m.starts_with("cluster.cookie_file:")));
    let none = GOOD.replace("cookie = \"secret-cookie\"\n", "");
    assert!(problems(&none)
        .iter()
        .any(|m| m.starts_with("cluster.cookie:")));
    let reserved = GOOD.replace(
        "host = \"127.0.0.1\"\ncluster_port = 4701",
        "host = \"127.0.0.254\"\ncluster_port = 4701",
    );
    assert!(problems(&reserved)
        .iter()
        .any(|m| m.contains("127.0.0.254 is reserved")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_between_nodes_hold_a_copy_page_beside_the_largest_entity_and_the_whole_map() {
    let c = parse(GOOD, Path::new("/base")).unwrap();
    assert_eq!((c.max_frame_bytes, c.copy_page_bytes), (4 << 20, 1 << 20));
    let with = |cluster: &str, entities: &str| {
        problems(&GOOD.replace(
            "cookie = \"secret-cookie\"\n",
            &format!("cookie = \"secret-cookie\"\n{cluster}\n[entities]\n{entities}\n"),
        ))
    };
    assert_eq!(with("", ""), Vec::<String>::new());
    let p = with("max_frame_bytes = 100", "");
    assert!(
        p.iter()
            .any(|m| m.starts_with("cluster.max_frame_bytes: 100 is outside")),
        "{p:?}"
    );
    // An entity limit the frames cannot carry is named with the size to raise the frame to.
    let p = with("", "max_state_bytes = 8388608");
    assert!(
        p.iter().any(|m| m.starts_with("cluster.max_frame_bytes:")
            && m.contains("entities.max_state_bytes = 8388608")
            && m.contains(&format!("at least {}", (8 << 20) + (1 << 20) + (64 << 10)))),
        "{p:?}"
    );
    assert_eq!(
        with("max_frame_bytes = 16777216", "max_state_bytes = 8388608"),
        Vec::<String>::new()
    );
    let p = with("copy_page_bytes = 0", "");
    assert!(
        p.iter().any(|m| m.starts_with("cluster.copy_page_bytes:")),
        "{p:?}"
    );
    // 65,536 shards make a map of about 10 MiB: more than 4 MiB frames carry.
    let p = with("shards = 65536", "");
    assert!(
        p.iter()
            .any(|m| m.contains("cannot carry the shard map of 65536 shards")),
        "{p:?}"
    );
}

#[test]
fn the_promotion_delay_exceeds_the_lease_for_every_valid_failure_timeout() {
    let mut cfg = ClusterConfig::for_test(3, 40_000, std::path::Path::new("/tmp/keelson-lease"));
    for ms in 100..=60_000u64 {
        cfg.failure_timeout = std::time::Duration::from_millis(ms);
        let (lease, promotion) = (cfg.lease(), cfg.promotion_delay());
        assert!(
            promotion > lease,
            "failure_timeout {ms} ms: promotion after {promotion:?}, lease {lease:?}"
        );
        // And by a margin the heartbeat period can cover (at most a third of the timeout).
        assert!(promotion - lease >= cfg.failure_timeout / 10, "{ms} ms");
    }
}

#[test]
fn a_node_reached_by_name_binds_the_address_it_is_given() {
    let named = GOOD
        .replace(
            "name = \"n1\"\nhost = \"127.0.0.1\"",
            "name = \"n1\"\nhost = \"keelson-0.keelson.default.svc\"\nbind_host = \"0.0.0.0\"\nops_host = \"0.0.0.0\"",
        )
        .replace(
            "name = \"n2\"\nhost = \"127.0.0.1\"\ncluster_port = 4702\nops_port = 9102",
            "name = \"n2\"\nhost = \"keelson-1.keelson.default.svc\"\nbind_host = \"0.0.0.0\"\nops_host = \"0.0.0.0\"\ncluster_port = 4701\nops_port = 9101",
        );
    // Same ports on two machines of their own are fine; the example-free cookie and TLS on
    // make it safe beyond loopback.
    let c = parse(&named, Path::new("/base")).unwrap();
    let n1 = &c.nodes[0];
    assert_eq!(n1.host, "keelson-0.keelson.default.svc");
    assert_eq!(n1.cluster_addr, "0.0.0.0:4701".parse().unwrap());
    assert_eq!(n1.ops_addr, "0.0.0.0:9101".parse().unwrap());

    let no_bind = GOOD.replace(
        "name = \"n1\"\nhost = \"127.0.0.1\"",
        "name = \"n1\"\nhost = \"keelson-0.keelson\"",
    );
    assert_eq!(
        problems(&no_bind),
        vec!["node \"n1\": host \"keelson-0.keelson\" is a DNS name: give bind_host, the IP address the node binds (e.g. \"0.0.0.0\")"]
    );
    let bad = GOOD.replace(
        "name = \"n1\"\nhost = \"127.0.0.1\"",
        "name = \"n1\"\nhost = \"not a host\"\nbind_host = \"0.0.0.0\"",
    );
    assert_eq!(
        problems(&bad),
        vec!["node \"n1\": host \"not a host\" is not an IP address or a DNS name"]
    );
    // `localhost` binds loopback and stays a loopback-only cluster.
    let local = GOOD.replace(
        "name = \"n1\"\nhost = \"127.0.0.1\"",
        "name = \"n1\"\nhost = \"localhost\"",
    );
    let c = parse(&local, Path::new("/base")).unwrap();
    assert_eq!(c.nodes[0].cluster_addr, "127.0.0.1:4701".parse().unwrap());
    let gateway_named = GOOD.replace(
        "[gateway]\nhost = \"127.0.0.1\"",
        "[gateway]\nhost = \"gw.example\"",
    );
    assert!(
        problems(&gateway_named)
            .iter()
            .any(|p| p == "gateway \"gateway\": host \"gw.example\" is not an IP address"),
        "{:?}",
        problems(&gateway_named)
    );
}
