//! How fast the disk under PostgreSQL's data answered during a benchmark run, from Linux's
//! `/proc/diskstats`.
//!
//! With `synchronous_commit` on, every commit waits for its WAL to reach the disk, so a call's
//! latency holds the disk's write and flush times. A cloud volume's latency varies with its
//! neighbours; a run's result needs that next to it, as it needs the CPU's steal.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One reading of a block device's cumulative counters.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DiskSample {
    /// The device's name in `/proc/diskstats` (`vda`, `nvme0n1p1`, `dm-0`).
    name: String,
    writes: u64,
    write_ms: u64,
    /// Cache flushes (what an `fsync` asks of a disk with a write cache); zero where the
    /// kernel is older than 5.5 or the device does not report them.
    flushes: u64,
    flush_ms: u64,
}

impl DiskSample {
    /// Reads the counters of the device holding `dir`; `None` where there is none to read
    /// (not Linux, a remote PostgreSQL, or a filesystem without a block device).
    pub(super) fn read_for(dir: &Path) -> Option<DiskSample> {
        let (major, minor) = major_minor(std::fs::metadata(dir).ok()?.dev());
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        parse_diskstats(&stats, major, minor)
    }

    /// What the device did between `self` (earlier) and `later`, over `seconds`.
    pub(super) fn usage_until(&self, later: &DiskSample, seconds: f64) -> DiskUsage {
        let writes = later.writes.saturating_sub(self.writes);
        let flushes = later.flushes.saturating_sub(self.flushes);
        let mean = |ms: u64, count: u64| (count > 0).then(|| ms as f64 / count as f64);
        DiskUsage {
            device: later.name.clone(),
            writes_per_s: writes as f64 / seconds.max(f64::EPSILON),
            write_ms: mean(later.write_ms.saturating_sub(self.write_ms), writes),
            flush_ms: mean(later.flush_ms.saturating_sub(self.flush_ms), flushes),
        }
    }
}

/// A device's writes over a run: how many a second, and their mean time in the device
/// (queueing in the kernel included) and that of its cache flushes, where there were any.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DiskUsage {
    pub(super) device: String,
    pub(super) writes_per_s: f64,
    pub(super) write_ms: Option<f64>,
    pub(super) flush_ms: Option<f64>,
}

impl DiskUsage {
    /// "vda: 1234 writes/s, mean write 0.28 ms, flush 0.06 ms" for the results table.
    pub(super) fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("none".to_owned(), |v| format!("{v:.2} ms"));
        format!(
            "{}: {:.0} writes/s, mean write {}, flush {}",
            self.device,
            self.writes_per_s,
            ms(self.write_ms),
            ms(self.flush_ms)
        )
    }
}

/// Linux's `dev_t` encoding (glibc's `gnu_dev_major` / `gnu_dev_minor`).
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The row of `/proc/diskstats` for one device: `major minor name` then the counters, of
/// which writes completed is the 5th, time writing (ms) the 8th, and flushes completed and
/// time flushing the 16th and 17th.
fn parse_diskstats(stats: &str, major: u64, minor: u64) -> Option<DiskSample> {
    stats.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()?.parse::<u64>().ok()? != major
            || fields.next()?.parse::<u64>().ok()? != minor
        {
            return None;
        }
        let name = fields.next()?.to_owned();
        let counters: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        let at = |i: usize| counters.get(i).copied();
        Some(DiskSample {
            name,
            writes: at(4)?,
            write_ms: at(7)?,
            flushes: at(15).unwrap_or(0),
            flush_ms: at(16).unwrap_or(0),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
         254       0 vda 78698 7303 4514890 30223 218426 41230 11782632 61955 0 23260 98439 \
         12628 12 1071880 1092 89721 5167\n \
         254       1 vda1 10 0 80 3 20 0 160 9 0 4 12\n";

    #[test]
    fn finds_the_device_row_and_its_write_and_flush_counters() {
        assert_eq!(
            parse_diskstats(STATS, 254, 0),
            Some(DiskSample {
                name: "vda".to_owned(),
                writes: 218_426,
                write_ms: 61_955,
                flushes: 89_721,
                flush_ms: 5_167,
            })
        );
        // An older kernel's shorter row: no flush counters.
        assert_eq!(
            parse_diskstats(STATS, 254, 1).map(|s| (s.writes, s.write_ms, s.flushes)),
            Some((20, 9, 0))
        );
        assert_eq!(parse_diskstats(STATS, 8, 0), None);
    }

    #[test]
    fn device_numbers_decode_as_glibc_does() {
        // 0xfe00 is 254:0 (vda); a large minor spills into the high bits.
        assert_eq!(major_minor(0xfe00), (254, 0));
        assert_eq!(major_minor(0x0011_0301), (259, 0x101));
    }

    #[test]
    fn usage_gives_rates_and_mean_times() {
        let sample = |writes, write_ms, flushes, flush_ms| DiskSample {
            name: "vda".to_owned(),
            writes,
            write_ms,
            flushes,
            flush_ms,
        };
        let usage = sample(1000, 500, 100, 10).usage_until(&sample(3000, 1500, 100, 10), 10.0);
        assert_eq!(usage.writes_per_s, 200.0);
        assert_eq!(usage.write_ms, Some(0.5));
        assert_eq!(usage.flush_ms, None);
        assert_eq!(
            usage.summary(),
            "vda: 200 writes/s, mean write 0.50 ms, flush none"
        );
    }
}
