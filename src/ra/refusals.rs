//! Refusals in the audit log, coalesced. Every refusal is answered, but a client that repeats
//! one kind of refused request (the same rule) costs one audit write per window, not one per
//! request: the first refusal of a window is written as it happens, the others are counted and
//! written as one event with the count when the window ends (or when the daemon stops).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audit::AuditEvent;
use crate::x509::Timestamp;

/// How long repeats of one refusal are counted before they are written.
pub const WINDOW: Duration = Duration::from_secs(60);

/// At most this many clients' windows are kept; beyond, every window is closed at once.
const MAX_WINDOWS: usize = 10_000;

#[derive(Debug)]
struct Window {
    opened: Instant,
    action: String,
    /// Refusals counted since the first one (which was written).
    repeated: u64,
    first_repeat: Option<Timestamp>,
    last_repeat: Option<Timestamp>,
}

/// The open windows, by client (operator id or certificate hash) and rule.
#[derive(Debug, Default)]
pub struct RefusalLog {
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl RefusalLog {
    /// What to write for `event` (a [`AuditEvent::RequestRefused`]) now: nothing when it
    /// repeats a refusal of an open window (it is counted), or the event itself, preceded by
    /// the count of the window it closes, if any.
    pub fn admit(&self, event: AuditEvent, now: Timestamp) -> Vec<AuditEvent> {
        let AuditEvent::RequestRefused {
            operator,
            action,
            rule,
            ..
        } = &event
        else {
            return vec![event];
        };
        let key = (operator.clone().unwrap_or_default(), rule.clone());
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        if windows.len() >= MAX_WINDOWS && !windows.contains_key(&key) {
            out.extend(close(windows.drain()));
        }
        match windows.get_mut(&key) {
            Some(window) if window.opened.elapsed() < WINDOW => {
                window.repeated += 1;
                window.first_repeat.get_or_insert(now);
                window.last_repeat = Some(now);
                return out;
            }
            Some(_) => {
                if let Some(window) = windows.remove(&key) {
                    out.extend(close([(key.clone(), window)]));
                }
            }
            None => {}
        }
        windows.insert(
            key,
            Window {
                opened: Instant::now(),
                action: action.clone(),
                repeated: 0,
                first_repeat: None,
                last_repeat: None,
            },
        );
        out.push(event);
        out
    }

    /// The counts of the windows that ended (all of them when `all`), which are closed.
    pub fn due(&self, all: bool) -> Vec<AuditEvent> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let ended: Vec<(String, String)> = windows
            .iter()
            .filter(|(_, window)| all || window.opened.elapsed() >= WINDOW)
            .map(|(key, _)| key.clone())
            .collect();
        let closed = ended
            .into_iter()
            .filter_map(|key| windows.remove(&key).map(|window| (key, window)));
        close(closed)
    }
}

/// The events of closed windows that counted repeats.
fn close(windows: impl IntoIterator<Item = ((String, String), Window)>) -> Vec<AuditEvent> {
    windows
        .into_iter()
        .filter_map(|((operator, rule), window)| {
            Some(AuditEvent::RequestsRefusedRepeatedly {
                operator,
                action: window.action,
                rule,
                count: window.repeated,
                first: window.first_repeat?,
                last: window.last_repeat?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(operator: &str, rule: &str) -> AuditEvent {
        AuditEvent::RequestRefused {
            operator: Some(operator.into()),
            action: "read".into(),
            request: None,
            rule: rule.into(),
            detail: "x".into(),
        }
    }

    #[test]
    fn repeats_within_a_window_are_counted_and_written_once() {
        let log = RefusalLog::default();
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        assert_eq!(log.admit(refused("a", "r"), now).len(), 1);
        for _ in 0..49 {
            assert!(log.admit(refused("a", "r"), now).is_empty());
        }
        // Another rule or another client opens its own window.
        assert_eq!(log.admit(refused("a", "other"), now).len(), 1);
        assert_eq!(log.admit(refused("b", "r"), now).len(), 1);
        assert!(log.due(false).is_empty(), "no window has ended yet");
        let closed = log.due(true);
        assert_eq!(closed.len(), 1, "only the window with repeats: {closed:?}");
        assert!(matches!(
            &closed[0],
            AuditEvent::RequestsRefusedRepeatedly { operator, count: 49, .. } if operator == "a"
        ));
        assert!(log.due(true).is_empty());
    }
}
