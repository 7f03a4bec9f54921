//! The JSON shapes of the public API and their translation into entity commands. Every request
//! struct refuses unknown fields.

use std::collections::BTreeMap;

use keelson_actors::{Consent, CustomerPatch, NewCustomer, NewDevice, NewInteraction, Telemetry};
use serde::{Deserialize, Deserializer, Serialize};

/// `POST /v1/customers`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// Chosen id; generated when absent.
    pub id: Option<String>,
    /// Full name.
    pub name: String,
    /// E-mail.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Consent flags.
    #[serde(default)]
    pub consent: Consent,
}

impl CreateCustomer {
    /// The domain command's fields.
    pub fn into_new(self) -> NewCustomer {
        NewCustomer {
            name: self.name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            tags: self.tags,
            consent: self.consent,
        }
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/customers/{id}`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchCustomer {
    /// New name.
    pub name: Option<String>,
    /// New e-mail, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    /// New phone, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    pub phone: Option<Option<String>>,
    /// New company, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    pub company: Option<Option<String>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New consent flags.
    pub consent: Option<Consent>,
}

impl PatchCustomer {
    /// The domain patch.
    pub fn into_patch(self) -> CustomerPatch {
        CustomerPatch {
            name: self.name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            tags: self.tags,
            consent: self.consent,
        }
    }
}

/// `POST /v1/customers/{id}/interactions`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddInteraction {
    /// Kind, e.g. `call`.
    pub kind: String,
    /// Item, e.g. an order reference.
    pub item: String,
    /// When (ms since the Unix epoch); now when absent.
    pub at_ms: Option<u64>,
}

impl AddInteraction {
    /// The domain command's fields.
    pub fn into_new(self) -> NewInteraction {
        NewInteraction {
            kind: self.kind,
            item: self.item,
            at_ms: self.at_ms,
        }
    }
}

/// `POST /v1/devices`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// Chosen id; generated when absent.
    pub id: Option<String>,
    /// Owning customer.
    pub customer_id: String,
    /// Kind.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
}

impl CreateDevice {
    /// The domain command's fields.
    pub fn into_new(self) -> NewDevice {
        NewDevice {
            customer_id: self.customer_id,
            kind: self.kind,
            firmware: self.firmware,
        }
    }
}

/// `POST /v1/devices/{id}/telemetry`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostTelemetry {
    /// Reading name to value.
    pub readings: BTreeMap<String, f64>,
    /// When taken (ms since the Unix epoch); now when absent.
    pub at_ms: Option<u64>,
}

impl PostTelemetry {
    /// The domain command's fields, held to `limits`.
    pub fn into_telemetry(self, limits: keelson_actors::SampleLimits) -> Telemetry {
        Telemetry {
            readings: self.readings,
            at_ms: self.at_ms,
            limits,
        }
    }
}

/// `POST /v1/debug/fault/{kind}/{id}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectFault {
    /// `panic` or `error`.
    pub mode: FaultMode,
}

/// Which fault to inject.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// The entity panics.
    Panic,
    /// The entity's handler returns an error.
    Error,
}

/// `POST /v1/customers/{id}/interactions` answer.
#[derive(Debug, Serialize)]
pub struct InteractionAdded<'a> {
    /// Customer.
    pub customer_id: &'a str,
    /// The interaction recorded.
    pub interaction: &'a keelson_actors::Interaction,
    /// Customer version after it.
    pub version: u64,
    /// What the recommendation model does with it: `queued`, `counted`, `not_counted` or
    /// `not_weighed` (a kind the model does not weigh).
    pub model: &'static str,
}

/// One member in `GET /v1/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterMemberInfo {
    /// Member status as this gateway sees it.
    #[serde(flatten)]
    pub status: keelson_runtime::MemberStatus,
    /// Shards it owns (0 for gateways).
    pub shards_owned: usize,
    /// Shards it follows in sync.
    pub shards_following: usize,
    /// Shards it is copying.
    pub shards_learning: usize,
    /// On its way out (`keelson nodes remove`): given nothing new, emptied, then removed.
    pub draining: bool,
}

/// `GET /v1/cluster`
#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    /// Cluster name.
    pub cluster: String,
    /// This gateway.
    pub gateway: String,
    /// Shard-map version (consensus log index of the last change).
    pub map_version: u64,
    /// Shard count.
    pub shards: u32,
    /// Copies per shard.
    pub replication_factor: usize,
    /// Shards with fewer in-sync copies than the replication factor.
    pub under_replicated: usize,
    /// Shard copies in progress.
    pub learners: usize,
    /// What this gateway is bounded by.
    pub gateway_limits: GatewayLimits,
    /// Every member.
    pub members: Vec<ClusterMemberInfo>,
}

/// The gateway's limits in force, in `GET /v1/cluster`.
#[derive(Debug, Serialize)]
pub struct GatewayLimits {
    /// The process's open-file limit (raised to the hard limit at start).
    pub open_files: u64,
    /// Open connections kept at most.
    pub max_connections: usize,
    /// Requests in progress at most.
    pub max_in_flight: usize,
}

/// One shard in `GET /v1/cluster/shards`.
#[derive(Debug, Serialize)]
pub struct ShardInfo<'a> {
    /// Shard number.
    pub shard: u32,
    /// Epoch, primary, in-sync followers and learners.
    #[serde(flatten)]
    pub placement: &'a keelson_runtime::Placement,
}

/// `GET /v1/cluster/shards`: the shard map as this gateway follows it.
#[derive(Debug, Serialize)]
pub struct ShardsInfo<'a> {
    /// Shard-map version.
    pub map_version: u64,
    /// Every shard.
    pub shards: Vec<ShardInfo<'a>>,
}

/// `GET /v1/cluster/locate/{kind}/{id}`
#[derive(Debug, Serialize)]
pub struct Location<'a> {
    /// Kind.
    pub kind: &'a str,
    /// Id.
    pub id: &'a str,
    /// Shard.
    pub shard: u32,
    /// Owner node.
    pub owner: &'a str,
    /// Owner's state as this gateway sees it.
    pub owner_state: &'a str,
    /// Shard-map epoch.
    pub epoch: u64,
}
