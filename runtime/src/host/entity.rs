//! The contract between the runtime and an entity crate, and the generic actor that runs one entity.
//!
//! An entity crate implements [`Entity`]: a pure `handle(state, command) -> reply` over its own
//! types. The runtime wraps each live entity in an [`EntityActor`] that loads its state from the
//! [`Store`] when it starts, runs commands one at a time, and persists the state before replying.
//! [`EntityKinds`] maps kind names to type-erased factories so the shard supervisor can start any
//! kind without knowing it.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::EntityLimits;
use crate::host::entity_store::{self, Persisted};
use crate::host::idempotency::Seen;
use crate::metrics;
use crate::replication::Replicator;
use crate::storage::Store;
use crate::wire::codec;
use crate::wire::{Fault, IdempotencyKey, RemoteError};
use keelson_rules::shard_map::ShardId;

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

/// Encodes a command or reply payload.
pub fn encode_payload<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(crate::wire::WIRE_VERSION, value).expect("payload types always encode")
}

/// Decodes a command or reply payload.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, codec::CodecError> {
    codec::decode(crate::wire::WIRE_VERSION, bytes)
}

pub use crate::clock::now_ms;

/// Runs one entity of kind `E`.
pub struct EntityActor<E>(PhantomData<E>);

/// Start-up arguments of an [`EntityActor`].
#[derive(Debug)]
pub struct EntityArgs {
    /// Entity id.
    pub id: String,
    /// Its shard.
    pub shard: ShardId,
    /// The node's store.
    pub store: Store,
    /// Where changes go to be confirmed on the shard's followers.
    pub replicator: Arc<Replicator>,
    /// Size and idempotency bounds.
    pub limits: EntityLimits,
}

/// Live state of an [`EntityActor`].
pub struct EntityState<E: Entity> {
    id: String,
    shard: ShardId,
    store: Store,
    replicator: Arc<Replicator>,
    limits: EntityLimits,
    state: Option<E::State>,
    /// Everything persisted beside the state (its encoding is `None` here: see `state`).
    rest: Persisted,
}

/// The entity's journal in the store.
struct StoredJournal<'a> {
    store: &'a Store,
    shard: ShardId,
    kind: &'static str,
    id: &'a str,
    key: Option<&'a crate::host::sealing::DataKey>,
    len: u64,
}

impl JournalRead for StoredJournal<'_> {
    fn page(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        entity_store::read_journal(
            self.store, self.shard, self.kind, self.id, self.key, self.len, after, limit,
        )
    }
}

fn load<E: Entity>(
    store: &Store,
    shard: ShardId,
    id: &str,
) -> Result<(Option<E::State>, Persisted), String> {
    let mut p = entity_store::load(store, shard, E::KIND, id)?;
    let state = match p.state.take() {
        Some(b) => Some(
            decode_state::<E>(&b)
                .map_err(|e| format!("stored state of {}/{id} does not decode: {e}", E::KIND))?,
        ),
        None => None,
    };
    Ok((state, p))
}

/// Decodes a persisted state, upgrading one written under an older `STATE_VERSION`.
fn decode_state<E: Entity>(bytes: &[u8]) -> Result<E::State, codec::CodecError> {
    match codec::decode::<E::State>(E::STATE_VERSION, bytes) {
        Err(refused @ codec::CodecError::UnsupportedVersion { found, .. }) => {
            E::upgrade(found, &bytes[1..]).ok_or(refused)
        }
        decoded => decoded,
    }
}

/// The state's encoding, or `None` once deleted.
fn encoded_state<E: Entity>(st: &EntityState<E>) -> Result<Option<Vec<u8>>, String> {
    match &st.state {
        Some(s) => Some(codec::encode(E::STATE_VERSION, s).map_err(|e| e.to_string())).transpose(),
        None => Ok(None),
    }
}

/// Largest journal record, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

impl<E: Entity> Actor for EntityActor<E> {
    type Msg = EntityMsg;
    type State = EntityState<E>;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (state, rest) = load::<E>(&args.store, args.shard, &args.id)?;
        Ok(EntityState {
            id: args.id,
            shard: args.shard,
            store: args.store,
            replicator: args.replicator,
            limits: args.limits,
            state,
            rest,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let EntityMsg::Handle(Call {
            payload,
            fault,
            idempotency_key,
            request_id,
            reply,
        }) = message;
        let span =
            tracing::debug_span!("entity", request_id = %request_id, kind = E::KIND, id = %st.id);
        let _enter = span.enter();
        let handled = metrics::get().messages_handled.clone();
        match fault {
            Some(Fault::Panic) => panic!("injected panic in {}/{}", E::KIND, st.id),
            Some(Fault::Error) => {
                return Err(format!("injected error in {}/{}", E::KIND, st.id).into());
            }
            None => {}
        }
        let now = now_ms();
        if let Some(key) = &idempotency_key {
            let refused = match st.rest.keys.check(key, now, st.limits.keys) {
                Seen::New => None,
                Seen::Replay(Some(answer)) => {
                    handled.with_label_values(&[E::KIND, "deduplicated"]).inc();
                    let _ = reply.send(Ok(Served {
                        reply: answer.to_vec(),
                        replayed: true,
                    }));
                    return Ok(());
                }
                Seen::Replay(None) => Some(RemoteError::BadRequest(format!(
                    "this idempotency key was applied to {}/{} already; its reply was too large to keep, read the entity instead",
                    E::KIND,
                    st.id
                ))),
                Seen::Reused => Some(RemoteError::IdempotencyKeyReused {
                    kind: E::KIND.to_string(),
                    id: st.id.clone(),
                }),
            };
            if let Some(e) = refused {
                handled.with_label_values(&[E::KIND, "key_reused"]).inc();
                let _ = reply.send(Err(e));
                return Ok(());
            }
        }
        let command: E::Command = match decode_payload(&payload) {
            Ok(c) => c,
            Err(e) => {
                handled.with_label_values(&[E::KIND, "bad_request"]).inc();
                let _ = reply.send(Err(RemoteError::BadRequest(format!(
                    "{} command does not decode: {e}",
                    E::KIND
                ))));
                return Ok(());
            }
        };
        let existed = st.state.is_some();
        let done = {
            let journal = StoredJournal {
                store: &st.store,
                shard: st.shard,
                kind: E::KIND,
                id: &st.id,
                key: st.rest.key.as_ref(),
                len: st.rest.journal_len,
            };
            let ctx = EntityContext::new(&st.id, now).with_journal(st.rest.journal_len, &journal);
            E::handle(&ctx, &mut st.state, command)
        }
        .map_err(|e| {
            handled.with_label_values(&[E::KIND, "failed"]).inc();
            format!("{}/{} handler failed: {e}", E::KIND, st.id)
        })?;
        let answer = encode_payload(&done.reply);
        tracing::debug!(
            changed = done.changed,
            appended = done.append.len(),
            "command applied"
        );
        if done.changed || !done.append.is_empty() {
            if let Err(e) = persist(
                st,
                existed,
                &done.append,
                idempotency_key.as_ref(),
                &answer,
                now,
            )
            .await
            {
                if matches!(e, RemoteError::EntityTooLarge { .. }) {
                    handled.with_label_values(&[E::KIND, "too_large"]).inc();
                } else {
                    handled.with_label_values(&[E::KIND, "write_failed"]).inc();
                }
                // What the entity holds may now be ahead of what is confirmed: start again from
                // what this node stored.
                (st.state, st.rest) = load::<E>(&st.store, st.shard, &st.id)?;
                let _ = reply.send(Err(e));
                return Ok(());
            }
        }
        handled.with_label_values(&[E::KIND, "ok"]).inc();
        let _ = reply.send(Ok(Served {
            reply: answer,
            replayed: false,
        }));
        Ok(())
    }
}

/// Persists a change: the journal records first (so the envelope never counts a record that is
/// not stored), then the envelope; after a deletion, the old journal's records are removed (they
/// are unreadable already: the key they were sealed under is gone with the envelope).
async fn persist<E: Entity>(
    st: &mut EntityState<E>,
    existed: bool,
    append: &[Vec<u8>],
    key: Option<&IdempotencyKey>,
    answer: &[u8],
    now: u64,
) -> Result<(), RemoteError> {
    let too_large = |bytes: usize, limit: usize| RemoteError::EntityTooLarge {
        kind: E::KIND.to_string(),
        id: st.id.clone(),
        bytes: bytes as u64,
        limit: limit as u64,
    };
    let state = encoded_state(st).map_err(RemoteError::Storage)?;
    let size = state.as_ref().map_or(0, Vec::len);
    if size > st.limits.max_state_bytes {
        return Err(too_large(size, st.limits.max_state_bytes));
    }
    if let Some(big) = append.iter().find(|r| r.len() > MAX_RECORD_BYTES) {
        return Err(too_large(big.len(), MAX_RECORD_BYTES));
    }
    let erased_journal = if existed && st.state.is_none() {
        // Deleted: forget the replies kept for earlier keys (they may hold what was just
        // erased), the journal and the key everything was sealed under.
        st.rest.keys.clear();
        st.rest.key = None;
        std::mem::take(&mut st.rest.journal_len)
    } else {
        0
    };
    if let Some(key) = key {
        st.rest.keys.remember(key, answer, now, st.limits.keys);
    }
    st.rest.state = state;
    let data_key = st
        .rest
        .key
        .get_or_insert_with(crate::host::sealing::DataKey::generate)
        .clone();
    for record in append {
        let seq = st.rest.journal_len + 1;
        let sealed = entity_store::seal_record(&data_key, E::KIND, &st.id, seq, record);
        st.replicator
            .write(
                st.shard,
                E::KIND,
                &entity_store::journal_id(&st.id, seq),
                Some(&sealed),
            )
            .await?;
        st.rest.journal_len = seq;
    }
    let bytes =
        entity_store::envelope(E::KIND, &st.id, &mut st.rest).map_err(RemoteError::Storage)?;
    st.rest.state = None;
    st.replicator
        .write(st.shard, E::KIND, &st.id, bytes.as_deref())
        .await?;
    if erased_journal > 0 {
        erase_journal::<E>(st, erased_journal).await;
    }
    Ok(())
}

/// Removes records `1..=len` of the journal, many at a time.
async fn erase_journal<E: Entity>(st: &EntityState<E>, len: u64) {
    use futures_util::StreamExt;
    let failed = futures_util::stream::iter(1..=len)
        .map(|seq| {
            let jid = entity_store::journal_id(&st.id, seq);
            let replicator = st.replicator.clone();
            let shard = st.shard;
            async move { replicator.write(shard, E::KIND, &jid, None).await.is_err() }
        })
        .buffer_unordered(64)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failed > 0 {
        // Sealed under a destroyed key: unreadable; overwritten when the id is used again.
        tracing::warn!(kind = E::KIND, id = %st.id, failed, "some journal records of an erased entity were not removed");
    }
}

type SpawnFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ActorRef<EntityMsg>, String>> + Send + 'a>>;

/// Starts entities of one kind without the caller knowing the type.
pub trait EntityFactory: Send + Sync {
    /// Kind name.
    fn kind(&self) -> &'static str;
    /// Starts the entity `id` linked to `supervisor`.
    fn spawn(&self, args: EntityArgs, supervisor: ActorCell) -> SpawnFuture<'_>;
    /// Runs a read-only command against the stored state, without an actor (a follower read).
    fn read(&self, store: &Store, shard: ShardId, id: &str, payload: &[u8]) -> EntityResult;
}

struct Factory<E>(PhantomData<E>);

impl<E: Entity> EntityFactory for Factory<E> {
    fn kind(&self) -> &'static str {
        E::KIND
    }

    fn read(&self, store: &Store, shard: ShardId, id: &str, payload: &[u8]) -> EntityResult {
        let (mut state, rest) = load::<E>(store, shard, id).map_err(RemoteError::Storage)?;
        let command: E::Command = decode_payload(payload).map_err(|e| {
            RemoteError::BadRequest(format!("{} command does not decode: {e}", E::KIND))
        })?;
        let journal = StoredJournal {
            store,
            shard,
            kind: E::KIND,
            id,
            key: rest.key.as_ref(),
            len: rest.journal_len,
        };
        let ctx = EntityContext::new(id, now_ms()).with_journal(rest.journal_len, &journal);
        let done = E::handle(&ctx, &mut state, command).map_err(|e| RemoteError::EntityFailed {
            kind: E::KIND.to_string(),
            id: id.to_string(),
            reason: e.to_string(),
        })?;
        if done.changed || !done.append.is_empty() {
            return Err(RemoteError::BadRequest(format!(
                "{} command is not a read",
                E::KIND
            )));
        }
        Ok(encode_payload(&done.reply))
    }

    fn spawn(&self, args: EntityArgs, supervisor: ActorCell) -> SpawnFuture<'_> {
        Box::pin(async move {
            Actor::spawn_linked(None, EntityActor::<E>(PhantomData), args, supervisor)
                .await
                .map(|(actor, _)| actor)
                .map_err(|e| e.to_string())
        })
    }
}

/// The entity kinds a node hosts.
#[derive(Clone, Default)]
pub struct EntityKinds {
    kinds: HashMap<&'static str, Arc<dyn EntityFactory>>,
}

impl std::fmt::Debug for EntityKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl EntityKinds {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds kind `E`.
    pub fn register<E: Entity>(mut self) -> Self {
        self.kinds
            .insert(E::KIND, Arc::new(Factory::<E>(PhantomData)));
        self
    }

    /// The factory of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn EntityFactory>> {
        self.kinds.get(kind)
    }

    /// The kinds' names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1 stored a bare number; version 2 stores it with a unit.
    struct Meter;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        value: u32,
        unit: String,
    }

    impl Entity for Meter {
        const KIND: &'static str = "meter";
        const STATE_VERSION: u8 = 2;
        type State = Reading;
        type Command = ();
        type Reply = ();

        fn handle(
            _ctx: &EntityContext<'_>,
            _state: &mut Option<Reading>,
            _command: (),
        ) -> Result<Handled<()>, EntityError> {
            Ok(Handled::read(()))
        }

        fn upgrade(version: u8, body: &[u8]) -> Option<Reading> {
            match version {
                1 => Self::decode_body::<u32>(version, body)
                    .ok()
                    .map(|value| Reading {
                        value,
                        unit: "kWh".into(),
                    }),
                _ => None,
            }
        }
    }

    #[test]
    fn current_state_decodes_as_is() {
        let r = Reading {
            value: 7,
            unit: "Wh".into(),
        };
        let bytes = codec::encode(2, &r).unwrap();
        assert_eq!(decode_state::<Meter>(&bytes).unwrap(), r);
    }

    #[test]
    fn older_state_is_upgraded_and_unknown_versions_are_refused() {
        let v1 = codec::encode(1, &42u32).unwrap();
        assert_eq!(
            decode_state::<Meter>(&v1).unwrap(),
            Reading {
                value: 42,
                unit: "kWh".into()
            }
        );
        let v3 = codec::encode(3, &42u32).unwrap();
        assert_eq!(
            decode_state::<Meter>(&v3),
            Err(codec::CodecError::UnsupportedVersion {
                found: 3,
                expected: 2
            })
        );
    }
}
