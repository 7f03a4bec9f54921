//! The heartbeat responder: a remotable actor with its own mailbox, so a busy shard host never
//! delays a heartbeat and a heartbeat answered means the process is running, not just connected.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::config::Role;
use crate::wire::{self, HeartbeatRpc, Ping, Pong};

/// Start-up arguments.
#[derive(Debug)]
pub struct ResponderArgs {
    /// This process's name.
    pub name: String,
    /// This process's role.
    pub role: Role,
    /// When this process started (ms since the Unix epoch).
    pub incarnation: u64,
    /// Version of the shard map this process has applied.
    pub map_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// This process's load.
    pub load: crate::cluster::load::Load,
    /// The lease support this process gives.
    pub support: crate::cluster::support::Support,
}

/// The heartbeat responder actor.
pub struct HeartbeatResponder;

impl Actor for HeartbeatResponder {
    type Msg = HeartbeatRpc;
    type State = ResponderArgs;
    type Arguments = ResponderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ResponderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(wire::heartbeat_group(&args.name), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::heartbeat_group(&st.name), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let HeartbeatRpc::Ping(bytes, reply) = message;
        // A ping that does not decode gets no answer: to the sender that is silence, as it should be.
        if let Ok(ping) = wire::decode::<Ping>(&bytes) {
            let mine = st.map_version.load(std::sync::atomic::Ordering::Acquire);
            // The answer supports the sender's lease only if this node's map is not newer.
            if keelson_rules::lease::counts(mine, ping.map_version) {
                st.support.gave(&ping.from, ping.map_version);
            }
            let _ = reply.send(wire::encode(&Pong {
                from: st.name.clone(),
                role: st.role,
                seq: ping.seq,
                incarnation: st.incarnation,
                map_version: mine,
                load: st.load.report(),
                support: st.support.given_ms(),
            }));
        }
        Ok(())
    }
}
