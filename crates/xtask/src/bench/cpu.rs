//! Where this machine's CPU went during a benchmark run, read from Linux's `/proc`.
//!
//! Everything a benchmark measures shares two cores: PostgreSQL, NATS, the service and the
//! load generator. The same binary at the same load has given a call p99 of 18 ms in one
//! hour and 900 ms in another, so a result means little without knowing who held the CPU:
//! how much the hypervisor took (steal), and how much each program spent per event.

use std::collections::HashMap;

/// Clock ticks per second in `/proc` (`USER_HZ`): fixed at 100 by Linux's ABI on the
/// architectures this project runs on, whatever the kernel's own tick rate.
const TICKS_PER_S: f64 = 100.0;

/// The programs whose CPU time a report names, by their `/proc/<pid>/stat` command name
/// (truncated by the kernel to 15 bytes: `tocsin-local-pr` is `tocsin-local-providers`, the
/// provider servers).
const PROGRAMS: [&str; 8] = [
    "postgres",
    "nats-server",
    "tocsin-ingest",
    "tocsin-resolver",
    "tocsin-email",
    "tocsin-sms",
    "tocsin-webhook",
    "tocsin-local-pr",
];

/// One reading of the host's and the named programs' CPU counters.
#[derive(Debug, Clone)]
pub(super) struct CpuSample {
    /// Host-wide ticks: (all, idle, I/O wait, steal).
    host: (u64, u64, u64, u64),
    /// Ticks used so far by each process of [`PROGRAMS`], by pid.
    processes: HashMap<u32, (&'static str, u64)>,
    /// Ticks used so far by this process (the load generator).
    own: u64,
}

impl CpuSample {
    /// Reads the counters now; `None` where `/proc` is not Linux's.
    pub(super) fn read() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let host = parse_host(&stat)?;
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may exit between the listing and the read: it is simply not counted.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks)) = parse_process(&stat)
                && let Some(program) = PROGRAMS.iter().find(|p| **p == name)
            {
                processes.insert(pid, (*program, ticks));
            }
        }
        let own = parse_process(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
        Some(CpuSample {
            host,
            processes,
            own,
        })
    }

    /// What happened between `self` (earlier) and `later`, with `events` handled meanwhile.
    pub(super) fn usage_until(&self, later: &CpuSample, events: u64) -> CpuUsage {
        let all = later.host.0.saturating_sub(self.host.0).max(1) as f64;
        let idle = later.host.1.saturating_sub(self.host.1) as f64;
        let iowait = later.host.2.saturating_sub(self.host.2) as f64;
        let steal = later.host.3.saturating_sub(self.host.3) as f64;
        let mut programs: Vec<(String, f64)> =
            PROGRAMS.iter().map(|p| ((*p).to_owned(), 0.0)).collect();
        for (pid, (program, ticks)) in &later.processes {
            // A process born during the run counts from zero.
            let before = self.processes.get(pid).map_or(0, |(_, t)| *t);
            if let Some(entry) = programs.iter_mut().find(|(name, _)| name == program) {
                entry.1 += ticks.saturating_sub(before) as f64;
            }
        }
        programs.push((
            "load generator".to_owned(),
            later.own.saturating_sub(self.own) as f64,
        ));
        // ticks / TICKS_PER_S seconds, in ms, per 1,000 events.
        let scale = 1_000_000.0 / (TICKS_PER_S * events.max(1) as f64);
        CpuUsage {
            busy_pct: 100.0 * (all - idle - iowait - steal).max(0.0) / all,
            iowait_pct: 100.0 * iowait / all,
            steal_pct: 100.0 * steal / all,
            ms_per_1000_events: programs
                .into_iter()
                .map(|(name, ticks)| (name, ticks * scale))
                .collect(),
        }
    }
}

/// CPU use over a run: the host's shares (busy, idle waiting on the disk, taken by the
/// hypervisor), and milliseconds of CPU per 1,000 events by
/// program. Processes that ended during the run are not counted (PostgreSQL's backends for
/// the service's pool live as long as the run).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CpuUsage {
    pub(super) busy_pct: f64,
    pub(super) iowait_pct: f64,
    pub(super) steal_pct: f64,
    pub(super) ms_per_1000_events: Vec<(String, f64)>,
}

impl CpuUsage {
    /// "postgres 412, nats-server 96, …" for the results table: the programs that ran.
    pub(super) fn breakdown(&self) -> String {
        self.ms_per_1000_events
            .iter()
            .filter(|(name, ms)| *ms > 0.0 || PROGRAMS[..2].contains(&name.as_str()))
            .map(|(name, ms)| format!("{name} {ms:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The results-table rows: the host's busy and steal shares, and CPU ms per 1,000 `of`.
    pub(super) fn print_rows(&self, of: &str) {
        println!(
            "| host CPU busy / steal | {:.0} % / {:.1} % |",
            self.busy_pct, self.steal_pct
        );
        println!("| CPU ms per 1,000 {of} | {} |", self.breakdown());
    }

    /// The host's shares and the programs that ran, for a benchmark's JSON line.
    pub(super) fn json(&self) -> serde_json::Value {
        let per_program: serde_json::Map<String, serde_json::Value> = self
            .ms_per_1000_events
            .iter()
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(name, ms)| (name.clone(), ms.round().into()))
            .collect();
        serde_json::json!({
            "busy_pct": self.busy_pct.round(),
            "steal_pct": super::round2(self.steal_pct),
            "ms_per_1000": per_program,
        })
    }
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal …`.
fn parse_host(stat: &str) -> Option<(u64, u64, u64, u64)> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // guest and guest_nice are already inside user and nice: the first eight fields are all.
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 8 {
        return None;
    }
    let all = values.iter().sum();
    Some((all, values[3], values[4], values[7]))
}

/// `/proc/<pid>/stat`: the command name (in parentheses, and it may itself hold spaces or
/// parentheses) and utime + stime, fields 14 and 15.
fn parse_process(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut rest = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_line_gives_all_idle_iowait_and_steal() {
        let stat = "cpu  5102 0 3734 435401 274 0 58 47 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse_host(stat),
            Some((5102 + 3734 + 435_401 + 274 + 58 + 47, 435_401, 274, 47))
        );
        assert_eq!(parse_host("intr 1 2 3"), None);
    }

    #[test]
    fn process_line_gives_name_and_cpu_ticks() {
        let stat = "4242 (tocsin-ingest) S 1 4242 4242 0 -1 4194560 2961 0 0 0 731 190 0 0 \
                    20 0 7 0 1234 0 0";
        assert_eq!(parse_process(stat), Some(("tocsin-ingest", 921)));
        // A name with a space and a parenthesis of its own.
        let stat = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_process(stat), Some(("a (b) c", 11)));
    }

    #[test]
    fn usage_counts_new_processes_from_zero_and_splits_the_host() {
        let before = CpuSample {
            host: (1000, 550, 50, 100),
            processes: HashMap::from([(10, ("postgres", 50))]),
            own: 20,
        };
        let after = CpuSample {
            host: (2000, 1000, 150, 300),
            processes: HashMap::from([(10, ("postgres", 150)), (11, ("postgres", 30))]),
            own: 70,
        };
        // 1,000 ticks in all: 450 idle, 100 I/O wait, 200 steal, 250 busy; 2,000 events.
        let usage = before.usage_until(&after, 2000);
        assert_eq!(usage.busy_pct, 25.0);
        assert_eq!(usage.iowait_pct, 10.0);
        assert_eq!(usage.steal_pct, 20.0);
        let ms = |name: &str| {
            usage
                .ms_per_1000_events
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, ms)| *ms)
        };
        // postgres: 130 ticks = 1.3 s over 2,000 events = 650 ms per 1,000.
        assert_eq!(ms("postgres"), Some(650.0));
        assert_eq!(ms("nats-server"), Some(0.0));
        assert_eq!(ms("load generator"), Some(250.0));
        assert_eq!(
            usage.breakdown(),
            "postgres 650, nats-server 0, load generator 250",
            "PostgreSQL and NATS always, the others only where they ran"
        );
    }
}
