//! Erasure (GDPR Art. 17): deleting a customer removes its personal data from every answer,
//! every log line and every file under every node's data directory. Real processes.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{serial, wait_for, Cluster, Settings};

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

async fn ok(c: &Cluster, method: &str, path: &str, body: Value, key: Option<&str>) -> Value {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = c
        .http
        .request(m, format!("{}{path}", c.gateway))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        rb = rb.header("idempotency-key", k);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_customer_leaves_its_email_and_phone_in_no_answer_log_or_file() {
    let _guard = serial().await;
    let c = Cluster::start("erasure", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let email = "zelda.quartermaine-7731@example.org";
    let phone = "+44 20 7946 0958";
    ok(
        &c,
        "POST",
        "/v1/customers",
        json!({"id": "gdpr-1", "name": "Zelda Quartermaine", "email": email, "phone": phone}),
        None,
    )
    .await;
    // A keyed write whose kept reply holds the email and phone.
    ok(
        &c,
        "PATCH",
        "/v1/customers/gdpr-1",
        json!({"company": "Quartermaine Ltd"}),
        Some("gdpr-key-1"),
    )
    .await;
    for i in 0..20 {
        ok(
            &c,
            "POST",
            "/v1/customers/gdpr-1/interactions",
            json!({"kind": "call", "item": format!("call-{i}")}),
            None,
        )
        .await;
    }
    for d in ["gdpr-d1", "gdpr-d2"] {
        ok(
            &c,
            "POST",
            "/v1/devices",
            json!({"id": d, "customer_id": "gdpr-1", "kind": "temperature", "firmware": "1"}),
            None,
        )
        .await;
        ok(
            &c,
            "POST",
            &format!("/v1/devices/{d}/telemetry"),
            json!({"readings": {"temperature": 21.5}}),
            None,
        )
        .await;
    }
    // The recommender counted its devices: the kind is popular, and not recommended to it.
    let recommended = |who: &'static str| {
        let c = &c;
        async move {
            let v = ok(
                c,
                "GET",
                &format!("/v1/customers/{who}/recommendations"),
                Value::Null,
                None,
            )
            .await;
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["item"].as_str().unwrap().to_string())
                .collect::<Vec<String>>()
        }
    };
    wait_for(
        "the devices to reach the model",
        Duration::from_secs(20),
        || async {
            recommended("someone-else")
                .await
                .contains(&"device:temperature".to_string())
                .then_some(())
        },
    )
    .await;
    assert!(!recommended("gdpr-1")
        .await
        .contains(&"device:temperature".to_string()));
    let v = ok(&c, "GET", "/v1/customers/gdpr-1", Value::Null, None).await;
    assert_eq!(v["email"], email);
    assert_eq!(v["devices"], json!(["gdpr-d1", "gdpr-d2"]));
    assert_eq!(v["interaction_count"], 20);

    // Erase.
    let r = c
        .http
        .delete(format!("{}/v1/customers/gdpr-1", c.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // No answer holds it: the record, its devices and interactions are gone; the key's kept
    // reply is forgotten (the same keyed write now finds no customer).
    for path in [
        "/v1/customers/gdpr-1",
        "/v1/customers/gdpr-1/interactions",
        "/v1/customers/gdpr-1/tickets",
        "/v1/devices/gdpr-d1",
        "/v1/devices/gdpr-d2/telemetry",
    ] {
        let (s, _, v) = c.req("GET", path, None).await;
        assert_eq!(s, 404, "{path}: {v}");
        assert!(!v.to_string().contains(email), "{path}: {v}");
    }
    // Its taste is gone, and so is what it added to the model: the kind only it owned is
    // recommended to nobody, as if it had never been counted.
    for who in ["gdpr-1", "someone-else"] {
        let got = recommended(who).await;
        assert!(
            !got.contains(&"device:temperature".to_string()),
            "{who}: {got:?}"
        );
    }
    let (s, _, v) = c
        .req(
            "PATCH",
            "/v1/customers/gdpr-1",
            Some(&json!({"company": "Quartermaine Ltd"}).to_string()),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    // Erasing again finds nothing to erase.
    let (s, _, v) = c.req("DELETE", "/v1/customers/gdpr-1", None).await;
    assert_eq!(s, 404, "{v}");

    // Every node's data directory and every log, once the stores are flushed: absent. (Every
    // value is sealed under its entity's key, so not even the storage engine's old bytes hold it.)
    wait_for("every store flushed", Duration::from_secs(10), || async {
        let mut files = files_containing(&c.dir, email.as_bytes());
        files.extend(files_containing(&c.dir, phone.as_bytes()));
        files.is_empty().then_some(())
    })
    .await;
    // And the check can fail: the nodes.toml written for this test holds neither, but a file
    // that does is found.
    std::fs::write(c.dir.join("probe"), email).unwrap();
    assert_eq!(files_containing(&c.dir, email.as_bytes()).len(), 1);
}
