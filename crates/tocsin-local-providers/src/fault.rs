//! Faults on demand, one mechanism for the three servers.
//!
//! A plan is an ordered list of [`FaultRule`]s. A rule names a target (the recipient address for
//! SMTP, the `To` number for Twilio, the endpoint name for webhooks) or none, which makes it a
//! default. When a request arrives, the first live rule for its target applies, else the first
//! live default; a rule with `times` set applies to that many requests and then expires.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Where in an SMTP transaction a [`Fault::Reject`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpStage {
    /// The reply to `RCPT TO` for the faulted recipient.
    Rcpt,
    /// The reply after the message data (`\r\n.\r\n`); the mail is recorded as not accepted.
    #[default]
    Data,
}

/// One misbehaviour. Each variant says which servers honour it; a server that does not
/// understand a fault behaves normally and logs a warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// All servers: wait this long, then answer normally.
    Delay { ms: u64 },
    /// All servers: take the request in full, record it as not accepted, and never answer
    /// (until the server stops): the provider is stuck. For SMTP the silence starts after the
    /// message data.
    Hang,
    /// The provider did the work but the reply is lost, so the sender cannot know. SMTP records
    /// the mail as accepted and closes the connection without replying to the data; HTTP
    /// servers record the request as accepted (Twilio also sends its status callbacks) and
    /// never answer.
    Drop,
    /// SMTP: reply with this code (4xx transient, 5xx permanent) at `stage`.
    Reject {
        code: u16,
        #[serde(default)]
        stage: SmtpStage,
        #[serde(default)]
        message: Option<String>,
    },
    /// HTTP servers: answer with this status. Twilio answers with its JSON error body using
    /// `code`, derived from the status when absent (429 -> 20429, 503 -> 20503, other 5xx ->
    /// 20500, 401 -> 20003, 404 -> 20404, anything else -> 21211); `retry_after_secs` adds a
    /// `Retry-After` header.
    Status {
        status: u16,
        #[serde(default)]
        code: Option<u32>,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// HTTP servers: answer `302 Found` with this `Location`.
    Redirect { location: String },
    /// Twilio: accept the message (201), then report `undelivered` with this error code
    /// (30003, unreachable handset, by default) in the status callback.
    Undelivered {
        #[serde(default)]
        error_code: Option<u32>,
    },
}

/// A fault for a target (or every target when `target` is absent), for the next `times`
/// requests (forever when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    #[serde(flatten)]
    pub fault: Fault,
}

impl FaultRule {
    /// A rule for every target, forever.
    pub fn always(fault: Fault) -> Self {
        Self {
            target: None,
            times: None,
            fault,
        }
    }

    /// A rule for one target, forever.
    pub fn for_target(target: impl Into<String>, fault: Fault) -> Self {
        Self {
            target: Some(target.into()),
            times: None,
            fault,
        }
    }

    /// Limits the rule to the next `times` matching requests.
    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }
}

/// The live fault plan of one server. Cloning shares the plan.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

impl Faults {
    /// Appends rules to the plan; earlier rules win.
    pub fn add(&self, rules: impl IntoIterator<Item = FaultRule>) {
        self.rules.lock().unwrap().extend(rules);
    }

    /// Appends one rule.
    pub fn push(&self, rule: FaultRule) {
        self.add([rule]);
    }

    /// Removes every rule: the server behaves normally again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// The rules still live, with their remaining counts.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap().clone()
    }

    /// Consumes one use of the rule that applies to `target`, if any.
    pub fn take(&self, target: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        // Targets are compared without case because e-mail domains and header spellings vary.
        let index = rules
            .iter()
            .position(|r| {
                r.target
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(target))
            })
            .or_else(|| rules.iter().position(|r| r.target.is_none()))?;
        let rule = &mut rules[index];
        let fault = rule.fault.clone();
        if let Some(times) = rule.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_rule_wins_over_the_default_and_expires() {
        let faults = Faults::default();
        faults.push(FaultRule::always(Fault::Hang));
        faults.push(FaultRule::for_target("+15550001", Fault::Delay { ms: 5 }).times(2));
        assert_eq!(faults.take("+15550001"), Some(Fault::Delay { ms: 5 }));
        assert_eq!(faults.take("+15550001"), Some(Fault::Delay { ms: 5 }));
        assert_eq!(faults.take("+15550001"), Some(Fault::Hang));
        assert_eq!(faults.rules().len(), 1);
        faults.clear();
        assert_eq!(faults.take("+15550001"), None);
    }

    #[test]
    fn rules_read_from_flat_json() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"target":"a@b.c","times":1,"kind":"reject","code":451,"stage":"rcpt"}"#,
        )
        .unwrap();
        assert_eq!(
            rule.fault,
            Fault::Reject {
                code: 451,
                stage: SmtpStage::Rcpt,
                message: None
            }
        );
        assert_eq!(rule.times, Some(1));
    }
}
