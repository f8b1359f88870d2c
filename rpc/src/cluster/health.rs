//! Health: taking unreachable instances out, and letting them back in.
//!
//! An instance is *ejected* when it cannot be dialed, or when a connection
//! to it was lost and a fresh dial fails. An ejected instance is skipped by
//! the balancer; when its backoff ends, a background probe (a dial on a
//! gopool worker, never on a caller's thread or the client loop) decides:
//! success re-admits it and resets the backoff, failure doubles the backoff
//! (with jitter, up to a cap) — gRPC's connection backoff, applied per
//! instance. The client loop runs a timer that starts the probes, looks
//! for connections no longer `is_active()` and applies discovery changes.

use std::time::Duration;

/// Settings of the health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// The first ejection lasts this long. Default 100 ms.
    pub base_backoff: Duration,
    /// Ejections never last longer. Default 10 s.
    pub max_backoff: Duration,
    /// Each failed probe multiplies the backoff by this. Default 2.
    pub multiplier: u32,
    /// Each backoff is drawn uniformly from ±`jitter_percent` around its
    /// nominal value, so that many clients do not probe in step. Default 20.
    pub jitter_percent: u32,
    /// How often the client loop checks connections, starts due probes and
    /// applies discovery changes. Default 50 ms.
    pub tick: Duration,
}

impl HealthConfig {
    /// Checks the settings (the cluster builder calls it).
    ///
    /// # Errors
    ///
    /// A sentence naming the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick.is_zero() {
            return Err("health tick must not be zero".to_owned());
        }
        if self.base_backoff.is_zero() || self.base_backoff > self.max_backoff {
            return Err(format!(
                "base_backoff {:?} must be non-zero and at most max_backoff {:?}",
                self.base_backoff, self.max_backoff
            ));
        }
        if self.multiplier == 0 {
            return Err("backoff multiplier must not be 0".to_owned());
        }
        if self.jitter_percent > 100 {
            return Err(format!(
                "jitter_percent {} is over 100",
                self.jitter_percent
            ));
        }
        Ok(())
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2,
            jitter_percent: 20,
            tick: Duration::from_millis(50),
        }
    }
}

impl HealthConfig {
    /// The backoff after `failures` consecutive failures (≥ 1), without
    /// jitter: `base × multiplier^(failures-1)`, capped.
    pub fn nominal_backoff(&self, failures: u32) -> Duration {
        let mut d = self.base_backoff;
        for _ in 1..failures.max(1) {
            d = d.saturating_mul(self.multiplier.max(1));
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    /// [`nominal_backoff`](Self::nominal_backoff) with jitter, never over
    /// the cap.
    pub fn backoff(&self, failures: u32) -> Duration {
        let nominal = self.nominal_backoff(failures);
        let jitter = u64::from(self.jitter_percent.min(100));
        if jitter == 0 {
            return nominal;
        }
        // A factor in [100 - j, 100 + j] percent.
        let pct = 100 - jitter + fastrand::u64(0..=2 * jitter);
        let nanos = nominal.as_nanos().saturating_mul(u128::from(pct)) / 100;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let h = HealthConfig::default();
        assert_eq!(h.nominal_backoff(1), Duration::from_millis(100));
        assert_eq!(h.nominal_backoff(2), Duration::from_millis(200));
        assert_eq!(h.nominal_backoff(5), Duration::from_millis(1600));
        assert_eq!(h.nominal_backoff(8), Duration::from_millis(10_000));
        assert_eq!(h.nominal_backoff(u32::MAX), Duration::from_secs(10));
        assert_eq!(h.nominal_backoff(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let h = HealthConfig::default();
        let draws: Vec<Duration> = (0..1000).map(|_| h.backoff(3)).collect();
        for d in &draws {
            assert!(
                *d >= Duration::from_millis(320) && *d <= Duration::from_millis(480),
                "{d:?}"
            );
        }
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_millis(100),
            "jitter spreads: {min:?}..{max:?}"
        );
        // Capped even with jitter.
        assert!(h.backoff(100) <= h.max_backoff);
        let no_jitter = HealthConfig {
            jitter_percent: 0,
            ..h
        };
        assert_eq!(no_jitter.backoff(2), Duration::from_millis(200));
    }
}
