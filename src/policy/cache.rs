//! The verdict cache shared by all sessions.
//!
//! Keyed by the **exact statement bytes**, or by the text's *shape* (its
//! constants folded where no reading looks at their values, see
//! [`super::shape`]): a cached verdict is by construction the verdict of a
//! fresh classification of any text with that key. What is stored is the
//! switch-independent [`Analysis`]; the [`Verdict`] for a set of
//! [`Switches`] is memoised next to it and recomputed (without parsing)
//! when a lookup brings different switches, so the cache is correct for any
//! mix of switches and costs nothing extra when, as in practice, everyone
//! uses the same ones.
//!
//! Concurrency: `SHARDS` independent `Mutex`es chosen by the key's hash; a
//! hit holds one shard's lock for a hash-table probe, a byte comparison and
//! an `Arc` clone — no parsing and no allocation. Classification on a miss
//! runs outside any lock.
//!
//! Memory: bounded by entry count and by total key bytes (plus a small
//! per-entry overhead); texts longer than an eighth of a shard's byte budget
//! are classified but not cached. A full shard evicts CLOCK-style in
//! batches: entries not hit since the last sweep go first, then arbitrary
//! ones, down to 7/8 of the budget.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Analysis, Switches, Verdict, analyze, decide};

const SHARDS: usize = 32;

/// Default total key-byte budget for [`VerdictCache::new`].
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// The map key is already a keyed SipHash of the text: pass it through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else defensively.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    key: Box<[u8]>,
    analysis: Arc<Analysis>,
    memo: (Arc<Switches>, Arc<Verdict>),
    used: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    bytes: usize,
}

/// Per-entry bytes counted on top of the key (map slot, analysis, verdict).
const ENTRY_OVERHEAD: usize = 192;

/// A bounded, sharded verdict cache shared across sessions.
pub struct VerdictCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_entries_per_shard: usize,
    max_bytes_per_shard: usize,
    max_key_len: usize,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("shards", &self.shards.len())
            .field("max_entries_per_shard", &self.max_entries_per_shard)
            .field("max_bytes_per_shard", &self.max_bytes_per_shard)
            .finish()
    }
}

impl VerdictCache {
    /// A cache of at most `max_entries` texts and [`DEFAULT_MAX_BYTES`] of
    /// keys. `max_entries == 0` disables caching.
    pub fn new(max_entries: usize) -> Self {
        Self::with_limits(max_entries, DEFAULT_MAX_BYTES)
    }

    /// A cache of at most `max_entries` texts and about `max_bytes` of keys
    /// (plus a fixed overhead per entry).
    pub fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        let n = SHARDS.min(max_entries.max(1));
        let max_entries_per_shard = max_entries.div_ceil(n);
        let max_bytes_per_shard = (max_bytes / n).max(1);
        VerdictCache {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            max_entries_per_shard,
            max_bytes_per_shard,
            max_key_len: max_bytes_per_shard / 8,
        }
    }

    /// Classify `sql` under `switches`, from the cache when possible.
    /// Returns the verdict and whether it was a cache hit. Texts that
    /// differ only in foldable constants share an entry (see
    /// [`super::shape`]); a miss classifies the exact bytes.
    pub fn classify(&self, sql: &[u8], switches: &Switches) -> (Arc<Verdict>, bool) {
        // Too long to be cached: neither hash nor shape it (a shape scans
        // the whole text), just read it.
        if self.max_entries_per_shard == 0 || sql.len() > self.max_key_len {
            return (Arc::new(super::classify(sql, switches)), false);
        }
        if let Some(v) = self.lookup(sql, switches) {
            return (v, true);
        }
        let shape = super::shape::shape(sql);
        if let Some(key) = &shape
            && let Some(v) = self.lookup(key, switches)
        {
            return (v, true);
        }
        let analysis = Arc::new(analyze(sql));
        let verdict = Arc::new(decide(&analysis, switches));
        self.insert(
            shape.as_deref().unwrap_or(sql),
            analysis,
            switches,
            &verdict,
        );
        (verdict, false)
    }

    /// The cached verdict for `key` under `switches`, re-deciding (without
    /// parsing) when it was cached under other switches.
    fn lookup(&self, key: &[u8], switches: &Switches) -> Option<Arc<Verdict>> {
        let h = self.hasher.hash_one(key);
        // Shard by middle bits: the map uses the low bits for buckets and
        // the top bits for its control tags.
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        let analysis = {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let e = s.map.get_mut(&h).filter(|e| *e.key == *key)?;
            e.used = true;
            if *e.memo.0 == *switches {
                return Some(Arc::clone(&e.memo.1));
            }
            Arc::clone(&e.analysis)
        };
        // Same text, other switches: no parsing, just re-apply switches.
        let verdict = Arc::new(decide(&analysis, switches));
        let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = s.map.get_mut(&h)
            && *e.key == *key
        {
            e.memo = (Arc::new(switches.clone()), Arc::clone(&verdict));
        }
        Some(verdict)
    }

    fn insert(
        &self,
        key: &[u8],
        analysis: Arc<Analysis>,
        switches: &Switches,
        verdict: &Arc<Verdict>,
    ) {
        if key.len() > self.max_key_len {
            return;
        }
        let h = self.hasher.hash_one(key);
        let shard = &self.shards[(h >> 32) as usize % self.shards.len()];
        let cost = key.len() + ENTRY_OVERHEAD + analysis.heap_bytes();
        let entry = Entry {
            key: key.into(),
            analysis,
            memo: (Arc::new(switches.clone()), Arc::clone(verdict)),
            used: false,
        };
        let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if s.map.len() >= self.max_entries_per_shard || s.bytes + cost > self.max_bytes_per_shard {
            self.evict(&mut s, cost);
        }
        if let Some(old) = s.map.insert(h, entry) {
            s.bytes = s.bytes.saturating_sub(cost_of(&old));
        }
        s.bytes += cost;
    }

    /// Number of cached texts (for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes accounted in all shards (keys plus per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }

    /// Make room for an entry of `incoming` bytes: drop entries not used
    /// since the last sweep, then arbitrary ones, to 7/8 of the budgets.
    fn evict(&self, s: &mut Shard, incoming: usize) {
        let entry_target = self.max_entries_per_shard - self.max_entries_per_shard.div_ceil(8);
        let byte_target =
            (self.max_bytes_per_shard - self.max_bytes_per_shard / 8).saturating_sub(incoming);
        let mut freed = 0usize;
        s.map.retain(|_, e| {
            let keep = std::mem::replace(&mut e.used, false);
            if !keep {
                freed += cost_of(e);
            }
            keep
        });
        s.bytes = s.bytes.saturating_sub(freed);
        if s.map.len() > entry_target || s.bytes > byte_target {
            let mut victims = Vec::new();
            let mut len = s.map.len();
            let mut bytes = s.bytes;
            for (k, e) in &s.map {
                if len <= entry_target && bytes <= byte_target {
                    break;
                }
                victims.push(*k);
                len -= 1;
                bytes = bytes.saturating_sub(cost_of(e));
            }
            for k in victims {
                if let Some(e) = s.map.remove(&k) {
                    s.bytes = s.bytes.saturating_sub(cost_of(&e));
                }
            }
        }
    }
}

fn cost_of(e: &Entry) -> usize {
    e.key.len() + ENTRY_OVERHEAD + e.analysis.heap_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_returns_the_same_verdict() {
        let c = VerdictCache::new(100);
        let sw = Switches::default();
        let (v1, hit1) = c.classify(b"SELECT 1", &sw);
        let (v2, hit2) = c.classify(b"SELECT 1", &sw);
        assert!(!hit1 && hit2);
        assert!(Arc::ptr_eq(&v1, &v2));
        assert_eq!(*v1, super::super::classify(b"SELECT 1", &sw));
    }

    #[test]
    fn switches_are_part_of_the_answer() {
        let c = VerdictCache::new(100);
        let off = Switches::default();
        let on = Switches {
            allow_truncate: true,
            ..Switches::default()
        };
        assert!(!c.classify(b"TRUNCATE t", &off).0.allowed);
        assert!(c.classify(b"TRUNCATE t", &on).0.allowed);
        assert!(!c.classify(b"TRUNCATE t", &off).0.allowed);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let c = VerdictCache::with_limits(64, 64 * 1024);
        let sw = Switches::default();
        for i in 0..10_000 {
            let sql = format!("SELECT {i} FROM t WHERE a = 'x'");
            c.classify(sql.as_bytes(), &sw);
            assert!(c.len() <= 64 + 32, "{}", c.len());
        }
        let c = VerdictCache::with_limits(100_000, 256 * 1024);
        for i in 0..5_000 {
            let sql = format!("SELECT {i}, '{}'", "x".repeat(200));
            c.classify(sql.as_bytes(), &sw);
        }
        assert!(c.bytes() <= 256 * 1024 + 32 * 1024, "{}", c.bytes());
        // Too large to cache, still classified.
        let huge = format!("SELECT '{}'", "x".repeat(64 * 1024));
        let (v, _) = c.classify(huge.as_bytes(), &sw);
        assert!(v.allowed);
        assert!(!c.classify(huge.as_bytes(), &sw).1);
    }

    #[test]
    fn zero_disables() {
        let c = VerdictCache::new(0);
        let sw = Switches::default();
        assert!(!c.classify(b"SELECT 1", &sw).1);
        assert!(!c.classify(b"SELECT 1", &sw).1);
        assert!(c.is_empty());
    }

    #[test]
    fn frequently_hit_entries_survive_eviction() {
        let c = VerdictCache::with_limits(256, 1 << 20);
        let sw = Switches::default();
        c.classify(b"SELECT hot", &sw);
        for i in 0..2000 {
            assert!(c.classify(b"SELECT hot", &sw).1, "evicted at {i}");
            c.classify(format!("SELECT cold{i}").as_bytes(), &sw);
        }
    }
}
