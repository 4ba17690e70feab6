//! Cheap randomness that needs no crate and keeps no secret: the jitter of retry backoff and
//! the suffix of run ids. It only has to differ between hosts and between runs.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64*: a few instructions per number, good enough to spread retries apart.
#[derive(Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock's nanoseconds, the process id and `salt` (a host number, say), so
    /// that hosts failing at the same instant still draw different numbers.
    pub fn seeded(salt: u64) -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let seed = nanos
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Zero is the one state xorshift never leaves.
        XorShift(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_vary_and_never_stick_at_zero() {
        let mut random = XorShift(0x2545_F491_4F6C_DD1D);
        let numbers: std::collections::HashSet<u64> =
            (0..1000).map(|_| random.next_u64()).collect();
        assert_eq!(numbers.len(), 1000);
        let mut a = XorShift::seeded(1);
        let mut b = XorShift::seeded(2);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
