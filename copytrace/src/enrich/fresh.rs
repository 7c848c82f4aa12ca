//! A small map of values read from /proc about one process, each reused
//! for a short while: a burst of calls from one process reads its memory
//! map or mount table once, and no process can grow the map.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Values kept at most `keep` long, at most `capacity` of them.
#[derive(Debug)]
pub struct Fresh<K, V> {
    keep: Duration,
    capacity: usize,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash, V: Clone> Fresh<K, V> {
    /// An empty map.
    pub fn new(keep: Duration, capacity: usize) -> Self {
        Self {
            keep,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The value of `key`, read with `read` unless one read within `keep` is kept.
    pub fn get_or_read(&mut self, key: K, read: impl FnOnce() -> V) -> V {
        let now = Instant::now();
        if let Some((at, v)) = self.entries.get(&key) {
            if now.duration_since(*at) < self.keep {
                return v.clone();
            }
        }
        if self.entries.len() >= self.capacity {
            let keep = self.keep;
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < keep);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let v = read();
        self.entries.insert(key, (now, v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reused_while_fresh_and_bounded_in_number() {
        let mut f = Fresh::new(Duration::from_secs(60), 2);
        let mut reads = 0;
        let mut read = |v: u32| {
            reads += 1;
            v
        };
        assert_eq!(f.get_or_read(1, || read(10)), 10);
        assert_eq!(f.get_or_read(1, || read(11)), 10, "reused");
        f.get_or_read(2, || read(20));
        f.get_or_read(3, || read(30));
        assert!(f.entries.len() <= 2);
        assert_eq!(reads, 3);
        let mut stale = Fresh::new(Duration::ZERO, 2);
        stale.get_or_read(1, || 1);
        assert_eq!(stale.get_or_read(1, || 2), 2, "re-read once stale");
    }
}
