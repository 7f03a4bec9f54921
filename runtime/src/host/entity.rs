//! The contract between the runtime and an entity crate, and the messages that carry a call to
//! one entity.
//!
//! An entity crate implements [`Entity`]: a pure `handle(state, command) -> reply` over its own
//! types. The runtime wraps each live entity in an `entity_actor::EntityActor` that loads its
//! state from the store when it starts, runs commands one at a time, and persists the state
//! before replying. `entity_kinds::EntityKinds` maps kind names to type-erased factories so the
//! shard supervisor can start any kind without knowing it.

use ractor::RpcReplyPort;
use ractor_cluster::RactorMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::codec;
use crate::wire::{Fault, IdempotencyKey, RemoteError};

/// Address of an entity within the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityKey {
    /// Kind name, e.g. `customer`.
    pub kind: String,
    /// Id, unique within the kind.
    pub id: String,
}

impl std::fmt::Display for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// Reads an entity's journal for its handler.
pub trait JournalRead {
    /// Up to `limit` records after `after`, with their sequence numbers (from 1).
    fn page(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String>;
}

/// What an entity handler sees besides its state.
#[derive(Clone)]
pub struct EntityContext<'a> {
    /// The entity's id.
    pub id: &'a str,
    /// Wall-clock time, ms since the Unix epoch.
    pub now_ms: u64,
    /// Records in the entity's journal; the next one appended gets `journal_len + 1`.
    pub journal_len: u64,
    journal: Option<&'a dyn JournalRead>,
}

impl std::fmt::Debug for EntityContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityContext")
            .field("id", &self.id)
            .field("now_ms", &self.now_ms)
            .field("journal_len", &self.journal_len)
            .finish()
    }
}

impl<'a> EntityContext<'a> {
    /// A context with an empty journal (what a test of a handler needs).
    pub fn new(id: &'a str, now_ms: u64) -> Self {
        Self {
            id,
            now_ms,
            journal_len: 0,
            journal: None,
        }
    }

    /// A context whose journal holds `len` records read through `journal`.
    pub fn with_journal(mut self, len: u64, journal: &'a dyn JournalRead) -> Self {
        self.journal_len = len;
        self.journal = Some(journal);
        self
    }

    /// Up to `limit` journal records after `after`.
    pub fn journal(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, EntityError> {
        match self.journal {
            Some(j) => j.page(after, limit).map_err(EntityError),
            None => Ok(Vec::new()),
        }
    }
}

/// A handled command: the reply, whether the state changed (and so must be persisted), and
/// records to append to the entity's journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled<R> {
    /// Reply to the caller.
    pub reply: R,
    /// True when `state` was modified.
    pub changed: bool,
    /// Encoded records to append to the journal, in order: each costs one small write, however
    /// long the journal already is.
    pub append: Vec<Vec<u8>>,
}

impl<R> Handled<R> {
    /// A reply that changed nothing.
    pub fn read(reply: R) -> Self {
        Self {
            reply,
            changed: false,
            append: Vec::new(),
        }
    }
    /// A reply after a change.
    pub fn wrote(reply: R) -> Self {
        Self {
            reply,
            changed: true,
            append: Vec::new(),
        }
    }
    /// A reply after a change that appends `record` to the journal.
    pub fn appended(reply: R, record: Vec<u8>) -> Self {
        Self {
            reply,
            changed: true,
            append: vec![record],
        }
    }
}

/// A failure inside an entity handler: the actor is failed and restarted by its supervisor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EntityError(pub String);

/// An entity kind.
pub trait Entity: Send + Sync + 'static {
    /// Kind name: the first half of the entity's address. Persisted: never rename.
    const KIND: &'static str;
    /// Version byte of the persisted state's encoding.
    const STATE_VERSION: u8;
    /// Persisted state; `None` means the entity does not exist yet (or was deleted).
    type State: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Commands the entity accepts.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What a command returns, domain errors included.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Applies one command.
    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<Self::State>,
        command: Self::Command,
    ) -> Result<Handled<Self::Reply>, EntityError>;

    /// True when every change this kind makes comes as journal records that [`Entity::replay`]
    /// applies to the state before it: the runtime then writes only a change's records and the
    /// whole state now and then (a checkpoint, see `host::checkpoint`), and loading replays the
    /// records after the last checkpoint. Such a kind must not read its own journal (records a
    /// checkpoint covers are removed), and a change with `changed` set but no records makes a
    /// checkpoint. False (the default): the state is written with every change.
    const REPLAYS: bool = false;

    /// Applies one record this kind appended to the state it was appended after (only called
    /// when [`Entity::REPLAYS`] is true): what `handle` did to `state`, done again.
    fn replay(
        _id: &str,
        _state: &mut Option<Self::State>,
        _record: &[u8],
    ) -> Result<(), EntityError> {
        Ok(())
    }

    /// Reads a state persisted under an older `STATE_VERSION`: `version` is the stored version
    /// byte and `body` the bytes after it. An entity that changed its state's shape keeps the old
    /// shape, decodes it with [`Entity::decode_body`] and converts it. `None` (the default) means
    /// the version is unknown and loading the entity fails.
    fn upgrade(_version: u8, _body: &[u8]) -> Option<Self::State> {
        None
    }

    /// Decodes the `body` of a value persisted under `version` as `T`, in the runtime's encoding:
    /// what [`Entity::upgrade`] uses to read an older state shape. Not meant to be overridden.
    fn decode_body<T: DeserializeOwned>(version: u8, body: &[u8]) -> Result<T, codec::CodecError> {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(version);
        bytes.extend_from_slice(body);
        codec::decode(version, &bytes)
    }
}

/// Result of one entity read: the encoded reply or a runtime error.
pub type EntityResult = Result<Vec<u8>, RemoteError>;

/// An entity's answer to one call.
#[derive(Debug)]
pub struct Served {
    /// The encoded `E::Reply`.
    pub reply: Vec<u8>,
    /// True when this is the reply kept for the call's idempotency key, sent again.
    pub replayed: bool,
}

/// Result of one call: the answer or a runtime error.
pub type CallResult = Result<Served, RemoteError>;

/// Message to an entity actor.
#[derive(RactorMessage)]
pub enum EntityMsg {
    /// Run one encoded command.
    Handle(Call),
}

/// One command for an entity, on its way from the shard host.
#[derive(Debug)]
pub struct Call {
    /// Encoded `E::Command`.
    pub payload: Vec<u8>,
    /// Injected fault, already authorised by the shard host.
    pub fault: Option<Fault>,
    /// A client key: a command seen with the same key is answered from memory, not re-run.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The request's `x-request-id`, carried from the gateway into this entity's logs.
    pub request_id: String,
    /// Where the encoded `E::Reply` goes.
    pub reply: RpcReplyPort<CallResult>,
}

/// Format version of entity payloads: commands, answers and journal records (persisted, so it
/// moves only with a migration; frames between nodes have their own `wire::WIRE_VERSION`).
pub const PAYLOAD_VERSION: u8 = 3;

/// Encodes a command or reply payload.
pub fn encode_payload<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(PAYLOAD_VERSION, value).expect("payload types always encode")
}

/// Decodes a command or reply payload.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, codec::CodecError> {
    codec::decode(PAYLOAD_VERSION, bytes)
}

pub use crate::clock::now_ms;
