//! A TCP proxy in front of the git server that refuses connections on cue,
//! so a test can fail one particular git operation of a worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
pub enum Action {
    Pass,
    /// Close the connection at once, as a server that went away would.
    Refuse,
}

pub struct Proxy {
    pub port: u16,
    script: Arc<Mutex<VecDeque<Action>>>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script: Arc<Mutex<VecDeque<Action>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (script_, connections_) = (script.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                connections_.fetch_add(1, Ordering::SeqCst);
                let action = script_.lock().unwrap().pop_front().unwrap_or(Action::Pass);
                if let Action::Refuse = action {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, script, connections }
    }

    /// The next connections meet these actions, in order; then all pass.
    pub fn script(&self, actions: impl IntoIterator<Item = Action>) {
        self.script.lock().unwrap().extend(actions);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
