//! When to try a failed delivery again, and when to give up.
//!
//! Exponential backoff with "equal jitter": half of each step is fixed, half random, so
//! retries of one burst spread out without ever collapsing to zero. A provider's own request
//! to wait (an HTTP `Retry-After` on a webhook 429/503 or a Twilio 429) is a floor, never
//! shortened. SMTP 4xx replies carry no such delay and take the schedule as it is.
//! The randomness comes in as an argument so the schedule itself is a pure function.

use std::time::Duration;

/// A channel's retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's nominal delay; each later one doubles it.
    pub base: Duration,
    /// No single delay is longer than this (before a provider's `Retry-After`).
    pub cap: Duration,
    /// Attempts in all, the first included. Reaching it makes the delivery dead.
    pub max_attempts: u32,
    /// A delivery older than this is dead rather than retried: a message about an outage
    /// that arrives a day late helps no one.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// 5 s, 10 s, 20 s … up to 30 min between attempts, at most 12 attempts within 24 hours.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(30 * 60),
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(Duration),
    /// Attempts or age are exhausted: dead-letter it.
    GiveUp,
}

impl RetryPolicy {
    /// The decision after attempt number `attempts` (1 for the first) failed transiently,
    /// `age` after the delivery was created. `random` is uniform in `[0, 1)`.
    pub fn after_failure(
        &self,
        attempts: u32,
        age: Duration,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Retry {
        if attempts >= self.max_attempts {
            return Retry::GiveUp;
        }
        let exponent = attempts.saturating_sub(1).min(30);
        let step = self.base.saturating_mul(1 << exponent).min(self.cap);
        let jittered = step / 2 + step.mul_f64(random.clamp(0.0, 1.0) / 2.0);
        let delay = retry_after.map_or(jittered, |floor| jittered.max(floor));
        if age.saturating_add(delay) > self.max_age {
            return Retry::GiveUp;
        }
        Retry::After(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_double_with_jitter_inside_each_step() {
        let p = RetryPolicy::default();
        assert_eq!(p.after_failure(1, S(0), None, 0.0), Retry::After(S(5) / 2));
        assert_eq!(
            p.after_failure(1, S(0), None, 0.999_999).clone(),
            p.after_failure(1, S(0), None, 0.999_999)
        );
        let Retry::After(high) = p.after_failure(1, S(0), None, 0.999_999) else {
            panic!()
        };
        assert!(high < S(5) && high > S(4));
        assert_eq!(p.after_failure(3, S(0), None, 0.0), Retry::After(S(10)));
        // Capped at 30 minutes.
        let Retry::After(capped) = p.after_failure(11, S(0), None, 0.999) else {
            panic!()
        };
        assert!(capped <= S(1800));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.after_failure(1, S(0), Some(S(120)), 0.5),
            Retry::After(S(120))
        );
        let Retry::After(d) = p.after_failure(1, S(0), Some(S(1)), 0.5) else {
            panic!()
        };
        assert!(
            d >= S(1) && d > S(2),
            "a short Retry-After does not shorten the backoff"
        );
    }

    #[test]
    fn attempts_and_age_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            p.after_failure(2, S(0), None, 0.5),
            Retry::After(_)
        ));
        assert_eq!(p.after_failure(3, S(0), None, 0.5), Retry::GiveUp);
        let p = RetryPolicy::default();
        assert_eq!(
            p.after_failure(1, S(24 * 3600 - 1), None, 0.5),
            Retry::GiveUp,
            "too old by the time it would run"
        );
        assert_eq!(
            p.after_failure(1, S(0), Some(S(25 * 3600)), 0.5),
            Retry::GiveUp
        );
    }
}
