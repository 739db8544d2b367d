//! The per-agent actor: one per agent on the agent's owner node.
//!
//! It serialises an agent's batches (so their order and the rule state follow `seq`), verifies
//! signatures against the pinned key, enforces the agent's rate limit (cluster-wide, because
//! only the owner runs it), evaluates threshold rules, and hands the accepted batch to the
//! node's [`Committer`] (group commit into Raft), answering only once the outcome is known.
//!
//! Nothing here is the only copy of anything: the stored seq, the pin and open alerts are
//! replicated state, read by the caller and passed in; the actor's own memory (rate limiter,
//! breach counts) is rebuilt from zero by a new owner after a hand-off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use monsys_proto::agent::{IngestBatch, SignatureError, verify_digest};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::limiter::Gcra;
use super::registry::InFlight;
use super::rules::{Decisions, RuleSpec, RuleState};

/// Ingest rate per agent (seed: 60 per minute per agent), with a burst of the same size so a
/// reconnecting agent can drain its buffer.
pub const INGEST_PER_MINUTE: u32 = 60;

/// Commits accepted batches (implemented by the binary's `ingest::PlaneCommitter`, over Raft).
pub trait Committer: Send + Sync + 'static {
    /// Why a commit failed (the hub's error type: unavailable, outcome unknown, …).
    type Error: Send + std::fmt::Debug + 'static;
    /// Commits one accepted batch and reports what the state machine did with it.
    fn commit(&self, accepted: Accepted) -> impl Future<Output = Result<CommitOutcome, Self::Error>> + Send;
}

/// A decoded ingest request, with the replicated facts the caller read for it.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// Tenant of the agent.
    pub tenant: String,
    /// The parsed batch.
    pub batch: IngestBatch,
    /// Series key of each sample of `batch.metrics`, in the same order (computed once).
    pub series: Vec<String>,
    /// SHA-256 of the exact body.
    pub body_sha256: [u8; 32],
    /// `X-Monsys-Signature`, when sent.
    pub signature: Option<String>,
    /// The agent's pinned key, from the replicated state.
    pub pinned: Option<[u8; 32]>,
    /// The agent's highest stored seq, from the replicated state (may lag).
    pub last_seq: u64,
    /// The tenant's enabled threshold rules.
    pub rules: Arc<[RuleSpec]>,
    /// Reception time, unix ms.
    pub received_at_ms: u64,
}

/// A batch the actor accepted, with its rule decisions.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The request.
    pub request: IngestRequest,
    /// The key the signature was verified with (`None`: unsigned, no pin).
    pub verified_with: Option<[u8; 32]>,
    /// Rules to fire or clear.
    pub decisions: Decisions,
}

/// What the state machine did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored.
    Stored {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// Already stored with the same body.
    Duplicate {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// Seq used with another body.
    SeqConflict {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// Old or never-stored seq below the highest one.
    Replay {
        /// Highest stored seq.
        last_seq: u64,
    },
    /// The agent no longer exists.
    UnknownAgent,
    /// The pin changed after verification.
    KeyChanged,
}

/// Why the actor refused a batch before committing it, or the commit failed.
#[derive(Debug)]
pub enum IngestRefusal<E> {
    /// A key is pinned and the batch has no signature.
    SignatureMissing,
    /// The signature does not verify.
    SignatureInvalid(SignatureError),
    /// Over the agent's rate limit; retry after this long.
    RateLimited(Duration),
    /// The actor has too many requests queued.
    Busy,
    /// The actor did not answer in time (the commit may still happen).
    Timeout,
    /// The actor is gone (node shutting down).
    Stopped,
    /// The commit failed.
    Commit(E),
}

/// Messages of an [`AgentActor`].
pub enum AgentMsg<E> {
    /// Verify, limit, evaluate and commit a batch (the request's place in the count of
    /// requests in flight is given back when the message is dropped).
    Ingest(Box<IngestRequest>, RpcReplyPort<Result<CommitOutcome, IngestRefusal<E>>>, InFlight),
}

/// The per-agent actor.
pub struct AgentActor<C: Committer> {
    committer: Arc<C>,
}

impl<C: Committer> AgentActor<C> {
    /// An actor committing through `committer`.
    pub fn new(committer: Arc<C>) -> Self {
        AgentActor { committer }
    }
}

/// Live state of one agent's actor.
pub struct AgentState {
    limiter: Gcra,
    rules: RuleState,
    /// Highest seq this actor saw stored (the replicated value may lag on this node).
    last_stored: u64,
    /// The pinned key, decompressed once (decompressing is a tenth of a verification).
    key: Option<VerifyingKey>,
}

impl<C: Committer> Actor for AgentActor<C> {
    type Msg = AgentMsg<C::Error>;
    type State = AgentState;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<AgentState, ActorProcessingErr> {
        Ok(AgentState {
            limiter: Gcra::new(INGEST_PER_MINUTE, Duration::from_secs(60), INGEST_PER_MINUTE),
            rules: RuleState::default(),
            last_stored: 0,
            key: None,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Ingest(req, reply, _place) => {
                if reply.is_closed() {
                    // the caller gave up before this batch's turn (timed out or disconnected;
                    // the agent retries the same seq): do no work for nobody
                    return Ok(());
                }
                let result = self.ingest(*req, state).await;
                let _ = reply.send(result); // the caller may have timed out
            }
        }
        Ok(())
    }
}

impl<C: Committer> AgentActor<C> {
    async fn ingest(
        &self,
        req: IngestRequest,
        state: &mut AgentState,
    ) -> Result<CommitOutcome, IngestRefusal<C::Error>> {
        state.limiter.check(req.received_at_ms).map_err(IngestRefusal::RateLimited)?;
        let verified_with = verify(&req, &mut state.key)?;
        let fresh = req.batch.seq > req.last_seq.max(state.last_stored);
        let decisions = if fresh {
            state.rules.evaluate(&req.rules, &req.batch.metrics)
        } else {
            Decisions::default() // a retry or replay never changes alert state
        };
        let accepted = Accepted { request: req, verified_with, decisions };
        let decisions = accepted.decisions.clone();
        let outcome = self.committer.commit(accepted).await.map_err(IngestRefusal::Commit)?;
        if let CommitOutcome::Stored { last_seq } = outcome {
            state.last_stored = last_seq;
            state.rules.commit(&decisions);
        }
        Ok(outcome)
    }
}

/// Verifies the batch's signature against the pin the request carries; `cached` keeps the
/// decompressed key between batches and is replaced when the pin changes.
fn verify<E>(
    req: &IngestRequest,
    cached: &mut Option<VerifyingKey>,
) -> Result<Option<[u8; 32]>, IngestRefusal<E>> {
    let Some(pinned) = req.pinned else {
        return Ok(None); // nothing to verify against; the state machine audits unsigned batches
    };
    let Some(sig) = &req.signature else {
        return Err(IngestRefusal::SignatureMissing);
    };
    let key = match cached {
        Some(k) if k.as_bytes() == &pinned => k,
        _ => cached.insert(
            VerifyingKey::from_bytes(&pinned)
                .map_err(|_| IngestRefusal::SignatureInvalid(SignatureError::Mismatch))?,
        ),
    };
    verify_digest(key, &req.body_sha256, sig).map_err(IngestRefusal::SignatureInvalid)?;
    Ok(Some(pinned))
}
