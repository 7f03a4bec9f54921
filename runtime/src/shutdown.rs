//! One shutdown signal for a whole process, passed down to every server and loop.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for the shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first listener.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Signals every listener.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once the shutdown has been signalled (or the trigger dropped).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// True once signalled.
    pub fn is_signalled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
