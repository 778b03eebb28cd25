//! The one way actors are asked for something: every request has a timeout, so an actor that
//! is stuck (a handler that blocks, a full mailbox) shows up as an error instead of a caller
//! that waits forever while health checks stay green.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError, Message};

/// Why an actor request did not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No answer within the timeout. The request may still be handled later.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The actor is gone (stopped, or its mailbox closed).
    #[error("actor unavailable: {0}")]
    Closed(#[source] MailboxError),
}

/// Sends `msg` to `addr` and waits at most `timeout` for the answer.
pub async fn ask<A, M>(addr: &Addr<A>, msg: M, timeout: Duration) -> Result<M::Result, AskError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match tokio::time::timeout(timeout, addr.send(msg)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(AskError::Closed(e)),
        Err(_) => Err(AskError::TimedOut(timeout)),
    }
}
