//! Response rate limiting for classic UDP, against reflection: a forged source address
//! gets at most `rrl_responses_per_second` answers a second (per IPv4 /24 or IPv6 /56, as
//! BIND groups them). Past it, every `rrl_slip`-th answer is replaced by an empty truncated
//! one (TC), so a real client behind the prefix retries over TCP, and the rest are dropped.
//! Sans-IO: the caller passes the time. One limiter per listener thread (no locks); its
//! table is bounded by `rrl_table_size` prefixes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send the truncated form instead (TC, question only).
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    over: u32,
}

/// Token buckets by source prefix.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    slip: u32,
    max_entries: usize,
    buckets: HashMap<u128, Bucket>,
}

impl RateLimiter {
    /// `rate` answers a second per prefix (a burst of one second's worth); 0 disables.
    pub fn new(rate: u32, slip: u32, max_entries: usize) -> Self {
        Self {
            rate: f64::from(rate),
            slip,
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
        }
    }

    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Send;
        }
        let key = prefix(source);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_entries {
            // forget the prefixes that are full again anyway (idle a second or more)
            self.buckets
                .retain(|_, b| now.duration_since(b.last).as_secs_f64() < 1.0);
            if self.buckets.len() >= self.max_entries {
                self.buckets.clear();
            }
        }
        let rate = self.rate;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
            over: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.over = 0;
            return Verdict::Send;
        }
        b.over = b.over.wrapping_add(1);
        if self.slip > 0 && b.over.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The /24 of an IPv4 address, the /56 of an IPv6 one (IPv4-mapped count as IPv4).
fn prefix(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
            None => (u128::from(v6) & (u128::MAX << 72)) | 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn limits_per_prefix_and_refills() {
        let mut rl = RateLimiter::new(5, 2, 100);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..9).map(|_| rl.check(ip("192.0.2.1"), t0)).collect();
        assert_eq!(verdicts[..5], [Verdict::Send; 5]);
        assert_eq!(
            verdicts[5..],
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        // the same /24 shares the bucket; another /24 does not
        assert_eq!(rl.check(ip("192.0.2.200"), t0), Verdict::Drop);
        assert_eq!(rl.check(ip("192.0.3.1"), t0), Verdict::Send);
        assert_eq!(
            rl.check(ip("::ffff:192.0.2.9"), t0),
            Verdict::Slip,
            "mapped"
        );
        // 200 ms later one answer's worth is back
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(rl.check(ip("192.0.2.1"), t1), Verdict::Send);
        assert_ne!(rl.check(ip("192.0.2.1"), t1), Verdict::Send);
    }

    #[test]
    fn off_when_rate_is_zero_and_table_is_bounded() {
        let mut off = RateLimiter::new(0, 2, 10);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| off.check(ip("192.0.2.1"), t0) == Verdict::Send));
        let mut rl = RateLimiter::new(10, 0, 10);
        for i in 0..100u32 {
            let a = std::net::Ipv4Addr::from(i << 8);
            assert_eq!(rl.check(IpAddr::V4(a), t0), Verdict::Send);
            assert!(rl.tracked() <= 10);
        }
        // no slip: over the limit is always dropped
        let mut rl = RateLimiter::new(1, 0, 10);
        assert_eq!(rl.check(ip("2001:db8::1"), t0), Verdict::Send);
        assert_eq!(rl.check(ip("2001:db8::2"), t0), Verdict::Drop, "same /56");
        assert_eq!(rl.check(ip("2001:db8:0:100::1"), t0), Verdict::Send);
    }
}
