//! A TCP proxy the fault run puts between one worker and Redis or Postgres, so it can cut that
//! worker off from one server while everything else (its Telegram connections, the other
//! workers) carries on: a network partition of one link.
//!
//! While cut, nothing passes either way: connections open at the cut stay open and silent, new
//! ones are accepted and stay silent too (packets dropped, as in a real partition; a client
//! sees no error, only no answer). When the cut heals every connection that saw it is closed,
//! as the peers' TCP stacks would have given up on them by then; clients reconnect.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One proxy: a local port forwarding to `upstream`.
pub struct Proxy {
    pub port: u16,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(watch::channel(false).0);
        let signal = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, signal.subscribe()));
            }
        });
        Ok(Proxy { port, cut, task })
    }

    /// Cuts (true) or heals (false) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        // Accepted during the cut: silent until it heals, then closed.
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The server is down: the client sees its connection closed.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_cut = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cut.wait_for(|c| *c) => true,
    };
    if was_cut {
        // Cut: nothing is forwarded any more; both ends stay open and silent until it heals.
        let _ = cut.wait_for(|c| !*c).await;
    }
    drop((client, server));
}
