//! keelson-actors: the CRM and IoT entities. Each customer and each device is one entity actor run
//! by the runtime; this crate owns their state, commands, validation rules and replies, and never
//! does I/O itself.
//!
//! ```text
//! gateway ──CustomerCommand──▶ runtime ──▶ Customer::handle(state, cmd) ──▶ CustomerReply
//! gateway ──DeviceCommand────▶ runtime ──▶ Device::handle(state, cmd)   ──▶ DeviceReply
//! feed    ──Record[{id, kind, item}]──▶ taste ──deltas──▶ item-model p0..p63 (Apply, once each)
//! gateway ──Neighbours{unless: version}──▶ every item-model partition ──▶ its neighbour lists
//! bridge  ──Ingest{seq}──▶ device: telemetry + anomaly ──▶ Alert{id}
//!         ──OpenTicket{alert_id}──▶ customer ──▶ Ticket ──AlertTicket──▶ device
//!         ──IssueCommand / CommandSent / CommandAck──▶ device ──RecordTicketAck──▶ customer
//! ```
//!
//! The parts:
//! - `customer`: the Customer entity; `customer/` holds its protocol (commands and answers),
//!   its state and the older `v1`/`v2` shapes, and one file per job: `profile`,
//!   `interactions`, `devices`, `tickets`, `view`.
//! - `device`: the Device entity; `device/` holds its protocol, its state and the `v1` shape,
//!   `ingest` (with `telemetry`, `sample_limits`, `anomaly`), `follow_up` (with `alerts`,
//!   `commands`), `twin` and `view`.
//! - `taste`: what the recommender knows of one customer (item weights), each interaction
//!   counted once by its id, with the co-occurrence delta it makes; `item_model`: one of the
//!   item-model partitions holding co-occurrence rows, applying each customer's deltas in
//!   order, once, and scoring its candidate items (the math is `keelson-recommend`).
//! - `keyring`: the API keys the gateway accepts; `credentials`: the devices' MQTT credentials.
//! - `validate`: the field rules every entity shares, among them [`validate_id`], the one id
//!   rule HTTP (gateway) and MQTT (bridge) both apply, and [`DomainError`].
//!
//! Every write is idempotent (the bridge redelivers after a node dies): ids are derived from the
//! message (`{device}-{seq}` alerts, `t-{alert}` tickets) and each follow-up step is set once.
//! Persisted states carry `STATE_VERSION`; older shapes are kept in `v1`/`v2` modules and
//! upgraded on load.

mod credentials;
mod customer;
mod device;
mod item_model;
mod keyring;
mod taste;
mod validate;

pub use credentials::{
    Credentials, CredentialsAnswer, CredentialsCommand, CredentialsReply, CredentialsState,
    DeviceCredential, CREDENTIALS_ID, MAX_DEVICE_CREDENTIALS,
};
pub use customer::{
    ticket_id, Consent, Customer, CustomerAnswer, CustomerCommand, CustomerPatch, CustomerReply,
    CustomerState, CustomerView, Interaction, NewCustomer, NewInteraction, Ticket, MAX_DEVICES,
    MAX_INTERACTIONS, MAX_INTERACTION_PAGE, MAX_TICKETS, TICKET_ACKNOWLEDGED, TICKET_OPEN,
    VIEW_INTERACTIONS,
};
pub use device::{
    twin_map_to_json, Alert, AnomalyConfig, Bucket, CommandAck, CommandRecord, Device,
    DeviceAnswer, DeviceCommand, DeviceReply, DeviceState, DeviceView, IngestOutcome, NewDevice,
    Range, ReadingStats, Sample, SampleLimits, Telemetry, TelemetryView, Twin, TwinValue, TwinView,
    ALERT_COOLDOWN_MS, BUCKET_MS, HISTORY_BUCKETS, MAX_ALERTS, MAX_COMMANDS,
    MAX_READINGS_PER_MESSAGE, MAX_SEQ, MAX_TRACKED_READINGS, MAX_TWIN_KEYS, MAX_TWIN_TEXT,
    RECENT_SAMPLES, SEQ_WINDOW, VIEW_ALERTS,
};
pub use item_model::{
    item_model_id, CountRow, ItemModel, ItemModelAnswer, ItemModelCommand, ItemModelReply,
    ItemModelState, ModelUpdate, NeighbourList, MAX_MODEL_BATCH, NEIGHBOUR_PAGE_ENTRIES,
};
pub use keyring::{
    ApiKeyRecord, Keyring, KeyringAnswer, KeyringCommand, KeyringReply, KeyringState,
    BOOTSTRAP_KEY_NAME, KEYRING_ID, MAX_KEYS,
};
pub use taste::{
    Recorded, Taste, TasteAnswer, TasteCommand, TasteInteraction, TasteRecord, TasteReply,
    TasteState, MAX_TASTE_BATCH, MAX_TASTE_IDS,
};
pub use validate::{validate_id, DomainError, MAX_ID_LEN, MAX_REF_LEN};

use keelson_runtime::EntityKinds;

/// Every entity kind this crate defines, for a node to host.
pub fn kinds() -> EntityKinds {
    EntityKinds::new()
        .register::<Customer>()
        .register::<Device>()
        .register::<Keyring>()
        .register::<Credentials>()
        .register::<Taste>()
        .register::<ItemModel>()
}
