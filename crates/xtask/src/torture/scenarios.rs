//! The six scenarios: which incidents each publishes and when, and which faults it causes.
//! Everything is drawn from the scenario's seed, so a run can be replayed with
//! `--scenario NAME --seed S` (the plan is the same; the machine's timing is not).

use std::time::Duration;

use anyhow::bail;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use tocsin_core::Channel;
use tocsin_proto::v1::Severity;

use super::Form;
use super::world::{
    self, BUSY_COMPONENT, IncidentPlan, Population, Subscriber, random_components, random_severity,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scenario {
    Burst,
    Kills,
    Postgres,
    Nats,
    Providers,
    Busy,
}

impl Scenario {
    pub(super) const ALL: [Scenario; 6] = [
        Scenario::Burst,
        Scenario::Kills,
        Scenario::Postgres,
        Scenario::Nats,
        Scenario::Providers,
        Scenario::Busy,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Kills => "kills",
            Scenario::Postgres => "postgres",
            Scenario::Nats => "nats",
            Scenario::Providers => "providers",
            Scenario::Busy => "busy",
        }
    }

    /// `all`, or one name.
    pub(super) fn parse(name: &str) -> anyhow::Result<Vec<Scenario>> {
        if name == "all" {
            return Ok(Self::ALL.to_vec());
        }
        match Self::ALL.into_iter().find(|s| s.name() == name) {
            Some(scenario) => Ok(vec![scenario]),
            None => bail!(
                "unknown scenario {name:?}; one of all, {}",
                Self::ALL.map(Scenario::name).join(", ")
            ),
        }
    }

    /// The scenario's own seed, so that one scenario alone replays what it did within `all`.
    pub(super) fn seed(self, seed: u64) -> u64 {
        let index = Self::ALL.iter().position(|&s| s == self).unwrap_or(0) as u64;
        seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    pub(super) fn population(self) -> Population {
        match self {
            Scenario::Busy => Population::Busy { followers: 4 },
            _ => Population::Mixed,
        }
    }

    /// Replicas per worker channel: several workers at once everywhere, and more where one
    /// recipient's messages are the point.
    pub(super) fn replicas(self, form: Form) -> usize {
        match (self, form) {
            (Scenario::Busy, _) | (_, Form::Long) => 3,
            (_, Form::Short) => 2,
        }
    }

    /// Whether a process that exits on its own is started again, as an orchestrator would.
    /// Not in `nats`, where the services must recover with no help at all.
    pub(super) fn restarts_exited(self) -> bool {
        self != Scenario::Nats
    }
}

/// A fault the harness causes while the incidents are published.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// SIGKILL the `target`-th killable process at `at`, start it again `pause` later.
    Kill {
        at: Duration,
        target: usize,
        pause: Duration,
    },
    /// Restart PostgreSQL (down for `pause`) once step `step` of incident `incident` was
    /// published and the providers have taken `deliveries` more messages since: mid-fan-out.
    Postgres {
        incident: usize,
        step: usize,
        deliveries: u64,
        immediate: bool,
        pause: Duration,
    },
    /// SIGKILL nats-server, wipe its store and start it empty, at the same kind of moment.
    NatsWipe {
        incident: usize,
        step: usize,
        deliveries: u64,
    },
}

/// A fault rule for one provider, as `POST /_control/faults` takes it.
#[derive(Debug, Clone)]
pub(super) struct ProviderFault {
    pub(super) channel: Channel,
    pub(super) rule: serde_json::Value,
}

#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) incidents: Vec<IncidentPlan>,
    pub(super) actions: Vec<Action>,
    pub(super) provider_faults: Vec<ProviderFault>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn mixed(
    rng: &mut StdRng,
    label: String,
    start: Duration,
    updates: usize,
    gap: Duration,
) -> IncidentPlan {
    IncidentPlan::lifecycle(
        label,
        random_severity(rng),
        random_components(rng),
        start,
        updates,
        gap,
    )
}

/// The plan of `scenario`, for `subscribers` and the `killable` processes.
pub(super) fn plan(
    scenario: Scenario,
    form: Form,
    kills: usize,
    rng: &mut StdRng,
    subscribers: &[Subscriber],
    killable: usize,
) -> Plan {
    match scenario {
        Scenario::Burst => burst(rng),
        Scenario::Kills => kill_storm(rng, kills, killable),
        Scenario::Postgres => postgres(rng),
        Scenario::Nats => nats(rng),
        Scenario::Providers => providers(rng, subscribers),
        Scenario::Busy => busy(rng, form),
    }
}

/// Eight events of three incidents within two seconds, and a fourth incident opened,
/// updated five times and resolved within one second: faster than it can fan out.
fn burst(rng: &mut StdRng) -> Plan {
    let mut incidents = vec![
        mixed(rng, "burst-a".into(), ms(0), 2, ms(500)),
        mixed(rng, "burst-b".into(), ms(200), 0, ms(1000)),
        mixed(rng, "burst-c".into(), ms(400), 0, ms(1400)),
    ];
    incidents.push(mixed(rng, "burst-rapid".into(), ms(300), 5, ms(150)));
    Plan {
        incidents,
        ..Plan::default()
    }
}

/// Incidents over a window while every Tocsin service is SIGKILLed at random moments and
/// started again after a short random pause.
fn kill_storm(rng: &mut StdRng, kills: usize, killable: usize) -> Plan {
    let window_ms = (kills as u64 * 1500).max(10_000);
    let count = (kills / 3).clamp(4, 12);
    let incidents = (0..count)
        .map(|i| {
            let start = ms(rng.random_range(0..window_ms.saturating_sub(6000).max(1)));
            let updates = rng.random_range(1..=3);
            let gap = ms(rng.random_range(1000..2500));
            mixed(rng, format!("kills-{i}"), start, updates, gap)
        })
        .collect();
    let mut actions: Vec<Action> = (0..kills)
        .map(|_| Action::Kill {
            at: ms(rng.random_range(500..window_ms + 3000)),
            target: rng.random_range(0..killable.max(1)),
            pause: ms(rng.random_range(200..2500)),
        })
        .collect();
    actions.sort_by_key(|a| match a {
        Action::Kill { at, .. } => *at,
        _ => Duration::ZERO,
    });
    Plan {
        incidents,
        actions,
        ..Plan::default()
    }
}

/// Two incidents with a big fan-out each; PostgreSQL restarted (fast) while the first one's
/// opening goes out, and (immediate: a crash) while the second one's does.
fn postgres(rng: &mut StdRng) -> Plan {
    let wide = |rng: &mut StdRng, label: &str, start| {
        IncidentPlan::lifecycle(
            label.into(),
            Severity::Critical,
            world::COMPONENTS.iter().map(|&c| c.to_owned()).collect(),
            start,
            2,
            ms(rng.random_range(1500..2500)),
        )
    };
    let incidents = vec![
        wide(rng, "postgres-a", ms(0)),
        wide(rng, "postgres-b", ms(8000)),
        mixed(rng, "postgres-c".into(), ms(4000), 1, ms(2000)),
    ];
    let actions = vec![
        Action::Postgres {
            incident: 0,
            step: 0,
            deliveries: rng.random_range(20..120),
            immediate: false,
            pause: ms(rng.random_range(500..2000)),
        },
        Action::Postgres {
            incident: 1,
            step: 0,
            deliveries: rng.random_range(20..120),
            immediate: true,
            pause: ms(rng.random_range(500..2000)),
        },
    ];
    Plan {
        incidents,
        actions,
        ..Plan::default()
    }
}

/// A wide incident opened; nats-server killed while its opening goes out, its store wiped,
/// started empty; the incident goes on and a second one opens afterwards.
fn nats(rng: &mut StdRng) -> Plan {
    let incidents = vec![
        IncidentPlan::lifecycle(
            "nats-a".into(),
            Severity::Critical,
            world::COMPONENTS.iter().map(|&c| c.to_owned()).collect(),
            ms(0),
            2,
            ms(rng.random_range(2500..3500)),
        ),
        mixed(rng, "nats-b".into(), ms(5000), 1, ms(1500)),
    ];
    let actions = vec![Action::NatsWipe {
        incident: 0,
        step: 0,
        deliveries: rng.random_range(20..120),
    }];
    Plan {
        incidents,
        actions,
        ..Plan::default()
    }
}

/// Faults at the providers for a sixth of the recipients, one per channel they use:
/// transient refusals (SMTP 451, HTTP 503, Twilio 20429), hangs past the client's timeout,
/// and replies lost after the provider did the work.
fn providers(rng: &mut StdRng, subscribers: &[Subscriber]) -> Plan {
    let incidents = (0..4)
        .map(|i| {
            let start = ms(rng.random_range(0..3000));
            mixed(rng, format!("providers-{i}"), start, 1, ms(2000))
        })
        .collect();
    let mut provider_faults = Vec::new();
    for subscriber in subscribers {
        if !rng.random_bool(1.0 / 6.0) {
            continue;
        }
        for &channel in &subscriber.channels {
            let target = subscriber.contact(channel);
            let roll = rng.random_range(0..4);
            let rule = match (roll, channel) {
                (0 | 1, Channel::Email) => {
                    let stage = if roll == 0 { "rcpt" } else { "data" };
                    json!({"target": target, "times": 2, "kind": "reject", "code": 451, "stage": stage})
                }
                (0, Channel::Sms) => {
                    json!({"target": target, "times": 2, "kind": "status", "status": 429, "retry_after_secs": 1})
                }
                (0 | 1, _) => {
                    json!({"target": target, "times": 2, "kind": "status", "status": 503})
                }
                (2, _) => json!({"target": target, "times": 1, "kind": "hang"}),
                _ => json!({"target": target, "times": 1, "kind": "drop"}),
            };
            provider_faults.push(ProviderFault { channel, rule });
        }
    }
    Plan {
        incidents,
        provider_faults,
        ..Plan::default()
    }
}

/// Many small incidents on the busy component, each opened and resolved: subscriber 0 (on
/// all three channels) and a few followers get every one.
fn busy(rng: &mut StdRng, form: Form) -> Plan {
    let count = match form {
        Form::Short => 170,
        Form::Long => 500,
    };
    let incidents = (0..count)
        .map(|i| {
            IncidentPlan::lifecycle(
                format!("busy-{i}"),
                random_severity(rng),
                vec![BUSY_COMPONENT.to_owned()],
                ms(i as u64 * 25),
                0,
                ms(rng.random_range(200..800)),
            )
        })
        .collect();
    Plan {
        incidents,
        ..Plan::default()
    }
}
