//! pgbench's script of a join: the statements one real join sends, recorded from the store and
//! written out for pgbench, so that `bench throughput` compares the end-to-end rate with the
//! same SQL run with no client logic around it, rather than with a hand-written copy that can
//! drift from what the store builds.
//!
//! One join of the instant fake runs on a scratch database with an observed store (as in
//! `bench history`); its statements are the pick, the take, the gate and the decision. Each
//! bound value becomes pgbench text: the target's id `:tid`, the account's `:aid`, the epoch
//! the take returned `:p_taken_epoch` (the take's row is kept with `\gset p_`, as the worker
//! keeps it), a moment `now()` plus its offset from the join's start in whole seconds, and
//! anything else the literal it was. The ids and the epoch are made distinctive before the
//! join, so no constant of a statement is mistaken for one of them.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::Value;
use smart_joiner::domain::TargetLink;
use smart_joiner::store::Limits;

use crate::env::FreshDb;
use crate::history::{join, kind_of, service};

/// The recorded join's account id, target ids and epoch start here: numbers no statement holds
/// as a constant.
const ACCOUNT_ID: i64 = 900_001;
const FIRST_TARGET_ID: i64 = 800_001;
const EPOCH_BEFORE: i64 = 700_000;
/// Joins before the recorded one, so one-off statements (the clock's first reading) are past.
const WARM_UP: usize = 3;

/// The kinds of a join's statements, in the order a join sends them.
const KINDS: [&str; 4] = ["pick", "take", "gate", "decision"];

/// Records one join under `limits` and returns the pgbench script of its statements. The
/// script expects the variables `tid` and `aid` to be set by lines the caller puts before it.
pub async fn record(limits: Limits) -> anyhow::Result<String> {
    let db = FreshDb::create("joinsql").await?;
    let result = record_on(&db, limits).await;
    db.drop_db().await;
    result
}

async fn record_on(db: &FreshDb, limits: Limits) -> anyhow::Result<String> {
    db.exec(&format!(
        "SELECT setval(pg_get_serial_sequence('accounts', 'id'), {}), \
                setval(pg_get_serial_sequence('targets', 'id'), {})",
        ACCOUNT_ID - 1,
        FIRST_TARGET_ID - 1
    ))
    .await?;
    let names = vec!["recorded".to_owned()];
    db.store.sync_accounts(&names, "default").await?;
    let links: Vec<TargetLink> = (0..=WARM_UP)
        .map(|i| TargetLink::parse(&format!("@recorded_{i}")))
        .collect::<Result<_, _>>()?;
    db.store.import_targets(&links, "recorded").await?;
    let queued = db.store.queue_new_targets("recorded", links.len() as u64, db.store.now()).await?;
    anyhow::ensure!(
        queued.len() == links.len(),
        "queued {} of {} targets",
        queued.len(),
        links.len()
    );
    let mut ids: Vec<i64> = queued.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    let recorded_target = ids.pop().ok_or_else(|| anyhow::anyhow!("no target was queued"))?;

    type Seen = Vec<(String, Vec<Value>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let observed = {
        let seen = seen.clone();
        db.store.observed(move |info| {
            let values = info.statement.values.as_ref().map(|v| v.0.clone()).unwrap_or_default();
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push((info.statement.sql.clone(), values));
        })
    };
    let svc = service(&observed, &names, limits)?;
    for id in ids {
        join(&svc, id).await?;
    }
    db.exec(&format!("UPDATE accounts SET lease_epoch = {EPOCH_BEFORE}")).await?;
    seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let start = db.store.now();
    join(&svc, recorded_target).await?;
    let statements = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));

    let kinds: Vec<&str> = statements.iter().map(|(sql, _)| kind_of(sql)).collect();
    anyhow::ensure!(
        kinds == KINDS,
        "one join sent {kinds:?}; pgbench's script expects exactly {KINDS:?}"
    );
    let ctx = Substitution { target: recorded_target, epoch: EPOCH_BEFORE + 1, start };
    let mut script = String::new();
    for (kind, (sql, values)) in KINDS.iter().zip(&statements) {
        let text = ctx.render(sql, values, *kind != "take" && *kind != "pick")?;
        script.push_str(&text);
        // The take's row (the epoch it took) is what the gate and the decision are fenced by.
        script.push_str(if *kind == "take" { "\n\\gset p_\n" } else { ";\n" });
    }
    Ok(script)
}

struct Substitution {
    target: i64,
    epoch: i64,
    start: DateTime<Utc>,
}

impl Substitution {
    /// `sql` with every `$n` replaced by pgbench text for `values[n - 1]`; `after_take` says
    /// whether the take's epoch is known (only then is a value equal to it the epoch).
    fn render(&self, sql: &str, values: &[Value], after_take: bool) -> anyhow::Result<String> {
        let mut out = String::with_capacity(sql.len() + values.len() * 8);
        let mut chars = sql.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '$' {
                // pgbench reads a line break as the end of the statement.
                out.push(if c == '\n' { ' ' } else { c });
                continue;
            }
            let mut digits = String::new();
            while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            let n: usize =
                digits.parse().map_err(|_| anyhow::anyhow!("a `$` without a number in {sql}"))?;
            let value = values
                .get(n.wrapping_sub(1))
                .ok_or_else(|| anyhow::anyhow!("${n} has no value ({} bound)", values.len()))?;
            out.push_str(&self.value(value, after_take)?);
        }
        Ok(out)
    }

    fn value(&self, value: &Value, after_take: bool) -> anyhow::Result<String> {
        let int = |v: i64| {
            if v == ACCOUNT_ID {
                ":aid".to_owned()
            } else if v == self.target {
                ":tid".to_owned()
            } else if after_take && v == self.epoch {
                ":p_taken_epoch".to_owned()
            } else {
                v.to_string()
            }
        };
        Ok(match value {
            Value::BigInt(Some(v)) => int(*v),
            Value::Int(Some(v)) => int(i64::from(*v)),
            Value::SmallInt(Some(v)) => int(i64::from(*v)),
            Value::BigUnsigned(Some(v)) => int(i64::try_from(*v)?),
            Value::Unsigned(Some(v)) => int(i64::from(*v)),
            Value::Bool(Some(v)) => v.to_string().to_uppercase(),
            Value::String(Some(s)) => format!("'{}'", s.replace('\'', "''")),
            Value::ChronoDateTimeUtc(Some(t)) => {
                let secs = ((*t - self.start).num_milliseconds() as f64 / 1000.0).round() as i64;
                if secs == 0 {
                    "now()".to_owned()
                } else {
                    format!("(now() + interval '{secs} seconds')")
                }
            }
            v if is_null(v) => "NULL".to_owned(),
            other => anyhow::bail!("a bound value of a type the script cannot write: {other:?}"),
        })
    }
}

/// Whether `v` is SQL NULL (any type's `None`).
fn is_null(v: &Value) -> bool {
    matches!(
        v,
        Value::BigInt(None)
            | Value::Int(None)
            | Value::SmallInt(None)
            | Value::BigUnsigned(None)
            | Value::Unsigned(None)
            | Value::Bool(None)
            | Value::String(None)
            | Value::ChronoDateTimeUtc(None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_value_becomes_the_pgbench_text_it_stands_for() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        let ctx = Substitution { target: 800_004, epoch: 700_001, start };
        let at =
            |secs: i64| Value::ChronoDateTimeUtc(Some(start + chrono::Duration::seconds(secs)));
        let mut values = vec![
            Value::BigInt(Some(ACCOUNT_ID)),
            Value::BigInt(Some(800_004)),
            Value::BigInt(Some(700_001)),
            Value::String(Some("it's".to_owned())),
            at(0),
            at(20),
            at(-86_400),
            Value::String(None),
            Value::Bool(Some(true)),
        ];
        // $10 and $11 must not be read as $1 followed by a digit.
        values.push(Value::Int(Some(4)));
        values.push(Value::BigInt(Some(1)));
        let sql = "a = $1\nAND t = $2 AND e = $3 AND s = $4 AND n = $5 AND h = $6 AND d = $7 \
                   AND x = $8 AND b = $9 AND l = $10 AND i = $11";
        let after = ctx.render(sql, &values, true).unwrap();
        assert_eq!(
            after,
            "a = :aid AND t = :tid AND e = :p_taken_epoch AND s = 'it''s' AND n = now() \
             AND h = (now() + interval '20 seconds') AND d = (now() + interval '-86400 seconds') \
             AND x = NULL AND b = TRUE AND l = 4 AND i = 1"
        );
        // Before the take the epoch is not known: the same number is only a number.
        let before = ctx.render("e = $3", &values, false).unwrap();
        assert_eq!(before, "e = 700001");
        let missing = ctx.render("e = $12", &values, false).unwrap_err().to_string();
        assert!(missing.contains("$12 has no value"), "{missing}");
    }
}
