//! Nobody gets in who does not belong: every route against every role (generated from the API
//! description the route table serves), credentials that must be refused, revocation, masking,
//! own-record customers, TLS on the API and mutual TLS on the cluster links. Real processes.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{serial, wait_for, Broker, Cluster, Settings};

const HS_SECRET: &str = "security-test-hs256-secret-0123456789";
const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "keelson-test";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A cluster with an HS256 secret and an ES256 public key configured for JWTs; returns the EC
/// private key (PEM) that signs ES256 tokens and the public key (PEM).
fn jwt_cluster(test: &str, mqtt: bool) -> (Cluster, String, String) {
    let dir = std::env::temp_dir().join(format!("keelson-jwt-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hs.secret"), HS_SECRET).unwrap();
    std::fs::write(dir.join("metrics.token"), "metrics-token-0123456789").unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("idp.pub.pem"), kp.public_key_pem()).unwrap();
    let extra = format!(
        "[auth]\nmetrics_token_file = \"{}\"\n[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nhs256_secret_file = \"{}\"\npublic_key_file = \"{}\"\npublic_key_algorithm = \"ES256\"\n",
        dir.join("metrics.token").display(),
        dir.join("hs.secret").display(),
        dir.join("idp.pub.pem").display()
    );
    let mut s = Settings {
        extra,
        ..Settings::default()
    };
    if mqtt {
        s.mqtt = Some((Broker::Embedded, String::new()));
    }
    (
        Cluster::configure(test, &s),
        kp.serialize_pem(),
        kp.public_key_pem(),
    )
}

fn claims(sub: &str, role: &str) -> Value {
    json!({"sub": sub, "role": role, "iss": ISSUER, "aud": AUDIENCE, "exp": now_s() + 600, "nbf": now_s() - 5})
}

fn hs256(c: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A request with `token` (none: no credentials): status and JSON body.
async fn send(
    c: &Cluster,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let body = body.map(Value::to_string);
    let (s, _, v) = c
        .req_as(method, path, body.as_deref(), Some(token.unwrap_or("")))
        .await;
    (s, v)
}

async fn make_key(c: &Cluster, name: &str, role: &str) -> String {
    let (s, v) = send(
        c,
        "POST",
        "/v1/keys",
        Some(&json!({"name": name, "role": role})),
        Some(&c.admin_key),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

/// The issue's role table, written out independently of the gateway's code.
fn allowed(permission: &str, role: &str) -> bool {
    match permission {
        "open" | "authenticated" => true,
        "read_data" => matches!(role, "admin" | "agent" | "viewer" | "customer"),
        "write_data" => matches!(role, "admin" | "agent"),
        "cluster_ops" => matches!(role, "admin" | "operator"),
        "erase_customer" | "manage_keys" | "manage_cluster" | "fault_injection" => role == "admin",
        other => panic!("the API names a permission the test does not know: {other}"),
    }
}

fn sample_body(schema: &str, n: usize) -> Value {
    match schema {
        "CreateCustomer" => json!({"name": "Sample"}),
        "PatchCustomer" => json!({"company": format!("c{n}")}),
        "AddInteraction" => json!({"kind": "call", "item": "x"}),
        "InteractionsBatch" => {
            json!({"interactions": [{"id": format!("sec-{n}"), "customer_id": "sec-c1", "kind": "view", "item": "x"}]})
        }
        "CreateDevice" => {
            json!({"customer_id": "sec-c1", "kind": "temperature", "firmware": "1.0"})
        }
        "PostTelemetry" => json!({"readings": {"temperature": 21.5}}),
        "PatchDesired" => json!({"state": {"mode": format!("m{n}")}}),
        "PostCommand" => json!({"name": "reboot"}),
        "CreateKey" => json!({"name": format!("gen-{n}"), "role": "viewer"}),
        "InjectFault" => json!({"mode": "error"}),
        other => panic!("no sample body for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_the_unauthenticated_and_the_wrong_role_and_serves_the_right_one() {
    let _guard = serial().await;
    let (mut c, _, _) = jwt_cluster("sec-routes", true);
    c.start_configured().await;
    let admin = c.admin_key.clone();
    // Fixtures: a customer (the customer principal), a device it owns.
    assert_eq!(
        send(
            &c,
            "POST",
            "/v1/customers",
            Some(&json!({"id": "sec-c1", "name": "C1", "email": "c1@example.com"})),
            Some(&admin)
        )
        .await
        .0,
        201
    );
    assert_eq!(send(&c, "POST", "/v1/devices", Some(&json!({"id": "sec-d1", "customer_id": "sec-c1", "kind": "temperature", "firmware": "1"})), Some(&admin)).await.0, 201);
    let mut tokens: HashMap<&str, String> = HashMap::new();
    tokens.insert("admin", admin.clone());
    for role in ["operator", "agent", "viewer"] {
        tokens.insert(role, make_key(&c, &format!("k-{role}"), role).await);
    }
    tokens.insert("customer", hs256(&claims("sec-c1", "customer")));

    let (s, doc) = send(&c, "GET", "/v1/openapi.json", None, Some(&admin)).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut n = 0;
    let mut checked = 0;
    let (mut want_401, mut want_403) = (0.0, 0.0);
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let permission = op["x-keelson-permission"]
                .as_str()
                .expect("every route names its permission");
            let schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|r| r.rsplit('/').next().unwrap().to_string());
            for role in ["none", "admin", "operator", "agent", "viewer", "customer"] {
                n += 1;
                // Fresh targets for the routes that consume them.
                let mut path = template.replace("{kind}", "customer").replace(
                    "{id}",
                    if template.starts_with("/v1/devices") {
                        "sec-d1"
                    } else {
                        "sec-c1"
                    },
                );
                if method == "DELETE" && template == "/v1/customers/{id}" {
                    let id = format!("erase-{n}");
                    send(
                        &c,
                        "POST",
                        "/v1/customers",
                        Some(&json!({"id": id, "name": "E"})),
                        Some(&admin),
                    )
                    .await;
                    path = format!("/v1/customers/{id}");
                }
                if template == "/v1/cluster/nodes/{name}" {
                    // Removing a real node would change the cluster under the other routes:
                    // an unknown one is answered 404 by the handler, past authorization.
                    path = "/v1/cluster/nodes/no-such-node".to_string();
                }
                if template == "/v1/keys/{name}" {
                    let name = format!("rev-{n}");
                    make_key(&c, &name, "viewer").await;
                    path = format!("/v1/keys/{name}");
                }
                let body = schema.as_deref().map(|s| sample_body(s, n));
                let token = tokens.get(role).map(String::as_str);
                let (status, v) = send(&c, &method, &path, body.as_ref(), token).await;
                let what = format!("{method} {path} as {role}: {status} {v}");
                if permission == "open" {
                    assert!((200..300).contains(&status), "{what}");
                } else if role == "none" {
                    want_401 += 1.0;
                    assert_eq!(status, 401, "{what}");
                    assert_eq!(v["error"]["code"], "unauthenticated", "{what}");
                } else if allowed(permission, role) {
                    // The fault route makes the entity fail on purpose: its 500 is the success.
                    let ok = (200..300).contains(&status)
                        || (permission == "fault_injection" && status == 500)
                        || (permission == "manage_cluster"
                            && status == 404
                            && v["error"]["code"] == "not_found");
                    assert!(ok, "{what}");
                } else {
                    want_403 += 1.0;
                    assert_eq!(status, 403, "{what}");
                    assert_eq!(v["error"]["code"], "forbidden", "{what}");
                    assert!(
                        v["error"]["message"].as_str().unwrap().contains(permission),
                        "{what}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 25 * 6, "only {checked} route/role pairs");
    assert!(
        want_401 >= 20.0 && want_403 >= 40.0,
        "{want_401} / {want_403}"
    );

    // The body never says whether an entity exists: another customer's record, an unknown one,
    // and an unknown device are all the same 403 for a customer.
    let me = &tokens["customer"];
    for path in [
        "/v1/customers/someone-else",
        "/v1/customers/no-such",
        "/v1/devices/no-such",
        "/v1/devices/no-such/twin",
    ] {
        let (s, v) = send(&c, "GET", path, None, Some(me)).await;
        assert_eq!(s, 403, "{path}: {v}");
    }
    // Denials are counted by reason.
    let missing = c
        .metric(
            "gateway",
            "keelson_auth_denied_total{reason=\"missing_credentials\"}",
        )
        .await;
    let forbidden = c
        .metric("gateway", "keelson_auth_denied_total{reason=\"forbidden\"}")
        .await;
    assert!(
        missing >= want_401 && forbidden >= want_403 + 4.0,
        "missing {missing}, forbidden {forbidden}"
    );
    // No secret in any log.
    for name in ["gateway", "n1", "n2", "n3", "n4"] {
        let log = std::fs::read_to_string(c.dir.join("logs").join(format!("{name}.log"))).unwrap();
        for t in tokens.values() {
            let secret = t.rsplit('.').next().unwrap();
            assert!(!log.contains(secret), "{name}'s log holds a credential");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_keys_revoke_at_once_viewers_see_masked_data() {
    let _guard = serial().await;
    let (mut c, ec_private, public_pem) = jwt_cluster("sec-tokens", false);
    c.start_configured().await;
    let admin = c.admin_key.clone();
    assert_eq!(send(&c, "POST", "/v1/customers", Some(&json!({"id": "ada", "name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0958"})), Some(&admin)).await.0, 201);
    assert_eq!(
        send(
            &c,
            "POST",
            "/v1/customers",
            Some(&json!({"id": "bob", "name": "Bob"})),
            Some(&admin)
        )
        .await
        .0,
        201
    );

    // Good tokens of both algorithms.
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims("ada", "customer"),
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
    )
    .unwrap();
    for t in [hs256(&claims("ada", "customer")), es.clone()] {
        let (s, v) = send(&c, "GET", "/v1/customers/ada", None, Some(&t)).await;
        assert_eq!((s, v["id"].as_str()), (200, Some("ada")), "{v}");
        assert_eq!(
            v["email"], "ada@example.com",
            "a customer sees its own record unmasked"
        );
        assert_eq!(
            send(&c, "GET", "/v1/customers/bob", None, Some(&t)).await.0,
            403
        );
    }

    // Refused: forged, expired, not yet valid, wrong audience, wrong issuer, alg none,
    // HS256 signed with the public key (algorithm confusion), unknown role.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let with = |k: &str, v: Value| {
        let mut c = claims("ada", "customer");
        c[k] = v;
        hs256(&c)
    };
    let bad = vec![
        (
            "forged",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("ada", "customer"),
                &EncodingKey::from_secret(b"not-the-secret-not-the-secret-xx"),
            )
            .unwrap(),
        ),
        ("expired", with("exp", json!(now_s() - 60))),
        ("not yet valid", with("nbf", json!(now_s() + 600))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("unknown role", with("role", json!("root"))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(claims("ada", "admin"))
            ),
        ),
        (
            "alg confusion",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("ada", "admin"),
                &EncodingKey::from_secret(public_pem.as_bytes()),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, t) in &bad {
        let (s, v) = send(&c, "GET", "/v1/customers/ada", None, Some(t)).await;
        assert_eq!(s, 401, "{what}: {v}");
    }
    let refused = c
        .metric("gateway", "keelson_auth_denied_total{reason=\"bad_token\"}")
        .await;
    assert!(refused >= bad.len() as f64, "bad_token counted {refused}");

    // /metrics asks for its token, and the scrape configuration carries it.
    let metrics = c.ops_url("gateway", "/metrics");
    assert_eq!(reqwest::get(&metrics).await.unwrap().status(), 401);
    let (code, yaml, _) = c.keelson(&["prometheus-config"]);
    assert_eq!(code, 0);
    assert!(
        yaml.contains("type: Bearer") && yaml.contains("metrics.token"),
        "{yaml}"
    );

    // A viewer sees email and phone masked.
    let viewer = make_key(&c, "v1", "viewer").await;
    let (s, v) = send(&c, "GET", "/v1/customers/ada", None, Some(&viewer)).await;
    assert_eq!(s, 200);
    assert_eq!(v["email"], "a***@example.com");
    assert_eq!(v["phone"], "+** ** **** **58");
    assert_eq!(v["name"], "Ada");

    // Listing shows no secret; revocation is refused at once and stays refused.
    let agent = make_key(&c, "crm-web", "agent").await;
    assert_eq!(
        send(&c, "GET", "/v1/customers/ada", None, Some(&agent))
            .await
            .0,
        200
    );
    let (_, list) = send(&c, "GET", "/v1/keys", None, Some(&admin)).await;
    let text = list.to_string();
    assert!(
        text.contains("crm-web") && !text.contains(agent.rsplit('.').next().unwrap()),
        "{text}"
    );
    let t0 = Instant::now();
    assert_eq!(
        send(&c, "DELETE", "/v1/keys/crm-web", None, Some(&admin))
            .await
            .0,
        200
    );
    wait_for(
        "the revoked key to be refused",
        Duration::from_secs(1),
        || async {
            (send(&c, "GET", "/v1/customers/ada", None, Some(&agent))
                .await
                .0
                == 401)
                .then_some(())
        },
    )
    .await;
    eprintln!("revocation refused after {:?}", t0.elapsed());
    // Still refused after the keyring refresh (it comes from the replicated keyring, not memory).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        send(&c, "GET", "/v1/customers/ada", None, Some(&agent))
            .await
            .0,
        401
    );

    // The keyring survives a restart of the gateway (keys live in the cluster).
    c.kill("gateway");
    c.spawn("gateway");
    c.wait_all_up().await;
    wait_for(
        "the viewer key to work after a gateway restart",
        Duration::from_secs(10),
        || async {
            (send(&c, "GET", "/v1/customers/ada", None, Some(&viewer))
                .await
                .0
                == 200)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        send(&c, "GET", "/v1/customers/ada", None, Some(&agent))
            .await
            .0,
        401
    );

    // The CLI: create prints the key as its last line; list and revoke work.
    let (code, out, err) = c.keelson(&["keys", "create", "--role", "agent", "--name", "cli-made"]);
    assert_eq!(code, 0, "{err}");
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("kk_"), "{out}");
    assert_eq!(
        send(&c, "GET", "/v1/customers/ada", None, Some(&key))
            .await
            .0,
        200
    );
    let (code, out, _) = c.keelson(&["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("cli-made") && !out.contains(key.rsplit('.').next().unwrap()),
        "{out}"
    );
    let (code, _, _) = c.keelson(&["keys", "revoke", "cli-made"]);
    assert_eq!(code, 0);
    assert_eq!(
        send(&c, "GET", "/v1/customers/ada", None, Some(&key))
            .await
            .0,
        401
    );
    let (code, _, err) = c.keelson(&["keys", "revoke", "no-such-key"]);
    assert_eq!(code, 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_only_tls_and_exempts_exactly_health_and_ready() {
    let _guard = serial().await;
    let c = Cluster::start("sec-tls", Settings::default()).await;
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = c.gateway.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/health"))
        .send()
        .await;
    assert!(
        r.is_err() || !r.unwrap().status().is_success(),
        "plain HTTP was served"
    );
    // A client that does not trust the cluster CA refuses the certificate.
    let stranger = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap();
    assert!(stranger
        .get(format!("{}/health", c.gateway))
        .send()
        .await
        .is_err());
    // A client trusting the CA succeeds; only /health and /ready are open, matched exactly.
    let (s, _) = send(&c, "GET", "/health", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(send(&c, "GET", "/ready", None, None).await.0, 200);
    for p in [
        "/health/",
        "/health?x=/health",
        "/health/../v1/cluster",
        "//health",
        "/v1/cluster?/health",
        "/ready/x",
        "/HEALTH",
    ] {
        let (s, v) = send(&c, "GET", p, None, None).await;
        let open_and_served = s == 200 && p.starts_with("/health?");
        assert!(s == 401 || open_and_served, "{p}: {s} {v}");
    }
    // HTTP/2 is offered over TLS.
    let r = c
        .http
        .get(format!("{}/v1/cluster", c.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_links_refuse_strangers_and_stolen_names_and_stalled_handshakes_block_nobody() {
    let _guard = serial().await;
    let mut c = Cluster::start("sec-links", Settings::default()).await;
    let n1 = c.cfg.nodes[0].cluster_addr;
    // A stalled handshake (connect, say nothing) and garbage do not hold up others.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(n1).await.unwrap());
    }
    {
        use tokio::io::AsyncWriteExt;
        let mut g = tokio::net::TcpStream::connect(n1).await.unwrap();
        let _ = g
            .write_all(b"\x16\x03\x01garbage garbage garbage\r\n\r\n")
            .await;
    }
    // No client certificate, and one from another CA: refused at the handshake.
    let other_ca = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["n2.node.keelson".to_string()]).unwrap();
    p.is_ca = rcgen::IsCa::NoCa;
    let forged = p.self_signed(&other_ca).unwrap();
    let ca_roots = {
        let mut r = rustls::RootCertStore::empty();
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(c.dir.join("data/tls/ca.pem")).unwrap()
        {
            r.add(cert.unwrap()).unwrap();
        }
        std::sync::Arc::new(r)
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca_roots.clone())
    };
    let configs = [
        builder().with_no_client_auth(),
        builder()
            .with_client_auth_cert(
                vec![forged.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(other_ca.serialize_der()).unwrap(),
            )
            .unwrap(),
    ];
    let before = c
        .metric(
            "n1",
            "keelson_link_refusals_total{reason=\"tls_handshake\"}",
        )
        .await;
    for cfg in configs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(n1).await.unwrap();
        let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let name = rustls::pki_types::ServerName::try_from("n1.node.keelson").unwrap();
        // TLS 1.3: the server's refusal of the client certificate arrives on the first read.
        if let Ok(mut s) = conn.connect(name, tcp).await {
            let _ = s.write_all(b"hello").await;
            let mut buf = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap();
            assert!(
                matches!(r, Ok(0) | Err(_)),
                "the stranger was answered: {r:?}"
            );
        }
    }
    wait_for(
        "n1 to count both refused handshakes",
        Duration::from_secs(5),
        || async {
            (c.metric(
                "n1",
                "keelson_link_refusals_total{reason=\"tls_handshake\"}",
            )
            .await
                >= before + 2.0)
                .then_some(())
        },
    )
    .await;

    // A member with a valid certificate claiming another member's name: n4 restarted with n1's
    // certificate. It is refused by every node and never comes up; the cluster keeps serving.
    assert_eq!(
        c.req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"still","name":"S"}"#)
        )
        .await
        .0,
        201
    );
    c.kill("n4");
    wait_for("n4 marked down", Duration::from_secs(10), || async {
        (c.state_of("n4").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    let stolen = c.dir.join("stolen-tls");
    std::fs::create_dir_all(&stolen).unwrap();
    for f in std::fs::read_dir(c.dir.join("data/tls")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), stolen.join(f.file_name())).unwrap();
    }
    std::fs::copy(stolen.join("n1.pem"), stolen.join("n4.pem")).unwrap();
    std::fs::copy(stolen.join("n1.key"), stolen.join("n4.key")).unwrap();
    let text = std::fs::read_to_string(&c.config).unwrap();
    let impostor_cfg = c.dir.join("impostor.toml");
    std::fs::write(
        &impostor_cfg,
        format!("{text}\n[tls]\ndir = \"{}\"\n", stolen.display()),
    )
    .unwrap();
    let log = std::fs::File::create(c.dir.join("logs/impostor.log")).unwrap();
    let mut impostor = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(["node", "--name", "n4", "--config"])
        .arg(&impostor_cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(
        "the nodes to refuse the stolen name",
        Duration::from_secs(15),
        || async {
            let mut total = 0.0;
            for n in ["n1", "n2", "n3"] {
                total += c
                    .metric(n, "keelson_link_refusals_total{reason=\"name_mismatch\"}")
                    .await;
            }
            (total >= 1.0).then_some(())
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_ne!(
            c.state_of("n4").await.as_deref(),
            Some("up"),
            "the impostor joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Meanwhile the cluster serves, and a stalled peer never blocked the real n4's return.
    let (s, _, v) = c.req("GET", "/v1/customers/still", None).await;
    assert_eq!(s, 200, "{v}");
    // The gateway's own traffic (requests, map reads, heartbeats) never trips the node-side
    // filter that ends a gateway session sending replication or consensus messages.
    for n in ["n1", "n2", "n3"] {
        let tripped = c
            .metric(n, "keelson_link_refusals_total{reason=\"gateway_frame\"}")
            .await;
        assert_eq!(tripped, 0.0, "{n}");
    }
    let _ = impostor.kill();
    let _ = impostor.wait();
    c.spawn("n4");
    c.wait_all_up().await;
    drop(idle);
}
