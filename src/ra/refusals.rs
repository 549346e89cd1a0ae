//! Refusals in the audit log, coalesced. Every refusal is answered, but a client that repeats
//! one refusal (the same action, rule and detail: the same object refused for the same reason)
//! costs one audit write per window, not one per request: the first refusal of a window is
//! written as it happens, the repeats are counted and written as one event with the count when
//! the window ends (or when the daemon stops). A refusal that differs in anything but its
//! request id is written in full: coalescing hides nothing but repetition.
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
    /// Refusals counted since the first one (which was written).
    repeated: u64,
    first_repeat: Option<Timestamp>,
    last_repeat: Option<Timestamp>,
}

/// What makes two refusals the same: client (operator id or certificate hash), action, rule
/// and detail.
type Key = (String, String, String, String);

/// The open windows, by `Key`.
#[derive(Debug, Default)]
pub struct RefusalLog {
    windows: Mutex<HashMap<Key, Window>>,
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
            detail,
            ..
        } = &event
        else {
            return vec![event];
        };
        let key = (
            operator.clone().unwrap_or_default(),
            action.clone(),
            rule.clone(),
            detail.clone(),
        );
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
        let ended: Vec<Key> = windows
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
fn close(windows: impl IntoIterator<Item = (Key, Window)>) -> Vec<AuditEvent> {
    windows
        .into_iter()
        .filter_map(|((operator, action, rule, detail), window)| {
            Some(AuditEvent::RequestsRefusedRepeatedly {
                operator,
                action,
                rule,
                detail,
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
        refused_on(operator, rule, "no request x")
    }

    fn refused_on(operator: &str, rule: &str, detail: &str) -> AuditEvent {
        AuditEvent::RequestRefused {
            operator: Some(operator.into()),
            action: "read".into(),
            request: None,
            rule: rule.into(),
            detail: detail.into(),
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
        // Another rule, another client or another object opens its own window: a probe of
        // other objects is written in full, whatever refusal came first.
        assert_eq!(log.admit(refused("a", "other"), now).len(), 1);
        assert_eq!(log.admit(refused("b", "r"), now).len(), 1);
        assert_eq!(
            log.admit(refused_on("a", "r", "no request y"), now).len(),
            1
        );
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
