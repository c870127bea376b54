//! TCP listeners inside a network namespace of the test, in a thread of the test process that
//! entered it, recording every connection and byte that reaches them.

use std::{
    collections::HashMap,
    fs,
    io::Read as _,
    net::{SocketAddr, TcpListener},
    os::fd::AsFd as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use crate::NetNs;

/// What one address's listener got.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Connections accepted.
    pub connections: usize,
    /// Bytes read from them.
    pub bytes: Vec<u8>,
}

/// TCP listeners inside a namespace of the test, recording every connection and byte; stopped
/// on drop.
pub struct NsListener {
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<HashMap<SocketAddr, Received>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NsListener {
    /// Listens on `addrs` inside `ns` (a thread of this process enters it).
    pub fn start(ns: &NetNs, addrs: &[SocketAddr]) -> Self {
        let netns = fs::File::open(format!("/run/netns/{}", ns.name))
            .unwrap_or_else(|e| panic!("netns {}: {e}", ns.name));
        let stop = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel();
        let addrs = addrs.to_vec();
        let thread = thread::spawn({
            let (stop, got) = (Arc::clone(&stop), Arc::clone(&got));
            move || {
                // Only this thread enters the namespace.
                let entered =
                    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
                let bound: Result<Vec<TcpListener>, String> =
                    entered.map_err(|e| format!("setns: {e}")).and_then(|()| {
                        addrs
                            .iter()
                            .map(|a| {
                                let l =
                                    TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}"))?;
                                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                                Ok(l)
                            })
                            .collect()
                    });
                let listeners = match bound {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                accept_loop(&listeners, &stop, &got);
            }
        });
        rx.recv()
            .expect("listener thread")
            .unwrap_or_else(|e| panic!("listening in {}: {e}", ns.name));
        Self {
            stop,
            got,
            thread: Some(thread),
        }
    }

    /// What `addr`'s listener got so far.
    pub fn received(&self, addr: SocketAddr) -> Received {
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .cloned()
            .unwrap_or_default()
    }
}

fn accept_loop(
    listeners: &[TcpListener],
    stop: &AtomicBool,
    got: &Mutex<HashMap<SocketAddr, Received>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for l in listeners {
            let Ok((s, _)) = l.accept() else {
                continue;
            };
            idle = false;
            let local = l.local_addr().expect("local address");
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut bytes = Vec::new();
            let _ = s.take(1 << 16).read_to_end(&mut bytes);
            let mut g = got.lock().unwrap_or_else(PoisonError::into_inner);
            let r = g.entry(local).or_default();
            r.connections += 1;
            r.bytes.extend_from_slice(&bytes);
        }
        if idle {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NsListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
