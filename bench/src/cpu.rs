//! Where a run's CPU goes: the CPU time (user + system) of the processes a benchmark runs
//! beside each other, read from `/proc` (Linux only), so a figure can say how much of the two
//! cores a join costs in Postgres, in the workers and in the bench's other children, instead
//! of only a rate that moves with everything else on the machine.

use std::collections::HashMap;
use std::time::Duration;

/// The kernel's clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux/x86).
/// Asked once per process.
fn ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// One process' `/proc/<pid>/stat`: its name, parent, own CPU ticks and its reaped children's.
struct Stat {
    comm: String,
    ppid: u32,
    own: u64,
    children: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: the name may hold spaces and parentheses, so split at the
    // last `)`. Fields after it start at field 3 (state).
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        ppid: field(4)? as u32,
        own: field(14)? + field(15)?,
        children: field(16)? + field(17)?,
    })
}

/// CPU ticks of the whole Postgres server: every live `postgres` process, plus what the
/// postmaster's exited children (closed connections) used. Every cluster of the machine counts,
/// so a figure is the benchmark's only while no other cluster is busy.
fn postgres_ticks(all: &HashMap<u32, Stat>) -> u64 {
    all.values()
        .filter(|s| s.comm == "postgres")
        .map(|s| {
            let postmaster = all.get(&s.ppid).is_none_or(|p| p.comm != "postgres");
            s.own + if postmaster { s.children } else { 0 }
        })
        .sum()
}

fn all_processes() -> HashMap<u32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashMap::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// CPU time of this process' reaped children (the producer runs, pgbench).
fn reaped_children() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec().max(0) as u64, (tv.tv_usec().max(0) as u32) * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// The CPU time used so far by Postgres, by the processes `pids` (the workers, alive), by this
/// process' reaped children and by this process itself.
pub struct CpuSnapshot {
    hz: f64,
    postgres: u64,
    pids: u64,
    reaped: Duration,
    me: u64,
}

impl CpuSnapshot {
    pub fn take(pids: &[u32]) -> Self {
        let all = all_processes();
        let me = all.get(&std::process::id()).map_or(0, |s| s.own);
        CpuSnapshot {
            hz: ticks_per_second(),
            postgres: postgres_ticks(&all),
            pids: pids.iter().filter_map(|p| all.get(p)).map(|s| s.own).sum(),
            reaped: reaped_children(),
            me,
        }
    }

    /// What was used between `self` and `later`, in µs per unit of work (`per`, a join).
    pub fn until(&self, later: &CpuSnapshot, per: u64) -> CpuUse {
        let per = per.max(1) as f64;
        let us = |ticks: u64, was: u64| ticks.saturating_sub(was) as f64 / self.hz * 1e6 / per;
        CpuUse {
            postgres: us(later.postgres, self.postgres),
            pids: us(later.pids, self.pids),
            reaped: (later.reaped.saturating_sub(self.reaped)).as_secs_f64() * 1e6 / per,
            me: us(later.me, self.me),
        }
    }
}

/// CPU µs per unit of work, by whom.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub postgres: f64,
    pub pids: f64,
    pub reaped: f64,
    pub me: f64,
}

impl CpuUse {
    /// `self` plus `other`, process by process.
    pub fn add(&mut self, other: &CpuUse) {
        self.postgres += other.postgres;
        self.pids += other.pids;
        self.reaped += other.reaped;
        self.me += other.me;
    }

    /// `self` with every figure divided by `n` (µs in all to µs per unit of work).
    pub fn per(&self, n: u64) -> CpuUse {
        let n = n.max(1) as f64;
        CpuUse {
            postgres: self.postgres / n,
            pids: self.pids / n,
            reaped: self.reaped / n,
            me: self.me / n,
        }
    }

    /// Every process counted, in µs per unit of work.
    pub fn total(&self) -> f64 {
        self.postgres + self.pids + self.reaped + self.me
    }

    /// `postgres 1180 µs, workers 560 µs, producer 12 µs, bench 20 µs; in all 1772 µs`, naming
    /// `pids` (left out when `None`) and the reaped children as the caller knows them.
    pub fn describe(&self, pids: Option<&str>, reaped: &str) -> String {
        let pids = pids.map(|name| format!("{name} {:.0} µs, ", self.pids)).unwrap_or_default();
        format!(
            "postgres {:.0} µs, {pids}{reaped} {:.0} µs, bench {:.0} µs; in all {:.0} µs",
            self.postgres,
            self.reaped,
            self.me,
            self.total()
        )
    }
}
