//! The entity kinds a node hosts, type-erased: the shard supervisor starts any kind, and a
//! follower serves a read of any kind, without knowing its type.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef};

use crate::host::entity::{
    decode_payload, encode_payload, now_ms, Entity, EntityContext, EntityMsg, EntityResult,
};
use crate::host::entity_actor::{load, EntityActor, EntityArgs, StoredJournal};
use crate::storage::Store;
use crate::wire::RemoteError;
use keelson_rules::shard_map::ShardId;

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

/// Tries at reading a replaying kind while its primary keeps checkpointing it.
const SETTLE_TRIES: usize = 5;

/// Loads `id` on a node that takes replicated writes while it reads. A replaying kind's
/// checkpoint landing between reading the envelope and its records would show an older state
/// (the records after the old envelope removed): then it is read again.
fn load_settled<E: Entity>(
    store: &Store,
    shard: ShardId,
    id: &str,
) -> Result<super::entity_actor::Loaded<E>, RemoteError> {
    let stamp = || {
        store
            .lsn(shard, E::KIND, id)
            .map_err(|e| RemoteError::Storage(e.to_string()))
    };
    for _ in 0..SETTLE_TRIES {
        let before = if E::REPLAYS { stamp()? } else { None };
        let loaded = load::<E>(store, shard, id).map_err(RemoteError::Storage)?;
        if !E::REPLAYS || stamp()? == before {
            return Ok(loaded);
        }
    }
    Err(RemoteError::Storage(format!(
        "{}/{id} kept changing while read ({SETTLE_TRIES} tries)",
        E::KIND
    )))
}

impl<E: Entity> EntityFactory for Factory<E> {
    fn kind(&self) -> &'static str {
        E::KIND
    }

    fn read(&self, store: &Store, shard: ShardId, id: &str, payload: &[u8]) -> EntityResult {
        let loaded = load_settled::<E>(store, shard, id)?;
        let (mut state, rest) = (loaded.state, loaded.rest);
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
