//! The proxy actor: the local stand-in for an actor on another node.
//!
//! A proxy's `ActorId` is remote, so ractor hands it every message already serialized;
//! the proxy forwards casts and calls to its node session. The session stops the proxy
//! (with the remote exit reason, or the node-down reason) or fails it (with the remote
//! error text) when the remote actor ends, so supervisors and monitors linked to the proxy
//! see the remote actor's life as if it were local.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::message::SerializedMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::session::Session;
use crate::wire::Wire;

/// Cast variant name the session uses to make a proxy fail with the remote error text.
pub(crate) const FAIL_VARIANT: &str = "\u{0}plexus:fail";

/// Messages of a proxy. Never sent directly: a proxy only receives serialized messages.
#[derive(Debug)]
pub(crate) enum ProxyMsg {}

impl ractor::Message for ProxyMsg {}

/// Startup arguments of a proxy.
pub(crate) struct ProxyArgs {
    pub session: Arc<Session>,
    pub pid: u64,
    pub gone: Arc<AtomicBool>,
}

pub(crate) struct RemoteProxy;

impl Actor for RemoteProxy {
    type Msg = ProxyMsg;
    type State = ProxyArgs;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ProxyArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut ProxyArgs,
    ) -> Result<(), ActorProcessingErr> {
        st.session.forget_proxy(st.pid, &st.gone);
        if !st.gone.swap(true, Ordering::SeqCst) {
            // Stopped here (by its user or its supervisor): stop the remote actor too.
            st.session.send_or_drop(&Wire::Stop {
                pid: st.pid,
                reason: None,
            });
        }
        Ok(())
    }

    async fn handle_serialized(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: SerializedMessage,
        st: &mut ProxyArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SerializedMessage::Cast { variant, args, .. } => {
                if variant == FAIL_VARIANT {
                    return Err(From::from(String::from_utf8_lossy(&args).into_owned()));
                }
                st.session.ready().await;
                st.session.send_or_drop(&Wire::Cast {
                    to: st.pid,
                    body: args,
                });
            }
            SerializedMessage::Call { args, reply, .. } => {
                st.session.ready().await;
                st.session.call(st.pid, args, reply);
            }
            SerializedMessage::CallReply(..) => {}
        }
        Ok(())
    }
}
