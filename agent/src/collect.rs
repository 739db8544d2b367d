//! Host collectors reading procfs and statvfs directly (no background threads, no caches:
//! a collection is a handful of small file reads, which keeps the agent's memory and CPU low).
//!
//! Rates (CPU busy %, disk and network bytes per second, process CPU %) need two readings; the
//! [`Collector`] keeps the previous counters, so the first collection reports no rates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use monsys_proto::agent::{ProcessInfo, Sample, metric};

/// Most filesystems, devices and interfaces reported per batch.
const MAX_ITEMS: usize = 32;
/// Top processes reported.
pub const TOP_PROCESSES: usize = 20;
/// Filesystem types that are not real storage.
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "pstore",
    "debugfs",
    "tracefs",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "bpf",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "overlay",
    "squashfs",
    "efivarfs",
    "ramfs",
    "fuse.lxcfs",
    "fuse.portal",
];

/// CPU time counters of one line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// All jiffies.
    pub total: u64,
    /// Idle + iowait jiffies.
    pub idle: u64,
}

/// Parses the `cpu` lines of /proc/stat: the total first, then each core.
pub fn parse_stat(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            CpuTimes { total, idle }
        })
        .collect()
}

/// Busy percentage between two readings.
pub fn busy_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let idle = after.idle.checked_sub(before.idle)?;
    (total > 0).then(|| 100.0 * (total.saturating_sub(idle)) as f64 / total as f64)
}

/// Rounds a value to the precision monitoring uses: percentages to hundredths, rates to whole
/// bytes per second; other values (bytes, counts, load, uptime) are exact already. The hub
/// stores exact decimals as integer deltas, a fraction of the size of arbitrary floats.
pub fn stored_precision(name: &str, v: f64) -> f64 {
    if name.ends_with("_percent") {
        (v * 100.0).round() / 100.0
    } else if name.ends_with("_per_sec") {
        v.round()
    } else {
        v
    }
}

/// Parses /proc/meminfo into kB values.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Whether a block device name is a whole disk (not a partition, loop or RAM device).
fn is_whole_disk(name: &str) -> bool {
    if ["loop", "ram", "zram", "sr", "fd"].iter().any(|p| name.starts_with(p)) {
        return false;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        return !name.contains('p');
    }
    if name.starts_with("dm-") || name.starts_with("md") {
        return true;
    }
    !name.ends_with(|c: char| c.is_ascii_digit())
}

/// Parses /proc/diskstats: device → (sectors read, sectors written), whole disks only.
pub fn parse_diskstats(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            if !is_whole_disk(name) {
                return None;
            }
            Some((name.to_string(), (f.get(5)?.parse().ok()?, f.get(9)?.parse().ok()?)))
        })
        .collect()
}

/// Parses /proc/net/dev: interface → (rx bytes, tx bytes), loopback excluded.
pub fn parse_netdev(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            (name != "lo").then(|| (name.to_string(), (*f.first().unwrap_or(&0), *f.get(8).unwrap_or(&0))))
        })
        .collect()
}

/// Parses /proc/mounts: (mount point, fs type) of real filesystems, first mount of a device.
pub fn parse_mounts(text: &str) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, mnt, fs) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            let real = !PSEUDO_FS.contains(&fs) && (dev.starts_with('/') || fs == "zfs" || fs == "btrfs");
            (real && seen.insert(dev.to_string())).then(|| (mnt.replace("\\040", " "), fs.to_string()))
        })
        .take(MAX_ITEMS)
        .collect()
}

/// Per-process CPU ticks and resident memory from /proc/<pid>/stat and statm.
#[derive(Debug, Clone)]
struct Proc {
    name: String,
    uid: Option<u32>,
    ticks: u64,
    rss_bytes: u64,
}

fn read_proc(dir: &Path, page: u64) -> Option<Proc> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let uid = std::fs::read_to_string(dir.join("status")).ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    });
    Some(Proc { name, uid, ticks, rss_bytes: rss_pages * page })
}

/// Collects host metrics, keeping the counters rates are computed from.
pub struct Collector {
    root: PathBuf,
    cpu: Vec<CpuTimes>,
    disks: BTreeMap<String, (u64, u64)>,
    nets: BTreeMap<String, (u64, u64)>,
    procs: BTreeMap<u32, u64>,
    last_ms: u64,
    users: BTreeMap<u32, String>,
}

impl Collector {
    /// A collector reading `/proc` (or `root` for tests).
    pub fn new(root: impl Into<PathBuf>) -> Collector {
        let root = root.into();
        let users = std::fs::read_to_string("/etc/passwd")
            .map(|t| crate::inventory::parse_passwd(&t))
            .unwrap_or_default();
        let users = users.into_iter().map(|u| (u.uid, u.name)).collect();
        Collector {
            root,
            cpu: vec![],
            disks: BTreeMap::new(),
            nets: BTreeMap::new(),
            procs: BTreeMap::new(),
            last_ms: 0,
            users,
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join(name)).unwrap_or_default()
    }

    /// One collection at `now_ms`: metrics and the top processes.
    pub fn collect(&mut self, now_ms: u64) -> (Vec<Sample>, Vec<ProcessInfo>) {
        let mut out = Vec::with_capacity(64);
        let secs =
            (self.last_ms > 0 && now_ms > self.last_ms).then(|| (now_ms - self.last_ms) as f64 / 1000.0);

        let cpu = parse_stat(&self.read("stat"));
        if !cpu.is_empty() && cpu.len() == self.cpu.len() {
            if let Some(p) = busy_percent(self.cpu[0], cpu[0]) {
                out.push(Sample::new(metric::CPU_PERCENT, p));
            }
            for (i, (b, a)) in self.cpu.iter().zip(&cpu).enumerate().skip(1).take(MAX_ITEMS * 4) {
                if let Some(p) = busy_percent(*b, *a) {
                    out.push(Sample::labelled(metric::CPU_CORE_PERCENT, "core", &(i - 1).to_string(), p));
                }
            }
        }
        let cpu_delta = match (self.cpu.first(), cpu.first()) {
            (Some(b), Some(a)) => a.total.saturating_sub(b.total),
            _ => 0,
        };
        let cores = cpu.len().saturating_sub(1).max(1) as f64;
        self.cpu = cpu;

        let load: Vec<f64> =
            self.read("loadavg").split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
        for (name, v) in [metric::LOAD1, metric::LOAD5, metric::LOAD15].iter().zip(&load) {
            out.push(Sample::new(name, *v));
        }

        let mem = parse_meminfo(&self.read("meminfo"));
        if let (Some(total), Some(avail)) = (mem.get("MemTotal"), mem.get("MemAvailable")) {
            let used = total.saturating_sub(*avail) * 1024;
            out.push(Sample::new(metric::MEM_TOTAL_BYTES, (*total * 1024) as f64));
            out.push(Sample::new(metric::MEM_USED_BYTES, used as f64));
            if *total > 0 {
                out.push(Sample::new(metric::MEM_PERCENT, 100.0 * used as f64 / (*total * 1024) as f64));
            }
        }
        if let (Some(total), Some(free)) = (mem.get("SwapTotal"), mem.get("SwapFree")) {
            out.push(Sample::new(metric::SWAP_TOTAL_BYTES, (*total * 1024) as f64));
            out.push(Sample::new(metric::SWAP_USED_BYTES, (total.saturating_sub(*free) * 1024) as f64));
        }

        for (mnt, _) in parse_mounts(&self.read("mounts")) {
            if let Ok(st) = rustix::fs::statvfs(mnt.as_str()) {
                let total = st.f_blocks * st.f_frsize;
                let free = st.f_bavail * st.f_frsize;
                let used = (st.f_blocks.saturating_sub(st.f_bfree)) * st.f_frsize;
                if total == 0 {
                    continue;
                }
                out.push(Sample::labelled(metric::DISK_TOTAL_BYTES, "mount", &mnt, total as f64));
                out.push(Sample::labelled(metric::DISK_USED_BYTES, "mount", &mnt, used as f64));
                let pct = 100.0 * used as f64 / (used + free).max(1) as f64;
                out.push(Sample::labelled(metric::DISK_PERCENT, "mount", &mnt, pct));
            }
        }

        let disks = parse_diskstats(&self.read("diskstats"));
        if let Some(s) = secs {
            for (dev, (r, w)) in disks.iter().take(MAX_ITEMS) {
                if let Some((r0, w0)) = self.disks.get(dev) {
                    out.push(Sample::labelled(
                        metric::DISK_READ_BPS,
                        "device",
                        dev,
                        (r.saturating_sub(*r0) * 512) as f64 / s,
                    ));
                    out.push(Sample::labelled(
                        metric::DISK_WRITE_BPS,
                        "device",
                        dev,
                        (w.saturating_sub(*w0) * 512) as f64 / s,
                    ));
                }
            }
        }
        self.disks = disks;
        let nets = parse_netdev(&self.read("net/dev"));
        if let Some(s) = secs {
            for (iface, (rx, tx)) in nets.iter().take(MAX_ITEMS) {
                if let Some((rx0, tx0)) = self.nets.get(iface) {
                    out.push(Sample::labelled(
                        metric::NET_RX_BPS,
                        "iface",
                        iface,
                        rx.saturating_sub(*rx0) as f64 / s,
                    ));
                    out.push(Sample::labelled(
                        metric::NET_TX_BPS,
                        "iface",
                        iface,
                        tx.saturating_sub(*tx0) as f64 / s,
                    ));
                }
            }
        }
        self.nets = nets;

        if let Some(up) = self.read("uptime").split_whitespace().next().and_then(|x| x.parse::<f64>().ok()) {
            out.push(Sample::new(metric::UPTIME_SECS, up));
        }
        let procs = self.top_processes(cpu_delta, cores);
        self.last_ms = now_ms;
        out.retain(|s| s.value.is_finite());
        for s in &mut out {
            s.value = stored_precision(&s.name, s.value);
        }
        (out, procs)
    }

    /// Top processes by CPU since the previous collection.
    fn top_processes(&mut self, cpu_delta: u64, cores: f64) -> Vec<ProcessInfo> {
        let page = 4096;
        let mut now = BTreeMap::new();
        let mut list = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else { return list };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Some(p) = read_proc(&e.path(), page) else { continue };
            now.insert(pid, p.ticks);
            let delta = self.procs.get(&pid).map(|t| p.ticks.saturating_sub(*t)).unwrap_or(0);
            // share of all CPU time, scaled to "percent of one core"
            let cpu = if cpu_delta > 0 { 100.0 * delta as f64 / cpu_delta as f64 * cores } else { 0.0 };
            list.push(ProcessInfo {
                pid,
                name: p.name,
                user: p.uid.and_then(|u| self.users.get(&u).cloned()),
                cpu_percent: stored_precision("cpu_percent", cpu) as f32,
                mem_bytes: p.rss_bytes,
            });
        }
        self.procs = now;
        list.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent).then(b.mem_bytes.cmp(&a.mem_bytes)));
        list.truncate(TOP_PROCESSES);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_between_two_readings() {
        let a = parse_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n");
        let b = parse_stat("cpu  200 0 200 1300 300 0 0 0 0 0\ncpu0 100 0 100 650 150 0 0 0 0 0\n");
        assert_eq!(a.len(), 2);
        // total +1000, idle(+iowait) +800 → 20 % busy
        assert_eq!(busy_percent(a[0], b[0]), Some(20.0));
        assert_eq!(busy_percent(b[0], a[0]), None, "counters going backwards give nothing");
    }

    #[test]
    fn meminfo_mounts_disks_and_nets() {
        let m = parse_meminfo(
            "MemTotal:       16000000 kB\nMemAvailable:    4000000 kB\nHugePages_Total:       0\n",
        );
        assert_eq!(m["MemTotal"], 16_000_000);
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sda1 /var/lib/docker ext4 rw 0 0\n/dev/sdb1 /srv\\040data xfs rw 0 0\n",
        );
        assert_eq!(
            mounts,
            vec![("/".to_string(), "ext4".to_string()), ("/srv data".to_string(), "xfs".to_string())]
        );
        let d = parse_diskstats(
            "   8       0 sda 100 0 2000 0 50 0 4000 0 0 0 0\n   8       1 sda1 1 0 2 0 3 0 4 0 0 0 0\n   7       0 loop0 1 0 2 0 3 0 4 0 0 0 0\n 259 0 nvme0n1 5 0 6 0 7 0 8 0 0 0 0\n 259 1 nvme0n1p1 5 0 6 0 7 0 8 0 0 0 0\n",
        );
        assert_eq!(d.keys().cloned().collect::<Vec<_>>(), vec!["nvme0n1".to_string(), "sda".to_string()]);
        assert_eq!(d["sda"], (2000, 4000));
        let n = parse_netdev(
            "Inter-|   Receive\n face |bytes\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n",
        );
        assert_eq!(n.len(), 1);
        assert_eq!(n["eth0"], (1000, 500));
    }

    #[test]
    fn this_machine_collects_real_values() {
        let mut c = Collector::new("/proc");
        let (first, _) = c.collect(1_000);
        assert!(first.iter().any(|s| s.name == metric::MEM_PERCENT), "{first:?}");
        assert!(first.iter().any(|s| s.name == metric::DISK_PERCENT || s.name == metric::UPTIME_SECS));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (second, procs) = c.collect(1_200);
        let cpu = second.iter().find(|s| s.name == metric::CPU_PERCENT).expect("cpu after two readings");
        assert!((0.0..=100.0).contains(&cpu.value));
        assert!(!procs.is_empty() && procs.len() <= TOP_PROCESSES);
        assert!(second.iter().all(|s| s.value.is_finite()));
        for s in second.iter().filter(|s| s.name.ends_with("_percent")) {
            assert_eq!((s.value * 100.0).round() / 100.0, s.value, "{} has more than two decimals", s.name);
        }
        for s in second.iter().filter(|s| s.name.ends_with("_per_sec")) {
            assert_eq!(s.value.fract(), 0.0, "{} is not whole bytes per second", s.name);
        }
    }

    #[test]
    fn a_missing_proc_tree_yields_no_samples_instead_of_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(dir.path());
        for t in [1_000, 16_000] {
            let (samples, procs) = c.collect(t);
            assert!(samples.iter().all(|s| s.name != metric::CPU_PERCENT), "{samples:?}");
            assert!(procs.is_empty());
        }
    }
}
