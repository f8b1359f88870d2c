//! Retries: which calls may be sent again, and how many retries the
//! cluster may add to the load.
//!
//! Two kinds, as gRPC distinguishes them:
//!
//! * **Transparent** — the request never left this process (the instance
//!   could not be dialed, its connection was already closed): any call,
//!   idempotent or not, goes to another instance at once. Free of budget,
//!   at most once per instance, within the deadline.
//! * **Retries** — the request went out and the answer was UNAVAILABLE
//!   (the connection was lost, the server was shutting down): the server
//!   may have run it, so only methods declared idempotent are sent again,
//!   at most [`RetryPolicy::max_attempts`] times in all, on instances not
//!   yet tried, while the call's deadline has not passed and the
//!   [`RetryBudget`] has a token. DEADLINE_EXCEEDED is never retried (the
//!   caller's time is up), nor any status an application chose.
//!
//! The budget is Finagle's: each call deposits `ratio` of a token, each
//! retry withdraws one, and a floor of `min_per_second` tokens per second
//! keeps a quiet client able to retry. So retries add at most `ratio`
//! (10 %) to the load, plus the floor — when every instance fails, the
//! cluster does not multiply the storm.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// A retry budget; see the module docs.
///
/// ```
/// use ferropoll_rpc::cluster::RetryBudget;
/// // 10 % of the calls, no floor, at most 100 tokens saved up.
/// let budget = RetryBudget::new(0.1, 0, 100);
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 20 calls earn 2 retries
/// ```
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    max_tokens: u32,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    tokens: f64,
    /// The floor's tokens are counted from here.
    refilled: Instant,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("max_tokens", &self.max_tokens)
            .field("tokens", &self.state.lock().tokens)
            .finish()
    }
}

impl Default for RetryBudget {
    /// 10 % of the calls, a floor of 10 retries per second, at most 100
    /// tokens saved up; it starts with 10.
    fn default() -> Self {
        RetryBudget::new(0.1, 10, 100)
    }
}

impl RetryBudget {
    /// Retries may add `ratio` of the calls (0.1 = 10 %), plus
    /// `min_per_second`; at most `max_tokens` are saved up. It starts with
    /// `min_per_second` tokens.
    pub fn new(ratio: f64, min_per_second: u32, max_tokens: u32) -> RetryBudget {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        RetryBudget {
            ratio,
            min_per_second,
            max_tokens,
            state: Mutex::new(BudgetState {
                tokens: f64::from(min_per_second.min(max_tokens)),
                refilled: Instant::now(),
            }),
        }
    }

    /// A call was made (its first attempt): earns `ratio` of a retry.
    pub fn deposit(&self) {
        let mut s = self.state.lock();
        s.tokens = (s.tokens + self.ratio).min(f64::from(self.max_tokens));
    }

    /// Takes a token for one retry; `false` if the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    /// [`try_withdraw`](Self::try_withdraw) at a given time (for tests).
    pub fn try_withdraw_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock();
        if self.min_per_second > 0 {
            let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
            s.tokens = (s.tokens + elapsed * f64::from(self.min_per_second))
                .min(f64::from(self.max_tokens));
            s.refilled = now.max(s.refilled);
        }
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens available now (fractional).
    pub fn balance(&self) -> f64 {
        self.state.lock().tokens
    }
}

/// Which methods may be retried after their request went out, how many
/// attempts a call may make, and the budget they share.
///
/// ```
/// use ferropoll_rpc::cluster::RetryPolicy;
/// let policy = RetryPolicy::new()
///     .idempotent_method("kv.Kv", "Get")
///     .idempotent_method("kv.Kv", "List")
///     .idempotent_service("echo.Echo")
///     .max_attempts(3);
/// assert!(policy.is_idempotent("kv.Kv", "Get"));
/// assert!(!policy.is_idempotent("kv.Kv", "Put"));
/// assert!(policy.is_idempotent("echo.Echo", "Echo"));
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    services: HashSet<String>,
    methods: HashSet<(String, String)>,
    max_attempts: u32,
    budget: Arc<RetryBudget>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new()
    }
}

impl RetryPolicy {
    /// No method retried (transparent retries still happen), 3 attempts at
    /// most for those that are, the default [`RetryBudget`].
    pub fn new() -> RetryPolicy {
        RetryPolicy {
            services: HashSet::new(),
            methods: HashSet::new(),
            max_attempts: 3,
            budget: Arc::new(RetryBudget::default()),
        }
    }

    /// `service`/`method` is idempotent: it may be retried.
    #[must_use = "idempotent_method returns the changed policy"]
    pub fn idempotent_method(mut self, service: &str, method: &str) -> RetryPolicy {
        self.methods.insert((service.to_owned(), method.to_owned()));
        self
    }

    /// Every method of `service` is idempotent.
    #[must_use = "idempotent_service returns the changed policy"]
    pub fn idempotent_service(mut self, service: &str) -> RetryPolicy {
        self.services.insert(service.to_owned());
        self
    }

    /// Attempts per call in all, the first included (at least 1).
    #[must_use = "max_attempts returns the changed policy"]
    pub fn max_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = n.max(1);
        self
    }

    /// The budget retries draw from.
    #[must_use = "budget returns the changed policy"]
    pub fn budget(mut self, budget: RetryBudget) -> RetryPolicy {
        self.budget = Arc::new(budget);
        self
    }

    /// Whether `service`/`method` was declared idempotent.
    pub fn is_idempotent(&self, service: &str, method: &str) -> bool {
        if self.services.contains(service) {
            return true;
        }
        // No allocation on lookup: the set is small; compare in place.
        !self.methods.is_empty()
            && self
                .methods
                .iter()
                .any(|(s, m)| s == service && m == method)
    }

    /// Attempts per call in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The shared budget.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_is_ten_percent_of_calls() {
        let b = RetryBudget::new(0.1, 0, 1_000);
        let t = Instant::now();
        for _ in 0..1_000 {
            b.deposit();
        }
        let mut granted = 0;
        while b.try_withdraw_at(t) {
            granted += 1;
        }
        // 1000 × 0.1 = 100, give or take float rounding of the sum.
        assert!((99..=100).contains(&granted), "{granted}");
        assert!(!b.try_withdraw_at(t));
    }

    #[test]
    fn budget_floor_refills_with_time() {
        let b = RetryBudget::new(0.0, 10, 20);
        let t = Instant::now();
        let mut granted = 0;
        while b.try_withdraw_at(t) {
            granted += 1;
        }
        assert_eq!(granted, 10, "starts with min_per_second");
        assert!(!b.try_withdraw_at(t));
        // Half a second later: five more.
        let later = t + Duration::from_millis(500);
        let mut granted = 0;
        while b.try_withdraw_at(later) {
            granted += 1;
        }
        assert_eq!(granted, 5);
        // Never more than max_tokens saved up.
        let much_later = t + Duration::from_secs(3600);
        let mut granted = 0;
        while b.try_withdraw_at(much_later) {
            granted += 1;
        }
        assert_eq!(granted, 20);
    }

    #[test]
    fn bad_ratio_is_zero() {
        let b = RetryBudget::new(f64::NAN, 0, 10);
        b.deposit();
        assert_eq!(b.balance(), 0.0);
    }

    #[test]
    fn policy_lookup() {
        let p = RetryPolicy::new()
            .idempotent_method("a.A", "Get")
            .idempotent_service("b.B")
            .max_attempts(0);
        assert!(p.is_idempotent("a.A", "Get"));
        assert!(!p.is_idempotent("a.A", "Put"));
        assert!(!p.is_idempotent("a.Z", "Get"));
        assert!(p.is_idempotent("b.B", "Anything"));
        assert_eq!(p.attempts(), 1);
    }
}
