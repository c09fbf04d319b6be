//! What a run cost a Redis server: `INFO commandstats` and `INFO cpu` read before and after,
//! and the difference per job.

use std::collections::BTreeMap;

use anyhow::Context;

/// Commands the system only ever sends on their own (never from inside one of its Lua scripts
/// or apalis-redis'): each call is one round trip. With `EVAL`/`EVALSHA` (one round trip per
/// script call, whatever the script runs inside) they make the round trips of a run.
const TOP_LEVEL_ONLY: &[&str] =
    &["eval", "evalsha", "script", "set", "exists", "llen", "zcard", "zcount", "ping", "scan"];

/// Calls per command and the server's CPU seconds, at one moment.
#[derive(Debug, Clone, Default)]
pub struct RedisSnapshot {
    calls: BTreeMap<String, u64>,
    cpu_seconds: f64,
}

impl RedisSnapshot {
    /// Reads the counters of the server at `url`.
    pub async fn take(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("redis url")?;
        let mut conn = client.get_multiplexed_async_connection().await.context("connect redis")?;
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        Ok(Self::parse(&stats, &cpu))
    }

    fn parse(commandstats: &str, cpu: &str) -> Self {
        let mut calls = BTreeMap::new();
        for line in commandstats.lines() {
            let Some((name, rest)) =
                line.trim().strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let n = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            calls.insert(name.to_owned(), n);
        }
        let cpu_seconds = cpu
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                matches!(k, "used_cpu_sys" | "used_cpu_user").then(|| v.parse::<f64>().ok())?
            })
            .sum();
        RedisSnapshot { calls, cpu_seconds }
    }

    /// What happened between `self` (earlier) and `later`, the `INFO` calls of the
    /// measurement itself left out.
    pub fn until(&self, later: &RedisSnapshot) -> RedisDelta {
        let mut calls = BTreeMap::new();
        for (name, n) in &later.calls {
            let d = n.saturating_sub(self.calls.get(name).copied().unwrap_or(0));
            if d > 0 && name != "info" {
                calls.insert(name.clone(), d);
            }
        }
        RedisDelta { calls, cpu_seconds: (later.cpu_seconds - self.cpu_seconds).max(0.0) }
    }
}

/// Commands and CPU of a Redis server over a run.
#[derive(Debug, Clone, Default)]
pub struct RedisDelta {
    pub calls: BTreeMap<String, u64>,
    pub cpu_seconds: f64,
}

impl RedisDelta {
    /// `self` plus `other`: the commands and the CPU of both stretches.
    pub fn add(&mut self, other: &RedisDelta) {
        for (name, n) in &other.calls {
            *self.calls.entry(name.clone()).or_default() += n;
        }
        self.cpu_seconds += other.cpu_seconds;
    }

    /// Every command executed, those run inside scripts included.
    pub fn commands(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Requests clients sent: script calls plus the commands never run from a script.
    pub fn round_trips(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(n, _)| TOP_LEVEL_ONLY.contains(&n.as_str()))
            .map(|(_, c)| c)
            .sum()
    }

    /// Redis' CPU µs per job.
    pub fn cpu_us_per_job(&self, jobs: u64) -> f64 {
        self.cpu_seconds * 1e6 / jobs.max(1) as f64
    }

    /// One line per job: commands, round trips, CPU, and the commonest commands.
    pub fn per_job(&self, jobs: u64) -> String {
        let cpu = self.cpu_us_per_job(jobs);
        let jobs = jobs.max(1) as f64;
        let mut top: Vec<(&String, &u64)> = self.calls.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> =
            top.iter().take(10).map(|(n, c)| format!("{n} {:.2}", **c as f64 / jobs)).collect();
        format!(
            "{:.1} commands/job (scripts' inner commands included), {:.2} round trips/job, {:.0} µs Redis CPU/job; per job: {}",
            self.commands() as f64 / jobs,
            self.round_trips() as f64 / jobs,
            cpu,
            top.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_and_subtracts() {
        let before = RedisSnapshot::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=2,usec=5,usec_per_call=2.5,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=1,usec=1\r\n",
            "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.0\r\nused_cpu_sys_children:9\r\n",
        );
        let after = RedisSnapshot::parse(
            "cmdstat_evalsha:calls=12,usec=50\r\ncmdstat_hset:calls=30,usec=50\r\ncmdstat_info:calls=3,usec=1\r\n",
            "used_cpu_sys:2.0\r\nused_cpu_user:3.0\r\n",
        );
        let d = before.until(&after);
        assert_eq!(d.commands(), 40);
        assert_eq!(d.round_trips(), 10);
        assert!((d.cpu_seconds - 1.5).abs() < 1e-9);
        assert!(d.per_job(10).starts_with("4.0 commands/job"), "{}", d.per_job(10));
    }
}
