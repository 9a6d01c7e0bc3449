//! The supervisor of the shards.
//!
//! A shard stops only on a bug (a broken invariant asserts) or at shutdown. When one fails,
//! the supervisor marks the ledger failed and closes the log: requests in flight see their
//! reply channels close and answer "unavailable", new requests are refused, and nothing that
//! was not durable was ever acknowledged. The operator restarts the process, which recovers
//! the exact acknowledged state from the log. Restarting a shard in place is deliberately not
//! attempted: its in-memory holds would be lost with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use snapshots::CommitHandle;

pub(crate) struct Supervisor;

pub(crate) struct SupervisorArguments {
    pub failed: Arc<AtomicBool>,
    pub commit: CommitHandle,
}

/// The supervisor takes no messages of its own; it only hears about its children.
pub(crate) enum SupervisorMessage {}

impl Actor for Supervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorArguments;
    type Arguments = SupervisorArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMessage>,
        arguments: SupervisorArguments,
    ) -> Result<SupervisorArguments, ActorProcessingErr> {
        Ok(arguments)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMessage>,
        event: SupervisionEvent,
        state: &mut SupervisorArguments,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = ?cell.get_name(), %error, "a shard failed; the ledger stops taking writes");
                state.failed.store(true, Ordering::SeqCst);
                state.commit.close();
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) if !state.failed.swap(true, Ordering::SeqCst) => {
                tracing::error!(actor = ?cell.get_name(), ?reason, "a shard stopped unexpectedly; the ledger stops taking writes");
                state.commit.close();
            }
            _ => {}
        }
        Ok(())
    }
}
