//! The benchmark corpus's randomness and its small formatters: a seeded
//! xorshift64* generator (no `rand`: the corpus must be byte-identical for a
//! seed on every platform and every version of the dependencies), UUID-shaped
//! ids, and RFC 3339 timestamps with microseconds, written straight into a
//! writer without allocating.

use std::io::{self, Write};

/// xorshift64* (Vigna), seeded through splitmix64 so that nearby seeds
/// give unrelated streams. Not for cryptography; fast and reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed; xorshift's state must not be zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// An independent stream derived from this one (for a part of the
    /// corpus whose draws must not shift when another part changes).
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(self.next_u64() ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; 0 gives 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True once in `n` draws on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given weights (at least one non-zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }

    pub fn uuid(&mut self) -> Uuid {
        Uuid(self.next_u64(), self.next_u64())
    }
}

/// A random (version 4 shaped) UUID, kept as two words and formatted on
/// demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub u64, pub u64);

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (self.0, self.1);
        write!(
            f,
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            // The variant bits: 10xx.
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// Microseconds since the Unix epoch.
pub type Micros = u64;

/// Writes `t` as RFC 3339 UTC with six fractional digits, the way the API
/// server writes `requestReceivedTimestamp`.
pub fn write_time<W: Write + ?Sized>(w: &mut W, t: Micros) -> io::Result<()> {
    let secs = t / 1_000_000;
    let (y, m, d) = civil(secs / 86_400);
    let rem = secs % 86_400;
    write!(
        w,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t % 1_000_000
    )
}

/// The civil date of a day number since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil(days: u64) -> (i64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(8);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Seed 0 is a seed like any other.
        assert_ne!(Rng::new(0).next_u64(), 0);
    }

    #[test]
    fn below_and_weighted_stay_in_range() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 3];
        for _ in 0..30_000 {
            assert!(r.below(10) < 10);
            seen[r.weighted(&[1, 0, 2])] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[2] > seen[0] * 3 / 2, "{seen:?}");
        assert_eq!(r.range(5, 5), 5);
    }

    #[test]
    fn uuids_are_version_4_shaped() {
        let mut r = Rng::new(3);
        for _ in 0..100 {
            let s = r.uuid().to_string();
            assert_eq!(s.len(), 36, "{s}");
            let parts: Vec<&str> = s.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "{s}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{s}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let mut out = Vec::new();
        write_time(&mut out, 1_793_696_400_000_000 + 1_234_567).unwrap();
        assert_eq!(out, b"2026-11-03T09:00:01.234567Z");
        out.clear();
        write_time(&mut out, 951_782_400_000_000).unwrap(); // a leap day
        assert_eq!(out, b"2000-02-29T00:00:00.000000Z");
    }
}
