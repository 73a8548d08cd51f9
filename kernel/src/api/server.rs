//! The HTTP API as a supervised actor.
//!
//! [`ApiServer`] owns one actix-web server: it starts it in `pre_start` on the socket the
//! master process bound once (so a restart never loses the port to another program) and
//! fails when that server ends without being asked to, or when it is made to panic. Its
//! supervisor, [`ApiSupervisor`], restarts it with backoff under the master process's
//! [`RestartPolicy`](crate::supervision::RestartPolicy); past the intensity limit it
//! gives up and `plexus` exits non-zero, as for the master. The API keeps no state of its
//! own (it asks the master and the jobs framework on each request), so a restarted API
//! serves exactly what the one before did.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, info};

use plexus_actors::Node;

use super::{serve, ApiContext};
use crate::supervision::{ChildSpec, FaultSwitch, Restarter, RestarterMsg};

/// Messages of the API actor (local only).
#[derive(Debug)]
pub enum ApiMsg {
    /// The address it serves on.
    Address(RpcReplyPort<SocketAddr>),
    /// Its server ended (internal): `why`, if it ended with an error.
    Ended(Option<String>),
}

impl ractor::Message for ApiMsg {}

/// The API's supervisor.
pub type ApiSupervisor = Restarter<ApiSpec>;

/// Messages of the API's supervisor.
pub type ApiSupervisorMsg = RestarterMsg<ApiMsg>;

/// What an [`ApiSupervisor`] starts.
pub struct ApiSpec {
    node: Node,
    listener: Arc<TcpListener>,
    ctx: ApiContext,
    fault: FaultSwitch,
}

impl ApiSpec {
    /// APIs serving `ctx` on `listener`; `fault` makes one panic (tests).
    pub fn new(node: Node, listener: TcpListener, ctx: ApiContext, fault: FaultSwitch) -> Self {
        ApiSpec {
            node,
            listener: Arc::new(listener),
            ctx,
            fault,
        }
    }
}

impl ChildSpec for ApiSpec {
    type Child = ApiServer;

    fn make(&self, _generation: u32) -> (ApiServer, ()) {
        (
            ApiServer {
                listener: self.listener.clone(),
                ctx: self.ctx.clone(),
                fault: self.fault.clone(),
            },
            (),
        )
    }

    fn what(&self) -> &'static str {
        "the HTTP API"
    }

    fn node(&self) -> &Node {
        &self.node
    }
}

/// The API actor.
pub struct ApiServer {
    listener: Arc<TcpListener>,
    ctx: ApiContext,
    fault: FaultSwitch,
}

/// The API actor's state.
pub struct ApiState {
    server: Running,
    addr: SocketAddr,
}

/// A running server, told to stop when dropped: a failed actor's state is dropped
/// without `post_stop`, and its server must not serve on beside the next one's.
struct Running(ServerHandle);

impl Drop for Running {
    fn drop(&mut self) {
        // The stop command is sent at once; finishing it needs no waiting here.
        std::mem::drop(self.0.stop(true));
    }
}

impl Actor for ApiServer {
    type Msg = ApiMsg;
    type State = ApiState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<ApiMsg>, _: ()) -> Result<ApiState, ActorProcessingErr> {
        let listener = self.listener.try_clone()?;
        let addr = listener.local_addr()?;
        let server = serve(listener, self.ctx.clone())?;
        let handle = server.handle();
        tokio::spawn(async move {
            let why = server.await.err().map(|e| e.to_string());
            if let Err(e) = me.cast(ApiMsg::Ended(why)) {
                debug!("API actor gone before its server ended: {e}");
            }
        });
        info!(api = %addr, "HTTP API serving");
        Ok(ApiState {
            server: Running(handle),
            addr,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<ApiMsg>,
        msg: ApiMsg,
        st: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        self.fault.check("the HTTP API");
        match msg {
            ApiMsg::Address(reply) => {
                if reply.send(st.addr).is_err() {
                    debug!("asker left before its answer");
                }
                Ok(())
            }
            ApiMsg::Ended(why) => Err(From::from(format!(
                "its HTTP server ended: {}",
                why.as_deref().unwrap_or("stopped")
            ))),
        }
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ApiMsg>,
        st: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        // Requests in flight finish; the socket stays bound for the next server.
        st.server.0.stop(true).await;
        Ok(())
    }
}
