//! Work put off until a moment: what an engine thread keeps for the tasks
//! that said [`Step::WaitUntil`](crate::Step::WaitUntil).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

/// Items waiting for their moment; the earliest comes out first, and of two
/// with the same moment the one put off first.
#[derive(Debug)]
pub struct Waiting<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    order: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting {
            heap: BinaryHeap::new(),
            order: 0,
        }
    }
}

impl<T> Waiting<T> {
    /// Nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `item` off until `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.order += 1;
        self.heap.push(Reverse(Entry {
            at,
            order: self.order,
            item,
        }));
    }

    /// The earliest item whose moment is `now` or before, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry.item)
    }

    /// The earliest moment anything waits for.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_first_then_in_the_order_put_off() {
        let now = Instant::now();
        let mut waiting = Waiting::new();
        waiting.push(now + Duration::from_millis(20), "late");
        waiting.push(now, "first");
        waiting.push(now, "second");
        assert_eq!(waiting.next_due(), Some(now));
        assert_eq!(waiting.pop_due(now), Some("first"));
        assert_eq!(waiting.pop_due(now), Some("second"));
        assert_eq!(waiting.pop_due(now), None, "not due yet");
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            waiting.pop_due(now + Duration::from_millis(20)),
            Some("late")
        );
        assert!(waiting.is_empty());
    }
}
