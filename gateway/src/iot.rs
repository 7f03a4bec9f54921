//! The device routes beyond registration: twin, commands, telemetry history, alerts, tickets.
//! Desired state and commands are persisted by the device actor first, then published to the
//! device through the bridge's publisher (QoS 1, confirmed by the broker).
//!
//! ```text
//! PATCH /v1/devices/{id}/twin/desired ─▶ device PatchDesired ─▶ publish keelson/devices/{id}/twin/desired (retained)
//! POST  /v1/devices/{id}/commands     ─▶ device IssueCommand ─▶ publish keelson/devices/{id}/commands ─▶ CommandSent
//! ```

use std::collections::{BTreeMap, HashMap};

use keelson_actors::{CustomerAnswer, CustomerCommand, DeviceAnswer, DeviceCommand, TwinValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warp::http::StatusCode;

use crate::body;
use crate::error::ApiError;
use crate::handler::{id_ok, new_id, ok, send_customer, send_device, with_node, Ctx, Outcome, Rq};

/// `PATCH /v1/devices/{id}/twin/desired`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDesired {
    /// Keys to set (a scalar) or delete (`null`).
    pub state: serde_json::Map<String, Value>,
    /// Refuse unless the desired state is at this version.
    pub expected_version: Option<u64>,
}

/// `POST /v1/devices/{id}/commands`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCommand {
    /// Chosen id (a retry with the same id changes nothing); generated when absent.
    pub id: Option<String>,
    /// What to do, e.g. `reboot`.
    pub name: String,
    /// Parameters: scalars.
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
}

fn to_json(map: &BTreeMap<String, TwinValue>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

fn scalar(field: &str, v: &Value) -> Result<TwinValue, ApiError> {
    TwinValue::from_json(v).ok_or_else(|| {
        ApiError::field(
            field,
            "must be a boolean, a number or a string (twin documents are flat)",
        )
    })
}

#[derive(Serialize)]
struct TwinBody {
    device_id: String,
    reported: Value,
    reported_version: u64,
    desired: Value,
    desired_version: u64,
    delta: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_error: Option<String>,
}

fn twin_body(id: &str, t: &keelson_actors::TwinView) -> TwinBody {
    TwinBody {
        device_id: id.to_string(),
        reported: to_json(&t.reported),
        reported_version: t.reported_version,
        desired: to_json(&t.desired),
        desired_version: t.desired_version,
        delta: to_json(&t.delta),
        published: None,
        publish_error: None,
    }
}

fn unexpected(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("the device answered {what} with an unexpected reply"),
    )
}

/// `GET /v1/devices/{id}/twin`
pub async fn twin(ctx: &Ctx, id: &str, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    match send_device(ctx, id, DeviceCommand::GetTwin, rid).await? {
        (node, Ok(DeviceAnswer::Twin(t))) => ok(StatusCode::OK, &node, &twin_body(id, &t)),
        (node, Err(e)) => Err(with_node(e, &node)),
        _ => Err(unexpected("GetTwin")),
    }
}

fn publisher(ctx: &Ctx) -> Result<&keelson_bridge::Publisher, ApiError> {
    ctx.publisher.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mqtt_not_configured",
            "nodes.toml has no [mqtt] section: there is no broker to reach devices through",
        )
    })
}

/// `PATCH /v1/devices/{id}/twin/desired`
pub async fn patch_desired(
    ctx: &Ctx,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    let req: PatchDesired = body::json(&body?)?;
    let publisher = publisher(ctx)?;
    let mut patch = BTreeMap::new();
    for (k, v) in &req.state {
        let value = if v.is_null() {
            None
        } else {
            Some(scalar(&format!("state.{k}"), v)?)
        };
        patch.insert(k.clone(), value);
    }
    let cmd = DeviceCommand::PatchDesired {
        patch,
        expected_version: req.expected_version,
    };
    cmd.validate()?;
    let (node, t) = match send_device(ctx, id, cmd, rid).await? {
        (node, Ok(DeviceAnswer::Twin(t))) => (node, t),
        (node, Err(e)) => return Err(with_node(e, &node)),
        _ => return Err(unexpected("PatchDesired")),
    };
    // Retained, so a device that connects later still gets its latest desired state.
    let doc = json!({"version": t.desired_version, "state": to_json(&t.desired)});
    let mut out = twin_body(id, &t);
    match publisher
        .publish(
            &keelson_bridge::topics::desired(id),
            doc.to_string().into_bytes(),
            true,
        )
        .await
    {
        Ok(()) => out.published = Some(true),
        Err(e) => {
            out.published = Some(false);
            out.publish_error = Some(format!(
                "saved, but not yet delivered to the broker: {e}; repeat the request to publish it again"
            ));
        }
    }
    let status = if out.published == Some(true) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    ok(status, &node, &out)
}

/// `POST /v1/devices/{id}/commands`
pub async fn post_command(
    ctx: &Ctx,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    let req: PostCommand = body::json(&body?)?;
    let publisher = publisher(ctx)?;
    let command_id = match &req.id {
        Some(c) => {
            id_ok("id", c)?;
            c.clone()
        }
        None => new_id("c"),
    };
    let mut params = BTreeMap::new();
    for (k, v) in &req.params {
        params.insert(k.clone(), scalar(&format!("params.{k}"), v)?);
    }
    let cmd = DeviceCommand::IssueCommand {
        id: command_id.clone(),
        name: req.name.clone(),
        params,
        alert_id: None,
    };
    cmd.validate()?;
    let (node, record) = match send_device(ctx, id, cmd, rid).await? {
        (node, Ok(DeviceAnswer::Command(c))) => (node, c),
        (node, Err(e)) => return Err(with_node(e, &node)),
        _ => return Err(unexpected("IssueCommand")),
    };
    if let Err(e) =
        keelson_bridge::publish_command(publisher, id, &record.id, &record.name, &record.params)
            .await
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "publish_failed",
            format!(
                "command \"{}\" is recorded but the broker did not take it: {e}; retry with the same id",
                record.id
            ),
        ));
    }
    let (node, record) = match send_device(
        ctx,
        id,
        DeviceCommand::CommandSent {
            id: record.id.clone(),
        },
        rid,
    )
    .await?
    {
        (node, Ok(DeviceAnswer::Command(c))) => (node, c),
        (node, Err(e)) => return Err(with_node(e, &node)),
        _ => (node, record),
    };
    let mut out = ok(StatusCode::ACCEPTED, &node, &command_json(&record))?;
    out.location = Some(format!("/v1/devices/{id}/commands/{}", record.id));
    Ok(out)
}

fn command_json(c: &keelson_actors::CommandRecord) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "params": to_json(&c.params),
        "alert_id": c.alert_id,
        "created_ms": c.created_ms,
        "sent": c.sent,
        "ack": c.ack.as_ref().map(|a| json!({"status": a.status, "at_ms": a.at_ms})),
    })
}

/// `GET /v1/devices/{id}/commands`
pub async fn commands(ctx: &Ctx, id: &str, query: &HashMap<String, String>, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    let page = Page::of(query)?;
    match send_device(ctx, id, DeviceCommand::ListCommands, rid).await? {
        (node, Ok(DeviceAnswer::Commands(list))) => {
            let list: Vec<Value> = list.iter().map(command_json).collect();
            ok(
                StatusCode::OK,
                &node,
                &page.answer("device_id", id, "commands", &list),
            )
        }
        (node, Err(e)) => Err(with_node(e, &node)),
        _ => Err(unexpected("ListCommands")),
    }
}

/// `GET /v1/devices/{id}/alerts`
pub async fn alerts(ctx: &Ctx, id: &str, query: &HashMap<String, String>, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    let page = Page::of(query)?;
    match send_device(ctx, id, DeviceCommand::ListAlerts, rid).await? {
        (node, Ok(DeviceAnswer::Alerts(list))) => ok(
            StatusCode::OK,
            &node,
            &page.answer("device_id", id, "alerts", &list),
        ),
        (node, Err(e)) => Err(with_node(e, &node)),
        _ => Err(unexpected("ListAlerts")),
    }
}

/// `GET /v1/devices/{id}/telemetry?since=<ms since the Unix epoch>`
pub async fn telemetry(ctx: &Ctx, id: &str, query: &HashMap<String, String>, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    crate::handler::only_query(query, &["since"])?;
    let since_ms = match query.get("since") {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::field(
                "since",
                format!("\"{s}\" is not a time in ms since the Unix epoch"),
            )
        })?,
    };
    match send_device(ctx, id, DeviceCommand::GetTelemetry { since_ms }, rid).await? {
        (node, Ok(DeviceAnswer::Telemetry(t))) => ok(
            StatusCode::OK,
            &node,
            &json!({"device_id": id, "since": since_ms, "recent": t.recent, "history": t.history}),
        ),
        (node, Err(e)) => Err(with_node(e, &node)),
        _ => Err(unexpected("GetTelemetry")),
    }
}

/// `GET /v1/customers/{id}/tickets`
pub async fn tickets(ctx: &Ctx, id: &str, query: &HashMap<String, String>, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    let page = Page::of(query)?;
    match send_customer(ctx, id, CustomerCommand::ListTickets, rid, None).await? {
        (node, Ok(CustomerAnswer::Tickets(list))) => ok(
            StatusCode::OK,
            &node,
            &page.answer("customer_id", id, "tickets", &list),
        ),
        (node, Err(e)) => Err(with_node(e, &node)),
        _ => Err(unexpected("ListTickets")),
    }
}

/// `?offset=&limit=` over a bounded list kept oldest first (alerts, commands, tickets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    offset: usize,
    limit: usize,
}

/// Most items one page returns.
const MAX_PAGE: u64 = 1_000;

impl Page {
    fn of(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        crate::handler::only_query(query, &["offset", "limit"])?;
        Ok(Self {
            offset: crate::handler::query_u64(query, "offset", 0, 0..=u64::from(u32::MAX))?
                as usize,
            limit: crate::handler::query_u64(query, "limit", MAX_PAGE, 1..=MAX_PAGE)? as usize,
        })
    }

    /// `{owner_field: id, field: [page], total, next_offset}`.
    fn answer<T: serde::Serialize>(
        &self,
        owner_field: &str,
        id: &str,
        field: &str,
        list: &[T],
    ) -> Value {
        let items: Vec<&T> = list.iter().skip(self.offset).take(self.limit).collect();
        let next = self.offset.saturating_add(items.len());
        let mut v = json!({owner_field: id, field: items, "total": list.len()});
        v["next_offset"] = if next < list.len() {
            json!(next)
        } else {
            Value::Null
        };
        v
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pages_slice_the_list_and_say_where_the_next_starts() {
        let list: Vec<u32> = (1..=5).collect();
        let p = Page::of(&q(&[("offset", "1"), ("limit", "2")])).unwrap();
        let v = p.answer("device_id", "d1", "alerts", &list);
        assert_eq!(v["alerts"], json!([2, 3]));
        assert_eq!(
            (v["total"].clone(), v["next_offset"].clone()),
            (json!(5), json!(3))
        );
        let last =
            Page::of(&q(&[("offset", "3")]))
                .unwrap()
                .answer("device_id", "d1", "alerts", &list);
        assert_eq!(last["next_offset"], Value::Null);
        let past =
            Page::of(&q(&[("offset", "99")]))
                .unwrap()
                .answer("device_id", "d1", "alerts", &list);
        assert_eq!(past["alerts"], json!([]));
        for bad in [
            ("limit", "0"),
            ("limit", "1001"),
            ("offset", "-1"),
            ("page", "2"),
        ] {
            let e = Page::of(&q(&[bad])).unwrap_err();
            assert!(e.message.contains(bad.0), "{}", e.message);
        }
    }
}
