//! Acknowledgements seen as they happen: one watch of `NMC_ALERT_STATES` per notify node wakes
//! the escalation waits of the alerts it holds, instead of each wait polling the bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tracing::warn;

use crate::alert_state::AlertStates;

/// The waits of one node, by record key (`<force>.<alert>`).
#[derive(Default)]
pub struct AckWatch {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl AckWatch {
    /// The wake-up of `key`'s wait (registered until [`AckWatch::forget`]).
    pub fn register(&self, key: &str) -> Arc<Notify> {
        self.waiters
            .lock()
            .expect("ack waiters")
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Drops `key`'s wait.
    pub fn forget(&self, key: &str) {
        self.waiters.lock().expect("ack waiters").remove(key);
    }

    /// Follows the bucket forever, waking the wait of every record that changes (the waiter
    /// then reads the record: the watch only says when to look).
    pub async fn follow(self: Arc<Self>, states: AlertStates) {
        loop {
            match states.watch().await {
                Ok(mut changes) => {
                    while let Some(entry) = changes.next().await {
                        let Ok(entry) = entry else { break };
                        let waiter = self
                            .waiters
                            .lock()
                            .expect("ack waiters")
                            .get(&entry.key)
                            .cloned();
                        if let Some(w) = waiter {
                            w.notify_one();
                        }
                    }
                }
                Err(e) => warn!(error = format!("{e:#}"), "watching acknowledgements failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
