//! Invocations running, per function and per tenant: the API's test invocations and the
//! node's endpoints count against the same limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a concurrency limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Invocations of one function (its `concurrency` limit).
    Function(i64),
    /// Invocations of all of one tenant's functions.
    Tenant(i64),
}

/// Invocations running, per function and per tenant. Counting rather than holding a semaphore
/// per key lets a changed limit apply at once.
#[derive(Debug, Default)]
pub struct InFlight {
    running: Mutex<HashMap<Slot, u64>>,
    /// Woken whenever a place frees up, for callers waiting a bounded time.
    freed: tokio::sync::Notify,
}

/// One running invocation's place; dropping it frees the place.
#[derive(Debug)]
pub struct InFlightGuard {
    in_flight: Arc<InFlight>,
    slot: Slot,
}

impl InFlight {
    /// A place in `slot`, or `None` when `limit` are running.
    pub fn try_acquire(self: &Arc<Self>, slot: Slot, limit: u64) -> Option<InFlightGuard> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(slot).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(InFlightGuard {
            in_flight: Arc::clone(self),
            slot,
        })
    }

    /// A place in every slot, or none: checked and taken under one lock, so that a partial
    /// take never has to be given back (which would wake the waiters for nothing).
    fn try_acquire_all(
        self: &Arc<Self>,
        slots: &[(Slot, u64)],
    ) -> Result<Vec<InFlightGuard>, Slot> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(full, _)) = slots
            .iter()
            .find(|(slot, limit)| running.get(slot).copied().unwrap_or(0) >= *limit)
        {
            return Err(full);
        }
        Ok(slots
            .iter()
            .map(|&(slot, _)| {
                *running.entry(slot).or_insert(0) += 1;
                InFlightGuard {
                    in_flight: Arc::clone(self),
                    slot,
                }
            })
            .collect())
    }

    /// A place in every slot (all or none), waiting up to `wait` for places to free up;
    /// `Err` names the first slot still full. Never an unbounded queue.
    pub async fn acquire(
        self: &Arc<Self>,
        slots: &[(Slot, u64)],
        wait: std::time::Duration,
    ) -> Result<Vec<InFlightGuard>, Slot> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before trying, so that a place freed meanwhile is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let full = match self.try_acquire_all(slots) {
                Ok(guards) => return Ok(guards),
                Err(full) => full,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(full);
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut running = self
            .in_flight
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.slot) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.slot);
            }
        }
        drop(running);
        self.in_flight.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How many are counted as running in `slot`.
    fn running(in_flight: &InFlight, slot: Slot) -> u64 {
        let running = in_flight.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(&slot).copied().unwrap_or(0)
    }

    #[test]
    fn a_place_is_counted_until_its_guard_goes() {
        let in_flight = Arc::new(InFlight::default());
        let f = Slot::Function(1);
        let first = in_flight.try_acquire(f, 2).expect("a place");
        let second = in_flight.try_acquire(f, 2).expect("a second place");
        assert!(in_flight.try_acquire(f, 2).is_none(), "the limit is 2");
        assert_eq!(running(&in_flight, f), 2);
        drop(first);
        assert_eq!(running(&in_flight, f), 1);
        // A limit changed while invocations run applies to the next one at once.
        assert!(in_flight.try_acquire(f, 1).is_none(), "lowered to 1: full");
        let third = in_flight.try_acquire(f, 3).expect("raised to 3");
        drop((second, third));
        assert_eq!(running(&in_flight, f), 0);
        assert!(
            in_flight
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "an idle slot leaves no entry behind"
        );
    }

    #[tokio::test]
    async fn several_places_are_taken_all_or_none() {
        let in_flight = Arc::new(InFlight::default());
        let (f, t) = (Slot::Function(1), Slot::Tenant(9));
        let tenant_full = in_flight.try_acquire(t, 1).expect("the tenant's one place");
        let refused = in_flight
            .acquire(&[(f, 5), (t, 1)], Duration::from_millis(20))
            .await
            .expect_err("the tenant is full");
        assert_eq!(refused, t, "names the slot that is full");
        assert_eq!(running(&in_flight, f), 0, "nothing half taken");
        drop(tenant_full);
        let both = in_flight
            .acquire(&[(f, 5), (t, 1)], Duration::from_millis(20))
            .await
            .expect("both places");
        assert_eq!(
            (both.len(), running(&in_flight, f), running(&in_flight, t)),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_zero_wait_answers_at_once() {
        let in_flight = Arc::new(InFlight::default());
        let f = Slot::Function(1);
        let _held = in_flight.try_acquire(f, 1).expect("a place");
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            in_flight.acquire(&[(f, 1)], Duration::ZERO),
        )
        .await
        .expect("no queue when the wait is zero");
        assert_eq!(refused.map(|g| g.len()), Err(f));
    }
}
