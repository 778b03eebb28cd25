//! A TCP proxy a test can cut and restore, to take a server away from the app without stopping
//! it for the other tests (the approach of crates.io's `unhealthy_database` test).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// A proxy from a random local port to an upstream address.
pub struct TcpProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts proxying to the host and port of `upstream_url`.
    pub async fn start(upstream_url: &str) -> Self {
        let url = url::Url::parse(upstream_url).expect("upstream url");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("upstream host"),
            url.port_or_known_default().expect("upstream port")
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept_loop = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    connections.lock().await.spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Self {
            port,
            cut,
            connections,
            accept_loop,
        }
    }

    /// `url` with its host and port pointing at the proxy.
    pub fn rewrite_url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("url");
        url.set_host(Some("127.0.0.1")).expect("set host");
        url.set_port(Some(self.port)).expect("set port");
        url.to_string()
    }

    /// Breaks every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.connections.lock().await.abort_all();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
