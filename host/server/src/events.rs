//! Live events for Server-Sent Events: each party sees only what concerns it.

use cleanroom_proto::PartyId;
use tokio::sync::broadcast;

/// Who may see an event.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Only these parties.
    Parties(Vec<PartyId>),
    /// Every authenticated party (e.g. a new module was uploaded).
    Everyone,
}

impl Audience {
    /// Whether `party` may see it.
    pub fn includes(&self, party: &PartyId) -> bool {
        match self {
            Self::Everyone => true,
            Self::Parties(ps) => ps.contains(party),
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who may see it.
    pub audience: Audience,
    /// Its JSON payload.
    pub payload: serde_json::Value,
}

/// A broadcast bus; slow subscribers miss events rather than stall the service.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }
}

impl EventBus {
    /// Publish (no receivers is fine).
    pub fn publish(&self, audience: Audience, payload: serde_json::Value) {
        let _ = self.tx.send(Event { audience, payload });
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
