//! The generic actor that runs one live entity: it loads the entity's state from the [`Store`]
//! when it starts, runs commands one at a time, and persists (through the replicator) before
//! replying.
//!
//! ```text
//! Call ─▶ fault? ─▶ idempotency key seen? (replay) ─▶ decode ─▶ E::handle ─▶ persist
//!                                                           (journal records, then envelope)
//!                                                           ─▶ reply (or reload on failure)
//! ```
//!
//! A kind whose records replay into its state (`Entity::REPLAYS`) persists a change as its
//! records only, and the envelope with the whole state when `host::checkpoint` says so; loading
//! it replays the records after the envelope's. A checkpoint covers one number past the last
//! record (a write that failed may have left a record there on a follower) and then removes the
//! records it covers.

use std::marker::PhantomData;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::config::EntityLimits;
use crate::host::checkpoint::{Checkpoints, Write};
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
    /// The journal length the stored envelope's state covers (a replaying kind's records after
    /// it are replayed when loading).
    covered: u64,
    /// When a replaying kind writes its whole state.
    checkpoints: Checkpoints,
}

/// An entity as loaded.
pub(super) struct Loaded<E: Entity> {
    pub(super) state: Option<E::State>,
    pub(super) rest: Persisted,
    pub(super) covered: u64,
    pub(super) checkpoints: Checkpoints,
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

/// Loads entity `id` of kind `E`: its state (decoded; for a replaying kind, with the records
/// after its envelope's replayed) and what is persisted beside it.
pub(super) fn load<E: Entity>(
    store: &Store,
    shard: ShardId,
    id: &str,
) -> Result<Loaded<E>, String> {
    let mut p = entity_store::load(store, shard, E::KIND, id)?;
    let state_bytes = p.state.as_ref().map_or(0, Vec::len) as u64;
    let mut state = match p.state.take() {
        Some(b) => Some(
            decode_state::<E>(&b)
                .map_err(|e| format!("stored state of {}/{id} does not decode: {e}", E::KIND))?,
        ),
        None => None,
    };
    let covered = p.journal_len;
    let (mut records, mut bytes) = (0u64, 0u64);
    if E::REPLAYS {
        for (seq, record) in
            entity_store::read_tail(store, shard, E::KIND, id, p.key.as_ref(), covered)?
        {
            E::replay(id, &mut state, &record).map_err(|e| {
                format!(
                    "journal record {seq} of {}/{id} does not replay: {e}",
                    E::KIND
                )
            })?;
            p.journal_len = seq;
            records += 1;
            bytes += record.len() as u64;
        }
        if records > 0 {
            tracing::debug!(kind = E::KIND, id, records, bytes, "journal replayed");
        }
    }
    Ok(Loaded {
        state,
        rest: p,
        covered,
        checkpoints: Checkpoints::loaded(state_bytes, records, bytes),
    })
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
    /// Starts again from what this node stored, after a write that may not have reached every
    /// follower: the next change writes the whole state.
    fn reload(&mut self) -> Result<(), String> {
        let loaded = load::<E>(&self.store, self.shard, &self.id)?;
        (self.state, self.rest, self.covered) = (loaded.state, loaded.rest, loaded.covered);
        self.checkpoints = loaded.checkpoints;
        self.checkpoints.failed();
        Ok(())
    }

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
        let loaded = load::<E>(&args.store, args.shard, &args.id)?;
        Ok(EntityState {
            id: args.id,
            shard: args.shard,
            store: args.store,
            replicator: args.replicator,
            limits: args.limits,
            state: loaded.state,
            rest: loaded.rest,
            covered: loaded.covered,
            checkpoints: loaded.checkpoints,
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
                st.reload()?;
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

/// Persists a change. A replaying kind writes only its records unless a checkpoint is due;
/// otherwise the journal records go first (so the envelope never counts a record that is not
/// stored), then the envelope; after a deletion, the old journal's records are removed (they
/// are unreadable already: the key they were sealed under is gone with the envelope).
async fn persist<E: Entity>(
    st: &mut EntityState<E>,
    existed: bool,
    append: &[Vec<u8>],
    key: Option<&IdempotencyKey>,
    answer: &[u8],
    now: u64,
) -> Result<(), RemoteError> {
    if !E::REPLAYS {
        write_envelope(st, existed, append, key, answer, now).await?;
        return Ok(());
    }
    let bytes: u64 = append.iter().map(|r| r.len() as u64).sum();
    let fits = append.iter().all(|r| r.len() <= st.limits.max_state_bytes);
    // A checkpoint is forced by a key to remember, a record too large to write, a deletion, and
    // a first write (the envelope holds the key the records are sealed under).
    let forced = key.is_some() || !fits || st.state.is_none() || st.rest.key.is_none();
    let count = append.len() as u64;
    if st.checkpoints.decide(count, bytes, forced) == Write::Records {
        append_records(st, append).await?;
        st.checkpoints.wrote(Write::Records, count, bytes, 0);
        return Ok(());
    }
    // The state covers this change's records (not written) and one number past the last
    // record, where a write that failed may have left one on a follower.
    let covered = st.covered;
    if st.state.is_some() {
        st.rest.journal_len += 1;
    }
    let state_bytes = write_envelope(st, existed, &[], key, answer, now).await?;
    st.checkpoints
        .wrote(Write::Checkpoint, count, bytes, state_bytes as u64);
    metrics::get()
        .entity_checkpoints
        .with_label_values(&[E::KIND])
        .inc();
    if st.state.is_some() {
        remove_records::<E>(st, covered + 1, st.rest.journal_len).await;
    }
    st.covered = st.rest.journal_len;
    Ok(())
}

/// Writes `append` to the journal, in order, each one confirmed before the next.
async fn append_records<E: Entity>(
    st: &mut EntityState<E>,
    append: &[Vec<u8>],
) -> Result<(), RemoteError> {
    if append.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// Writes the records, then the envelope with the state; the state's encoded size.
async fn write_envelope<E: Entity>(
    st: &mut EntityState<E>,
    existed: bool,
    append: &[Vec<u8>],
    key: Option<&IdempotencyKey>,
    answer: &[u8],
    now: u64,
) -> Result<usize, RemoteError> {
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
    append_records(st, append).await?;
    st.rest.state = state;
    let written = entity_store::envelope(E::KIND, &st.id, &mut st.rest);
    st.rest.state = None;
    let bytes = written.map_err(RemoteError::Storage)?;
    st.replicator
        .write(st.shard, E::KIND, &st.id, bytes.as_deref())
        .await?;
    if erased_journal > 0 {
        let from = if E::REPLAYS { st.covered + 1 } else { 1 };
        remove_records::<E>(st, from, erased_journal).await;
    }
    Ok(size)
}

/// Removes records `from..=to` of the journal, many at a time.
async fn remove_records<E: Entity>(st: &EntityState<E>, from: u64, to: u64) {
    use futures_util::StreamExt;
    let failed = futures_util::stream::iter(from..=to)
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
        // Sealed under a destroyed key, or covered by a checkpoint: never read again;
        // overwritten when their numbers are used again.
        tracing::warn!(kind = E::KIND, id = %st.id, failed, "some journal records no longer needed were not removed");
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

    /// A replaying kind: the state is a sum, each record a number added to it.
    struct Tally;

    impl Entity for Tally {
        const KIND: &'static str = "tally";
        const STATE_VERSION: u8 = 1;
        const REPLAYS: bool = true;
        type State = u64;
        type Command = ();
        type Reply = ();

        fn handle(
            _ctx: &EntityContext<'_>,
            _state: &mut Option<u64>,
            _command: (),
        ) -> Result<Handled<()>, EntityError> {
            Ok(Handled::read(()))
        }

        fn replay(_id: &str, state: &mut Option<u64>, record: &[u8]) -> Result<(), EntityError> {
            let add: u64 = decode_payload(record).map_err(|e| EntityError(e.to_string()))?;
            *state.get_or_insert(0) += add;
            Ok(())
        }
    }

    #[test]
    fn a_replaying_kind_loads_its_checkpoint_and_the_records_after_it_up_to_the_first_gap() {
        let dir = std::env::temp_dir().join(format!("keelson-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(
            &dir,
            4,
            crate::config::FlushPolicy::Periodic(std::time::Duration::from_secs(60)),
            1 << 20,
        )
        .unwrap();
        let shard = ShardId(1);
        let key = crate::host::sealing::DataKey::generate();
        let mut lsn = 0;
        let mut put = |id: &str, value: &[u8]| {
            lsn += 1;
            store.apply(shard, "tally", id, lsn, Some(value)).unwrap();
        };
        // The checkpoint: 100, covering records 1..=2.
        let mut p = Persisted {
            state: Some(codec::encode(1, &100u64).unwrap()),
            journal_len: 2,
            key: Some(key.clone()),
            ..Persisted::default()
        };
        put(
            "t",
            &entity_store::envelope("tally", "t", &mut p)
                .unwrap()
                .unwrap(),
        );
        let record = |seq: u64, add: u64, key: &crate::host::sealing::DataKey| {
            entity_store::seal_record(key, "tally", "t", seq, &encode_payload(&add))
        };
        // A covered record (not replayed), two after the checkpoint, then a gap and a record
        // past it (not replayed either).
        put(&entity_store::journal_id("t", 2), &record(2, 1_000, &key));
        put(&entity_store::journal_id("t", 3), &record(3, 7, &key));
        put(&entity_store::journal_id("t", 4), &record(4, 5, &key));
        put(&entity_store::journal_id("t", 6), &record(6, 1_000, &key));
        let loaded = load::<Tally>(&store, shard, "t").unwrap();
        assert_eq!(loaded.state, Some(112));
        assert_eq!((loaded.covered, loaded.rest.journal_len), (2, 4));
        // A record sealed under another key (an erased entity's) ends the replay.
        let other = crate::host::sealing::DataKey::generate();
        put(&entity_store::journal_id("t", 5), &record(5, 1_000, &other));
        let loaded = load::<Tally>(&store, shard, "t").unwrap();
        assert_eq!((loaded.state, loaded.rest.journal_len), (Some(112), 4));
        // A record that does not decode fails the load, saying which.
        put(
            &entity_store::journal_id("t", 5),
            &entity_store::seal_record(&key, "tally", "t", 5, b"junk"),
        );
        let err = load::<Tally>(&store, shard, "t").err().unwrap();
        assert!(err.contains("journal record 5 of tally/t"), "{err}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
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
