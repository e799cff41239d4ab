//! Refused requests are audited compactly: the first of a kind each minute gets an entry that
//! says how many of its kind were only counted since.

use std::collections::HashMap;
use std::sync::Mutex;

/// First-of-a-kind-per-minute bookkeeping for refusal audit entries.
#[derive(Debug, Default)]
pub struct RefusalMeter {
    kinds: Mutex<HashMap<String, (u64, u64)>>,
}

impl RefusalMeter {
    /// `Some(folded)` if this refusal gets an audit entry (`folded`: how many of its kind were
    /// counted without one since the last), `None` if it is only counted.
    pub(crate) fn admit(&self, kind: &str, now: u64) -> Option<u64> {
        let minute = now / 60;
        let mut kinds = self.kinds.lock().expect("refusal meter lock");
        // Bound the map itself: kinds are a fixed set, but be safe against surprises.
        if kinds.len() > 64 {
            kinds.clear();
        }
        let slot = kinds.entry(kind.to_string()).or_insert((u64::MAX, 0));
        if slot.0 == minute {
            slot.1 += 1;
            None
        } else {
            let folded = slot.1;
            *slot = (minute, 0);
            Some(folded)
        }
    }
}
