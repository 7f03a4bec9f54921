use std::path::Path;

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
fn mqtt_is_off_without_its_section_and_embedded_by_default_with_it() {
    let cfg = parse(GOOD, Path::new("/base")).unwrap();
    assert_eq!(mqtt(&cfg), None);
    assert_eq!(embedded_broker(&cfg), None);
    let cfg = parse(&format!("{GOOD}\n[mqtt]\n"), Path::new("/base")).unwrap();
    let m = mqtt(&cfg).unwrap();
    assert_eq!(m.addr, "127.0.0.1:1883".parse().unwrap());
    assert_eq!(
        m.broker,
        BrokerLocation::Embedded {
            ops_addr: "127.0.0.1:9105".parse().unwrap()
        }
    );
    assert_eq!(embedded_broker(&cfg).unwrap().name, "broker");
    let cfg = parse(
        &format!("{GOOD}\n[mqtt]\nbroker = \"mqtt://127.0.0.1:2883\"\n"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(mqtt(&cfg).unwrap().broker, BrokerLocation::External);
    assert_eq!(embedded_broker(&cfg), None, "nothing for `up` to run");
}

#[test]
fn mqtt_and_iot_problems_name_their_field() {
    let p = problems(&format!(
        "{GOOD}\n[mqtt]\nbroker = \"tcp://x\"\nrate_per_device = 0.0\n[iot]\newma_alpha = 1.5\n[iot.thresholds]\ntemperature = {{ min = 50.0, max = 10.0 }}\nhumidity = {{}}\n"
    ));
    for want in [
        "mqtt.broker: \"tcp://x\" is neither",
        "mqtt.rate_per_device: 0",
        "iot.ewma_alpha: 1.5",
        "iot.thresholds.temperature: min 50 must be below max 10",
        "iot.thresholds.humidity: give min, max or both",
    ] {
        assert!(p.iter().any(|x| x.starts_with(want)), "{want} not in {p:?}");
    }
    let p = problems(&format!("{GOOD}\n[mqtt]\nport = 9101\n"));
    assert!(
        p.iter()
            .any(|x| x.contains("mqtt.port: 9101 already used by node \"n1\"")),
        "{p:?}"
    );
    let p = problems(&format!("{GOOD}\n[mqtt]\ncolour = 1\n"));
    assert!(p[0].contains("colour"), "{p:?}");
}

#[test]
fn the_runtime_alone_refuses_the_sections_it_does_not_own() {
    let text = format!("{GOOD}\n[mqtt]\n");
    let err = keelson_runtime::config::parse(&text, Path::new("/base"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `mqtt`"), "{err}");
    assert!(
        err.contains("line 24"),
        "the error points at the line: {err}"
    );
    let err = parse(&format!("{GOOD}\n[mqtt]\ncolour = 1\n"), Path::new("/base"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 25") && err.contains("unknown field `colour`, expected one of `broker`"),
        "{err}"
    );
    let cfg = parse(&text, Path::new("/base")).unwrap();
    assert!(cfg.section("mqtt").is_some_and(|t| t.is_empty()));
}

#[test]
fn the_broker_gets_a_certificate_beside_the_members() {
    let cfg = parse(&format!("{GOOD}\n[mqtt]\n"), Path::new("/base")).unwrap();
    let s = tls_subjects(&cfg);
    assert_eq!(
        (s[0].name.as_str(), s[0].kind, s[0].ip),
        ("broker", "broker", "127.0.0.1".parse().unwrap())
    );
    let cfg = parse(
        &format!("{GOOD}\n[mqtt]\nbroker = \"mqtt://127.0.0.1:2883\"\n"),
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(tls_subjects(&cfg)[0].name, EXTERNAL_BROKER_CERT);
    assert!(tls_subjects(&parse(GOOD, Path::new("/base")).unwrap()).is_empty());
}
