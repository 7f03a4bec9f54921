//! The generic actor that runs one live entity: it loads the entity's state from the [`Store`]
//! when it starts, runs commands one at a time, and persists (through the replicator) before
//! replying.
//!
//! ```text
//! Call ─▶ fault? ─▶ idempotency key seen? (replay) ─▶ decode ─▶ E::handle ─▶ persist
//!                                                           (journal records, then envelope)
//!                                                           ─▶ reply (or reload on failure)
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::config::EntityLimits;
use crate::host::entity::{
    decode_payload, encode_payload, now_ms, Call, CallResult, Entity, EntityContext, EntityError,
    EntityMsg, Handled, JournalRead, Served,
};
use crate::host::entity_store::{self, Persisted};
use crate::host::idempotency::Seen;
use crate::metrics;
use crate::replication::Replicator;
use crate::storage::Store;
use crate::wire::codec;
use crate::wire::{Fault, IdempotencyKey, RemoteError};
use keelson_rules::shard_map::ShardId;

/// Runs one entity of kind `E`.
pub struct EntityActor<E>(pub(super) PhantomData<E>);

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
pub(super) struct StoredJournal<'a> {
    pub(super) store: &'a Store,
    pub(super) shard: ShardId,
    pub(super) kind: &'static str,
    pub(super) id: &'a str,
    pub(super) key: Option<&'a crate::host::sealing::DataKey>,
    pub(super) len: u64,
}

impl JournalRead for StoredJournal<'_> {
    fn page(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        entity_store::read_journal(
            self.store, self.shard, self.kind, self.id, self.key, self.len, after, limit,
        )
    }
}

/// Loads entity `id` of kind `E`: its state (decoded) and what is persisted beside it.
pub(super) fn load<E: Entity>(
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

impl<E: Entity> EntityState<E> {
    /// The answer to a call whose idempotency key was seen before (counted), if any: the kept
    /// reply, or a refusal when the key came with another command or its reply was not kept.
    fn replay(&mut self, key: Option<&IdempotencyKey>, now: u64) -> Option<CallResult> {
        let handled = &metrics::get().messages_handled;
        let refused = match self.rest.keys.check(key?, now, self.limits.keys) {
            Seen::New => return None,
            Seen::Replay(Some(answer)) => {
                handled.with_label_values(&[E::KIND, "deduplicated"]).inc();
                return Some(Ok(Served {
                    reply: answer.to_vec(),
                    replayed: true,
                }));
            }
            Seen::Replay(None) => RemoteError::BadRequest(format!(
                "this idempotency key was applied to {}/{} already; its reply was too large to keep, read the entity instead",
                E::KIND,
                self.id
            )),
            Seen::Reused => RemoteError::IdempotencyKeyReused {
                kind: E::KIND.to_string(),
                id: self.id.clone(),
            },
        };
        handled.with_label_values(&[E::KIND, "key_reused"]).inc();
        Some(Err(refused))
    }

    /// Runs `command` against the state in memory, with the stored journal readable.
    fn run(&mut self, command: E::Command, now: u64) -> Result<Handled<E::Reply>, EntityError> {
        let journal = StoredJournal {
            store: &self.store,
            shard: self.shard,
            kind: E::KIND,
            id: &self.id,
            key: self.rest.key.as_ref(),
            len: self.rest.journal_len,
        };
        let ctx = EntityContext::new(&self.id, now).with_journal(self.rest.journal_len, &journal);
        E::handle(&ctx, &mut self.state, command)
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
        injected::<E>(fault, &st.id)?;
        let now = now_ms();
        if let Some(early) = st.replay(idempotency_key.as_ref(), now) {
            let _ = reply.send(early);
            return Ok(());
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
        let done = st.run(command, now).map_err(|e| {
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

/// Performs an injected fault: a panic, or an error (both restart the entity).
fn injected<E: Entity>(fault: Option<Fault>, id: &str) -> Result<(), ActorProcessingErr> {
    match fault {
        Some(Fault::Panic) => panic!("injected panic in {}/{id}", E::KIND),
        Some(Fault::Error) => Err(format!("injected error in {}/{id}", E::KIND).into()),
        None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::entity::{EntityContext, EntityError, Handled};
    use serde::{Deserialize, Serialize};

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
