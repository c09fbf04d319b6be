//! The pages: each reads what it shows through the store's report and browse queries and
//! renders it as HTML (every database value escaped).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;

use super::html::{self, Tab, Visitor, esc, name, q, time, time_opt, until};
use super::{Access, Shared, charts};
use crate::domain::{AccountStatus, TargetStatus};
use crate::store::{AccountOverview, AttemptRow, StoreError, Target, TargetFilter};

/// Rows a list shows at most.
const LIST_LIMIT: u64 = 500;
/// Attempts shown on an account's or a group's page.
const HISTORY_LIMIT: u64 = 200;
/// Attempts in the live tail.
const TAIL_LIMIT: u64 = 30;
/// Rows of the CSV export at most.
const CSV_LIMIT: u64 = 1_000_000;

/// A page, or the error that kept it from being built.
pub(super) type PageResult = Result<Response, PageError>;

/// A store error shown as a 500 page (its text carries no password).
pub(super) struct PageError(StoreError);

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self.0, "console: a page failed");
        (StatusCode::INTERNAL_SERVER_ERROR, format!("the database failed: {}\n", self.0))
            .into_response()
    }
}

pub(super) fn visitor<'a>(c: &super::Console, access: &'a Access) -> Visitor<'a> {
    Visitor { actor: access.actor(), actions_enabled: c.auth.actions_enabled() }
}

pub(super) fn ok(title: &str, tab: Tab, v: &Visitor<'_>, body: &str) -> PageResult {
    Ok(Html(html::page(title, tab, v, body)).into_response())
}

/// A hidden CSRF field for the request's credential.
pub(super) fn csrf_field(c: &super::Console, headers: &HeaderMap) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", c.auth.csrf_token(headers))
}

/// `?notice=` after an action: fixed texts only, so a crafted link cannot put words on a page.
fn notice(code: Option<&str>) -> String {
    let text = match code {
        Some("paused") => {
            "Account paused: it is not picked again until resumed. A join it had under way finishes."
        }
        Some("resumed") => "Account resumed: it is picked again once any rest it has ends.",
        Some("retried") => "Group moved back to new: the next batch tries it again.",
        Some("released") => "Pin released: the group is new again and any account may take it.",
        Some("imported") => "Targets imported (see the audit log for the counts).",
        _ => return String::new(),
    };
    format!("<div class=\"notice\" role=\"status\">{text}</div>")
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NoticeQuery {
    notice: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// pools

pub(super) async fn pools(State(c): Shared, Extension(access): Extension<Access>) -> PageResult {
    let now = Utc::now();
    let overview = c.store.account_overview(None, now).await?;
    let mut by_pool: BTreeMap<String, Vec<&AccountOverview>> = BTreeMap::new();
    for a in &overview {
        by_pool.entry(a.account.pool.clone()).or_default().push(a);
    }
    let mut body = String::from("<h1>Pools</h1>");
    if by_pool.is_empty() {
        body.push_str(
            "<p class=\"muted\">No account yet: run <code>smart-joiner accounts sync</code>.</p>",
        );
    }
    for (pool, accounts) in &by_pool {
        let workable = c.store.eligible_accounts(pool, now, &[], &c.limits, 100_000).await?.len();
        let next_free = c
            .store
            .earliest_eligible_at(pool, now, &[], &c.limits, std::time::Duration::ZERO)
            .await?;
        let working: Vec<_> = accounts.iter().filter(|a| a.account.status.can_work()).collect();
        let resting = working
            .iter()
            .filter(|a| a.account.next_allowed_action_time.is_some_and(|t| t > now))
            .count();
        let joins: u64 = accounts.iter().map(|a| a.joins_24h).sum();
        let bound: u64 = accounts.iter().map(|a| a.bound).sum();
        let join_cap = u64::from(c.limits.daily_join_cap) * working.len() as u64;
        let channel_cap = u64::from(c.limits.channel_limit) * accounts.len() as u64;
        let mut counts: BTreeMap<u8, (AccountStatus, u64)> = BTreeMap::new();
        for a in accounts {
            counts.entry(a.account.status.severity()).or_insert((a.account.status, 0)).1 += 1;
        }
        let _ = write!(
            body,
            "<section class=\"pool\" data-pool=\"{p}\"><h2>Pool {p}</h2><div class=\"cards\">\
             <div class=\"card\"><div class=\"n\" data-k=\"accounts\">{n}</div><div class=\"l\">accounts</div></div>\
             <div class=\"card\"><div class=\"n\" data-k=\"workable\">{workable}</div><div class=\"l\">workable now</div></div>\
             <div class=\"card\"><div class=\"n\" data-k=\"resting\">{resting}</div><div class=\"l\">resting</div></div>\
             <div class=\"card\"><div class=\"l\">next account free</div><div data-k=\"next-free\">{next}</div></div>\
             <div class=\"card\"><div class=\"l\">joins in the last 24 h (cap {cap} per account)</div><div data-k=\"joins\">{joins_bar}</div></div>\
             <div class=\"card\"><div class=\"l\">bound groups (limit {limit} per account)</div><div data-k=\"bound\">{bound_bar}</div></div>\
             </div><h2>Accounts by status</h2><table class=\"narrow\"><tr><th>status</th><th class=\"num\">accounts</th></tr>",
            p = esc(pool),
            n = accounts.len(),
            next = match next_free {
                Some(t) => until(Some(t), now),
                None => "never: no account can work without an operator".to_owned(),
            },
            cap = c.limits.daily_join_cap,
            joins_bar = html::bar(joins, join_cap),
            limit = c.limits.channel_limit,
            bound_bar = html::bar(bound, channel_cap),
        );
        for (status, n) in counts.values() {
            let _ = write!(
                body,
                "<tr><td><a href=\"/accounts?pool={pq}&amp;status={s}\">{b}</a></td>\
                 <td class=\"num\" data-status=\"{s}\">{n}</td></tr>",
                pq = q(pool),
                s = status.as_str(),
                b = html::account_badge(*status),
            );
        }
        body.push_str("</table>");
        if let Some(queues) = &c.queues {
            let depth = tokio::time::timeout(super::CHECK_TIMEOUT, queues.depth(pool)).await;
            let _ = match depth {
                Ok(Ok((ready, scheduled))) => write!(
                    body,
                    "<p>Redis queue: <span data-k=\"redis-ready\">{ready}</span> jobs ready, \
                     <span data-k=\"redis-scheduled\">{scheduled}</span> scheduled</p>"
                ),
                Ok(Err(e)) => {
                    write!(body, "<p class=\"refused\">Redis queue: {}</p>", esc(&e.detail()))
                }
                Err(_) => write!(body, "<p class=\"refused\">Redis queue: no answer in time</p>"),
            };
        }
        body.push_str("</section>");
    }

    // Targets: per niche and status, and the queue as the database sees it.
    let counts = c.store.target_counts().await?;
    let queued = c.store.queued_counts(now).await?;
    body.push_str("<h2>Groups by niche</h2>");
    body.push_str(&status_grid(&counts));
    body.push_str(
        "<h2>Queue</h2><p class=\"muted\">Queued groups in the database: due now (a job runs \
         or the producer re-enqueues it) and scheduled later (a FloodWait or a pacing wait).</p>\
         <table><tr><th>niche</th><th class=\"num\">due</th><th class=\"num\">scheduled</th></tr>",
    );
    if queued.is_empty() {
        body.push_str("<tr><td colspan=\"3\" class=\"muted\">nothing queued</td></tr>");
    }
    for row in &queued {
        let _ = write!(
            body,
            "<tr data-niche=\"{n}\"><td>{n}</td><td class=\"num\" data-k=\"due\">{}</td>\
             <td class=\"num\" data-k=\"scheduled\">{}</td></tr>",
            row.due,
            row.scheduled,
            n = esc(&row.niche)
        );
    }
    body.push_str("</table>");
    let v = visitor(&c, &access);
    ok("Pools", Tab::Pools, &v, &body)
}

/// Niches down, statuses across, each count a link to the filtered list.
fn status_grid(counts: &[crate::store::TargetCount]) -> String {
    let mut grid: BTreeMap<&str, HashMap<TargetStatus, u64>> = BTreeMap::new();
    for c in counts {
        *grid.entry(c.niche.as_str()).or_default().entry(c.status).or_default() += c.count;
    }
    let mut s = String::from("<table><tr><th>niche</th>");
    for st in TargetStatus::ALL {
        let _ = write!(s, "<th class=\"num\">{}</th>", st.as_str());
    }
    s.push_str("<th class=\"num\">total</th></tr>");
    if grid.is_empty() {
        s.push_str("<tr><td colspan=\"9\" class=\"muted\">no group yet</td></tr>");
    }
    for (niche, by_status) in &grid {
        let _ = write!(s, "<tr data-niche=\"{}\"><td>{}</td>", esc(niche), esc(niche));
        for st in TargetStatus::ALL {
            let n = by_status.get(st).copied().unwrap_or(0);
            if n == 0 {
                let _ = write!(s, "<td class=\"num muted\" data-status=\"{}\">0</td>", st.as_str());
            } else {
                let _ = write!(
                    s,
                    "<td class=\"num\" data-status=\"{st}\"><a href=\"/groups?niche={nq}&amp;status={st}\">{n}</a></td>",
                    st = st.as_str(),
                    nq = q(niche)
                );
            }
        }
        let total: u64 = by_status.values().sum();
        let _ = write!(s, "<td class=\"num\" data-k=\"total\">{total}</td></tr>");
    }
    s.push_str("</table>");
    s
}

// ---------------------------------------------------------------------------------------------
// accounts

#[derive(Debug, Default, Deserialize)]
pub(super) struct AccountsQuery {
    pool: Option<String>,
    status: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
}

fn empty_none(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub(super) async fn accounts(
    State(c): Shared,
    Extension(access): Extension<Access>,
    Query(f): Query<AccountsQuery>,
) -> PageResult {
    let now = Utc::now();
    let all = c.store.account_overview(None, now).await?;
    let last = c.store.last_attempt_at().await?;
    let mut pools: Vec<&str> = all.iter().map(|a| a.account.pool.as_str()).collect();
    pools.sort_unstable();
    pools.dedup();
    let pool = empty_none(&f.pool);
    let status = empty_none(&f.status).and_then(AccountStatus::parse);
    let needle = empty_none(&f.q).map(str::to_lowercase);
    let mut rows: Vec<&AccountOverview> = all
        .iter()
        .filter(|a| pool.is_none_or(|p| a.account.pool == p))
        .filter(|a| status.is_none_or(|s| a.account.status == s))
        .filter(|a| {
            needle.as_deref().is_none_or(|n| a.account.session_name.to_lowercase().contains(n))
        })
        .collect();
    let sort = empty_none(&f.sort).unwrap_or("name");
    let desc = empty_none(&f.dir) == Some("desc");
    rows.sort_by(|a, b| {
        let o = match sort {
            "status" => a.account.status.severity().cmp(&b.account.status.severity()),
            "next" => a.account.next_allowed_action_time.cmp(&b.account.next_allowed_action_time),
            "joins" => a.joins_24h.cmp(&b.joins_24h),
            "bound" => a.bound.cmp(&b.bound),
            "last" => last.get(&a.account.id).cmp(&last.get(&b.account.id)),
            "pool" => a.account.pool.cmp(&b.account.pool),
            _ => a.account.session_name.cmp(&b.account.session_name),
        };
        let o = o.then(a.account.id.cmp(&b.account.id));
        if desc { o.reverse() } else { o }
    });

    let mut body = String::from(
        "<h1>Accounts</h1><form class=\"filters\" method=\"get\" action=\"/accounts\">",
    );
    let _ = write!(body, "<label>pool<select name=\"pool\"><option value=\"\">all</option>");
    for p in &pools {
        let sel = if pool == Some(*p) { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{0}\"{sel}>{0}</option>", esc(p));
    }
    body.push_str(
        "</select></label><label>status<select name=\"status\"><option value=\"\">all</option>",
    );
    for s in AccountStatus::ALL {
        let sel = if status == Some(*s) { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{}</option>", s.as_str());
    }
    let _ = write!(
        body,
        "</select></label><label>name<input name=\"q\" value=\"{}\" placeholder=\"part of a name\"></label>\
         <input type=\"hidden\" name=\"sort\" value=\"{}\"><button type=\"submit\">Filter</button></form>",
        esc(needle.as_deref().unwrap_or("")),
        esc(sort)
    );
    let _ = write!(
        body,
        "<p class=\"muted\" data-k=\"shown\">{} of {} accounts</p>",
        rows.len(),
        all.len()
    );
    let base = format!(
        "/accounts?pool={}&amp;status={}&amp;q={}",
        q(pool.unwrap_or("")),
        status.map_or("", |s| s.as_str()),
        q(needle.as_deref().unwrap_or(""))
    );
    let head = |key: &str, label: &str, num: bool| {
        let dir = if sort == key && !desc { "desc" } else { "asc" };
        let arrow = match (sort == key, desc) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        let class = if num { " class=\"num\"" } else { "" };
        format!(
            "<th{class}><a href=\"{base}&amp;sort={key}&amp;dir={dir}\" data-sort=\"{key}\">{label}{arrow}</a></th>"
        )
    };
    body.push_str("<table id=\"accounts\"><tr>");
    for (key, label, num) in [
        ("name", "account", false),
        ("pool", "pool", false),
        ("status", "status", false),
        ("next", "next allowed action", false),
        ("joins", "joins 24 h", true),
        ("bound", "bound", true),
        ("last", "last attempt", false),
    ] {
        body.push_str(&head(key, label, num));
    }
    body.push_str(
        "<th class=\"num\">channel limit</th><th>Premium</th><th>frozen</th><th>last check</th>\
         <th>active hours</th><th>reason</th></tr>",
    );
    for a in rows {
        let acc = &a.account;
        let p = policies(acc, c.limits.channel_limit, now);
        let _ = write!(
            body,
            "<tr data-account=\"{n}\"><td><a href=\"/accounts/{id}\">{n}</a></td><td>{pool}</td>\
             <td data-k=\"status\">{badge}</td><td>{next}</td><td class=\"num\" data-k=\"joins\">{j}</td>\
             <td class=\"num\" data-k=\"bound\">{bound}</td><td>{last}</td>\
             <td class=\"num\" data-k=\"limit\">{limit}</td><td data-k=\"premium\">{premium}</td>\
             <td data-k=\"frozen\">{frozen}</td><td data-k=\"check\">{check}</td>\
             <td data-k=\"hours\">{hours}</td><td>{reason}</td></tr>",
            limit = p.limit,
            premium = p.premium,
            frozen = p.frozen,
            check = p.check,
            hours = p.hours,
            n = name(&acc.session_name),
            id = acc.id,
            pool = esc(&acc.pool),
            badge = html::account_badge(acc.status),
            next = next_action(acc, now),
            j = a.joins_24h,
            bound = a.bound,
            last = time_opt(last.get(&acc.id).copied()),
            reason = esc(acc.status_reason.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table>");
    let v = visitor(&c, &access);
    ok("Accounts", Tab::Accounts, &v, &body)
}

/// What Telegram said about an account and its own active hours, as the pages show them (read
/// only; every stored text escaped).
struct Policies {
    /// The channel limit the pick enforces: Telegram's for this account (Premium-aware; the
    /// free default until read), never above the operator's `CHANNEL_LIMIT`.
    limit: u32,
    /// Where that limit comes from.
    limit_source: String,
    premium: &'static str,
    frozen: String,
    /// The freeze's appeal link, escaped (shown as text, never as a link).
    appeal: Option<String>,
    /// When `accounts check` last connected it, with its verdict.
    check: String,
    hours: String,
}

fn policies(acc: &crate::store::Account, operator_limit: u32, now: DateTime<Utc>) -> Policies {
    let limit = crate::domain::effective_channel_limit(acc.channel_limit, operator_limit);
    let limit_source = match acc.channel_limit {
        Some(own) if own > operator_limit => format!("CHANNEL_LIMIT (Telegram allows {own})"),
        Some(_) => "Telegram's".to_owned(),
        None => "the free default until Telegram is read".to_owned(),
    };
    let premium = match acc.premium {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not read yet",
    };
    let freeze = crate::domain::Freeze {
        since: acc.frozen_since,
        until: acc.frozen_until,
        appeal_url: acc.freeze_appeal_url.clone(),
    };
    let no_freeze = freeze.since.is_none() && freeze.until.is_none() && freeze.appeal_url.is_none();
    let frozen = if no_freeze {
        if acc.profile_read_at.is_some() { "no".to_owned() } else { "not read yet".to_owned() }
    } else if !freeze.runs_at(now) {
        format!("no (ended {})", time_opt(freeze.until))
    } else {
        match freeze.until {
            Some(until) => format!("<b>frozen</b> until {}", time(until)),
            None => "<b>frozen</b> (no end date)".to_owned(),
        }
    };
    let check = match (acc.checked_at, acc.check_result.as_deref()) {
        (Some(at), result) => format!("{} {}", time(at), esc(result.unwrap_or(""))),
        (None, _) => "<span class=\"muted\">never</span>".to_owned(),
    };
    let hours = match acc.active_hours.as_deref() {
        Some(own) => esc(own),
        None => "<span class=\"muted\">the pool's (ACTIVE_HOURS)</span>".to_owned(),
    };
    Policies {
        limit,
        limit_source,
        premium,
        frozen,
        appeal: acc.freeze_appeal_url.as_deref().map(esc),
        check,
        hours,
    }
}

/// When the account may act next: its rest, or what keeps it from working at all.
fn next_action(acc: &crate::store::Account, now: DateTime<Utc>) -> String {
    match acc.status {
        s if s.can_work() => until(acc.next_allowed_action_time, now),
        AccountStatus::Paused => match acc.next_allowed_action_time {
            Some(t) if t > now => format!("when resumed, not before {}", time(t)),
            _ => "when resumed".to_owned(),
        },
        _ => "<span class=\"muted\">needs an operator</span>".to_owned(),
    }
}

fn not_found(what: &str) -> PageResult {
    Ok((
        StatusCode::NOT_FOUND,
        Html(format!("<p>{} does not exist. <a href=\"/\">Back</a></p>", esc(what))),
    )
        .into_response())
}

pub(super) async fn account(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(n): Query<NoticeQuery>,
) -> PageResult {
    let now = Utc::now();
    let Some(acc) = c.store.account(id).await? else { return not_found(&format!("account {id}")) };
    let overview = c.store.account_overview(Some(&acc.pool), now).await?;
    let stats = overview.iter().find(|o| o.account.id == id);
    let attempts = c.store.recent_attempts(None, Some(id), HISTORY_LIMIT).await?;
    let groups = c.store.targets_of_account(id).await?;
    let audit = c.store.audit_log(Some(&format!("account:{id}")), 50).await?;
    let target_ids: Vec<i64> = attempts.iter().map(|a| a.target_id).collect();
    let links = c.store.target_links(&target_ids).await?;

    let p = policies(&acc, c.limits.channel_limit, now);
    let mut body = notice(n.notice.as_deref());
    let _ = write!(
        body,
        "<h1>Account {n}</h1><dl class=\"facts\"><dt>pool</dt><dd>{pool}</dd>\
         <dt>status</dt><dd data-k=\"status\">{badge}</dd><dt>reason</dt><dd>{reason}</dd>\
         <dt>next allowed action</dt><dd>{next}</dd><dt>joins in the last 24 h</dt><dd data-k=\"joins\">{j} / {cap}</dd>\
         <dt>bound groups</dt><dd data-k=\"bound\">{b} / {limit}</dd><dt>ready for posting</dt><dd>{ready}</dd>\
         <dt>last action</dt><dd>{last}</dd><dt>held by an attempt</dt><dd>{held}</dd>\
         <dt>channel limit</dt><dd data-k=\"limit\">{limit} <span class=\"muted\">({limit_source})</span></dd>\
         <dt>Premium</dt><dd data-k=\"premium\">{premium}</dd><dt>frozen</dt><dd data-k=\"frozen\">{frozen}</dd>\
         {appeal}<dt>Telegram last read</dt><dd>{read}</dd><dt>last check</dt><dd data-k=\"check\">{check}</dd>\
         <dt>active hours</dt><dd data-k=\"hours\">{hours}</dd></dl>",
        n = name(&acc.session_name),
        pool = esc(&acc.pool),
        badge = html::account_badge(acc.status),
        reason = esc(acc.status_reason.as_deref().unwrap_or("")),
        next = next_action(&acc, now),
        j = stats.map_or(0, |s| s.joins_24h),
        cap = c.limits.daily_join_cap,
        b = stats.map_or(0, |s| s.bound),
        limit = p.limit,
        limit_source = p.limit_source,
        premium = p.premium,
        frozen = p.frozen,
        appeal = p.appeal.map_or_else(String::new, |url| {
            format!("<dt>appeal</dt><dd data-k=\"appeal\">{url}</dd>")
        }),
        read = time_opt(acc.profile_read_at),
        check = p.check,
        hours = p.hours,
        ready = stats.map_or(0, |s| s.ready),
        last = time_opt(acc.last_action_at),
        held = if groups.iter().any(|t| t.claimed_account_id == Some(id) && t.claim_epoch.is_some())
        {
            "a join may be under way"
        } else {
            "no"
        },
    );
    if access.actor().is_some() {
        let csrf = csrf_field(&c, &headers);
        body.push_str("<div class=\"actions\">");
        if acc.status == AccountStatus::Paused {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/accounts/{id}/resume\" class=\"inline\">{csrf}\
                 <button class=\"primary\" id=\"resume\">Resume</button></form>"
            );
        } else if acc.status.can_pause() {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/accounts/{id}/pause\" class=\"inline\">{csrf}\
                 <input name=\"note\" placeholder=\"why (optional)\" maxlength=\"200\">\
                 <button class=\"danger\" id=\"pause\">Pause</button></form>\
                 <span class=\"muted\">A paused account is never picked; a join under way finishes first.</span>"
            );
        } else {
            body.push_str("<span class=\"muted\">This status needs an operator outside the console (a new login, a new account).</span>");
        }
        body.push_str("</div>");
    }
    body.push_str("<h2>Groups</h2>");
    body.push_str(&targets_table(&groups, &HashMap::new(), now));
    body.push_str("<h2>Attempts</h2>");
    let names = HashMap::from([(id, acc.session_name.clone())]);
    body.push_str(&attempts_table(&attempts, &names, &links));
    body.push_str(&audit_table(&audit));
    let v = visitor(&c, &access);
    ok(
        &format!("Account {}", crate::ops::output::shown(&acc.session_name)),
        Tab::Accounts,
        &v,
        &body,
    )
}

fn attempts_table(
    rows: &[AttemptRow],
    names: &HashMap<i64, String>,
    links: &HashMap<i64, String>,
) -> String {
    let mut s = String::from(
        "<table class=\"attempts\"><tr><th>finished</th><th>account</th><th>group</th>\
         <th>outcome</th><th>code</th><th class=\"num\">flood wait</th><th class=\"num\">took</th><th>worker</th></tr>",
    );
    if rows.is_empty() {
        s.push_str("<tr><td colspan=\"8\" class=\"muted\">no attempt yet</td></tr>");
    }
    for a in rows {
        let took = (a.finished_at - a.started_at).num_milliseconds().max(0);
        let _ = write!(
            s,
            "<tr data-outcome=\"{o}\"><td>{t}</td><td><a href=\"/accounts/{aid}\">{acc}</a></td>\
             <td><a href=\"/groups/{tid}\">{link}</a></td><td>{badge}</td><td>{code}</td>\
             <td class=\"num\">{fw}</td><td class=\"num\">{took} ms</td><td>{w}</td></tr>",
            o = esc(a.outcome.as_str()),
            t = time(a.finished_at),
            aid = a.account_id,
            acc = names.get(&a.account_id).map_or_else(|| a.account_id.to_string(), |n| name(n)),
            tid = a.target_id,
            link = links.get(&a.target_id).map_or_else(|| a.target_id.to_string(), |l| esc(l)),
            badge = html::outcome_badge(a.outcome.as_str()),
            code = esc(a.error_code.as_deref().unwrap_or("")),
            fw = a.flood_wait_seconds.map_or(String::new(), |s| format!("{s} s")),
            w = esc(&a.worker),
        );
    }
    s.push_str("</table>");
    s
}

fn targets_table(rows: &[Target], names: &HashMap<i64, String>, now: DateTime<Utc>) -> String {
    let mut s = String::from(
        "<table class=\"groups\"><tr><th class=\"num\">id</th><th>link</th><th>title</th><th>niche</th>\
         <th>status</th><th>account</th><th>warm-up ends</th><th>detail</th></tr>",
    );
    if rows.is_empty() {
        s.push_str("<tr><td colspan=\"8\" class=\"muted\">no group</td></tr>");
    }
    for t in rows {
        let account = t.assigned_account_id.or(t.claimed_account_id);
        let account = match account {
            Some(a) => format!(
                "<a href=\"/accounts/{a}\">{}</a>",
                names.get(&a).map_or_else(|| format!("#{a}"), |n| name(n))
            ),
            None => String::new(),
        };
        let detail = match (&t.error_code, &t.error_message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) if t.status == TargetStatus::Joining && t.claim_epoch.is_none() => {
                format!("in doubt after {} unanswered tries", t.in_doubt_tries)
            }
            (None, None) => String::new(),
        };
        let warm = match t.warmup_ends_at {
            Some(w) if w <= now => format!("{} <span class=\"muted\">(ended)</span>", time(w)),
            w => until(w, now),
        };
        let warm = if t.warmup_ends_at.is_none() { String::new() } else { warm };
        let _ = write!(
            s,
            "<tr data-target=\"{id}\" data-status=\"{st}\"><td class=\"num\">{id}</td>\
             <td><a href=\"/groups/{id}\">{link}</a></td><td>{title}</td><td>{niche}</td><td>{badge}</td>\
             <td>{account}</td><td>{warm}</td><td>{detail}</td></tr>",
            id = t.id,
            st = t.status.as_str(),
            link = esc(&t.link.to_string()),
            title = esc(t.title.as_deref().unwrap_or("")),
            niche = esc(&t.niche),
            badge = html::target_badge(t.status),
            detail = esc(&detail),
        );
    }
    s.push_str("</table>");
    s
}

fn audit_table(rows: &[crate::store::AuditEntry]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2>Audit</h2><table class=\"audit\"><tr><th>when</th><th>who</th><th>what</th><th>on</th><th>detail</th></tr>",
    );
    for e in rows {
        let _ = write!(
            s,
            "<tr data-action=\"{a}\"><td>{t}</td><td>{who}</td><td>{a}</td><td>{on}</td><td>{d}</td></tr>",
            t = time(e.at),
            who = esc(&e.actor),
            a = esc(&e.action),
            on = subject_link(&e.subject),
            d = esc(e.detail.as_deref().unwrap_or("")),
        );
    }
    s.push_str("</table>");
    s
}

fn subject_link(subject: &str) -> String {
    match subject.split_once(':') {
        Some(("account", id)) if id.parse::<i64>().is_ok() => {
            format!("<a href=\"/accounts/{id}\">account {id}</a>")
        }
        Some(("target", id)) if id.parse::<i64>().is_ok() => {
            format!("<a href=\"/groups/{id}\">group {id}</a>")
        }
        _ => esc(subject),
    }
}

// ---------------------------------------------------------------------------------------------
// groups

#[derive(Debug, Default, Deserialize)]
pub(super) struct GroupsQuery {
    niche: Option<String>,
    status: Option<String>,
    q: Option<String>,
    notice: Option<String>,
}

pub(super) async fn groups(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Query(f): Query<GroupsQuery>,
) -> PageResult {
    let now = Utc::now();
    let filter = TargetFilter {
        niche: empty_none(&f.niche).map(str::to_owned),
        status: empty_none(&f.status).and_then(TargetStatus::parse),
        search: empty_none(&f.q).map(str::to_owned),
    };
    let rows = c.store.search_targets(&filter, LIST_LIMIT).await?;
    let niches = c.store.niches().await?;
    let names = c.store.account_names().await?;
    let counts = c.store.target_counts().await?;

    let mut body = notice(f.notice.as_deref());
    body.push_str("<h1>Groups</h1>");
    body.push_str(&status_grid(&counts));
    body.push_str("<h2>Search</h2><form class=\"filters\" method=\"get\" action=\"/groups\">");
    body.push_str("<label>niche<select name=\"niche\"><option value=\"\">all</option>");
    for n in &niches {
        let sel = if filter.niche.as_deref() == Some(n) { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{0}\"{sel}>{0}</option>", esc(n));
    }
    body.push_str(
        "</select></label><label>status<select name=\"status\"><option value=\"\">all</option>",
    );
    for s in TargetStatus::ALL {
        let sel = if filter.status == Some(*s) { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{}</option>", s.as_str());
    }
    let _ = write!(
        body,
        "</select></label><label>link or title<input name=\"q\" value=\"{}\" placeholder=\"cars_kyiv\"></label>\
         <button type=\"submit\">Search</button></form>",
        esc(filter.search.as_deref().unwrap_or(""))
    );
    let more =
        if rows.len() as u64 == LIST_LIMIT { " (the newest; narrow the search)" } else { "" };
    let _ = write!(body, "<p class=\"muted\" data-k=\"shown\">{} groups{more}</p>", rows.len());
    body.push_str(&targets_table(&rows, &names, now));
    if access.actor().is_some() {
        let csrf = csrf_field(&c, &headers);
        let _ = write!(
            body,
            "<h2>Import targets</h2><form method=\"post\" action=\"/import\" id=\"import\">{csrf}\
             <p class=\"muted\">One link per line, or a CSV whose first column is the link, as \
             <code>smart-joiner targets import</code> reads it. A file with an invalid line imports \
             nothing unless invalid lines are skipped.</p>\
             <div class=\"filters\"><label>niche<input name=\"niche\" required></label>\
             <label>file<input type=\"file\" id=\"import-file\" accept=\".txt,.csv,text/plain,text/csv\"></label>\
             <label><span><input type=\"checkbox\" name=\"skip_invalid\" value=\"yes\"> skip invalid lines</span></label></div>\
             <textarea name=\"links\" id=\"import-links\" rows=\"6\" cols=\"80\" placeholder=\"@cars_kyiv\nhttps://t.me/+AbCdEf\"></textarea>\
             <div class=\"actions\"><button class=\"primary\" type=\"submit\">Import</button></div></form>"
        );
    }
    let v = visitor(&c, &access);
    ok("Groups", Tab::Groups, &v, &body)
}

pub(super) async fn group(
    State(c): Shared,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(n): Query<NoticeQuery>,
) -> PageResult {
    let now = Utc::now();
    let Some(t) = c.store.target(id).await? else { return not_found(&format!("group {id}")) };
    let attempts = c.store.recent_attempts(Some(id), None, HISTORY_LIMIT).await?;
    let names = c.store.account_names().await?;
    let audit = c.store.audit_log(Some(&format!("target:{id}")), 50).await?;
    let account_link = |a: Option<i64>| match a {
        Some(a) => format!(
            "<a href=\"/accounts/{a}\">{}</a>",
            names.get(&a).map_or_else(|| format!("#{a}"), |n| name(n))
        ),
        None => "<span class=\"muted\">–</span>".to_owned(),
    };
    let warm = match t.warmup_ends_at {
        Some(w) if w <= now => format!("{} (ended: ready for posting)", time(w)),
        w => until(w, now),
    };
    let mut body = notice(n.notice.as_deref());
    let _ = write!(
        body,
        "<h1>Group {link}</h1><dl class=\"facts\"><dt>title</dt><dd>{title}</dd><dt>niche</dt><dd>{niche}</dd>\
         <dt>status</dt><dd data-k=\"status\">{badge}</dd><dt>bound account</dt><dd data-k=\"bound\">{bound}</dd>\
         <dt>claimed by</dt><dd>{claimed}</dd><dt>unanswered tries</dt><dd>{doubt}</dd>\
         <dt>next run</dt><dd>{next}</dd><dt>joined</dt><dd>{joined}</dd><dt>warm-up ends</dt><dd data-k=\"warmup\">{warm}</dd>\
         <dt>attempts</dt><dd>{n}</dd><dt>error</dt><dd>{err}</dd></dl>",
        link = esc(&t.link.to_string()),
        title = esc(t.title.as_deref().unwrap_or("")),
        niche = esc(&t.niche),
        badge = html::target_badge(t.status),
        bound = account_link(t.assigned_account_id),
        claimed = account_link(t.claimed_account_id),
        doubt = t.in_doubt_tries,
        next = if t.next_run_at.is_some() { until(t.next_run_at, now) } else { String::new() },
        joined = time_opt(t.joined_at),
        warm = if t.warmup_ends_at.is_some() { warm } else { String::new() },
        n = t.attempts,
        err = esc(&match (&t.error_code, &t.error_message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            _ => String::new(),
        }),
    );
    if access.actor().is_some() {
        let csrf = csrf_field(&c, &headers);
        if t.status == TargetStatus::Error {
            let _ = write!(
                body,
                "<div class=\"actions\"><form method=\"post\" action=\"/groups/{id}/retry\" class=\"inline\">{csrf}\
                 <button class=\"primary\" id=\"retry\">Retry</button></form>\
                 <span class=\"muted\">Back to new: the next batch tries it again.</span></div>"
            );
        }
        if t.status == TargetStatus::Joining && t.claimed_account_id.is_some() {
            let _ = write!(
                body,
                "<div class=\"actions\"><form method=\"post\" action=\"/groups/{id}/release\" class=\"inline\">{csrf}\
                 <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> I checked that \
                 {acc} is not a member of this group (otherwise a second account would join it)</label> \
                 <button class=\"danger\" id=\"release\">Release the pin</button></form></div>",
                acc = account_link(t.claimed_account_id),
            );
        }
    }
    body.push_str("<h2>Attempts</h2>");
    let links = HashMap::from([(id, t.link.to_string())]);
    body.push_str(&attempts_table(&attempts, &names, &links));
    body.push_str(&audit_table(&audit));
    let v = visitor(&c, &access);
    ok(&format!("Group {}", t.link), Tab::Groups, &v, &body)
}

// ---------------------------------------------------------------------------------------------
// ready for posting

pub(super) async fn ready(State(c): Shared, Extension(access): Extension<Access>) -> PageResult {
    let now = Utc::now();
    let rows = c.store.ready_groups(now, LIST_LIMIT).await?;
    let mut body = String::from(
        "<h1>Ready for posting</h1><p class=\"muted\">Joined groups whose warm-up has ended, with \
         the account bound to each: what the posting side uses. \
         <a href=\"/ready.csv\" id=\"csv\" download>Download all as CSV</a></p>",
    );
    let _ = write!(body, "<p class=\"muted\" data-k=\"shown\">{} groups</p>", rows.len());
    body.push_str(
        "<table id=\"ready\"><tr><th>account</th><th>group</th><th>title</th><th>niche</th><th>warm-up ended</th></tr>",
    );
    for r in &rows {
        let _ = write!(
            body,
            "<tr data-target=\"{id}\"><td>{acc}</td><td><a href=\"/groups/{id}\">{link}</a></td><td>{title}</td>\
             <td>{niche}</td><td>{t}</td></tr>",
            id = r.target_id,
            acc = name(&r.account),
            link = esc(&r.link.to_string()),
            title = esc(r.title.as_deref().unwrap_or("")),
            niche = esc(&r.niche),
            t = time(r.warmup_ended_at),
        );
    }
    body.push_str("</table>");
    let v = visitor(&c, &access);
    ok("Ready for posting", Tab::Ready, &v, &body)
}

/// One CSV field (RFC 4180 quoting). A title (Telegram's text, anyone's choice) that a
/// spreadsheet would run as a formula gets a leading `'`.
fn csv_field(text: &str, guard_formula: bool) -> String {
    let text = if guard_formula && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub(super) async fn ready_csv(State(c): Shared) -> PageResult {
    let rows = c.store.ready_groups(Utc::now(), CSV_LIMIT).await?;
    let mut csv = String::from("account,target_id,link,title,niche,warmup_ended_at\r\n");
    for r in &rows {
        let _ = write!(
            csv,
            "{},{},{},{},{},{}\r\n",
            csv_field(&r.account, false),
            r.target_id,
            csv_field(&r.link.to_string(), false),
            csv_field(r.title.as_deref().unwrap_or(""), true),
            csv_field(&r.niche, false),
            r.warmup_ended_at.to_rfc3339(),
        );
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"ready_groups.csv\""),
        ],
        csv,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// activity

#[derive(Debug, Default, Deserialize)]
pub(super) struct ActivityQuery {
    days: Option<u32>,
}

pub(super) async fn activity(
    State(c): Shared,
    Extension(access): Extension<Access>,
    Query(f): Query<ActivityQuery>,
) -> PageResult {
    let now = Utc::now();
    let days = f.days.unwrap_or(3).clamp(1, 14);
    let hours = days as usize * 24;
    // From the start of the first hour shown, so that hour is counted whole.
    let since = now.duration_trunc(Duration::hours(1)).unwrap_or(now)
        - Duration::hours(hours as i64 - 1)
        - Duration::nanoseconds(1);
    let counts = c.store.attempts_per_hour(since, now).await?;
    let per_hour = charts::per_hour(&counts, now, hours);
    let total = |f: fn(&charts::Hour) -> u64| per_hour.iter().map(|(_, h)| f(h)).sum::<u64>();
    let (joins, floods, errors) =
        (total(|h| h.joins), total(|h| h.flood_waits), total(|h| h.errors));
    let mut body = String::from(
        "<h1>Activity</h1><form class=\"filters\" method=\"get\" action=\"/activity\"><label>days<select name=\"days\">",
    );
    for d in [1, 3, 7, 14] {
        let sel = if d == days { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{d}</option>");
    }
    let _ = write!(
        body,
        "</select></label><button type=\"submit\">Show</button></form>\
         <div class=\"cards\"><div class=\"card\"><div class=\"n\" data-k=\"joins\">{joins}</div><div class=\"l\">joins</div></div>\
         <div class=\"card\"><div class=\"n\" data-k=\"flood-waits\">{floods}</div><div class=\"l\">FloodWaits</div></div>\
         <div class=\"card\"><div class=\"n\" data-k=\"errors\">{errors}</div><div class=\"l\">errors and other outcomes</div></div></div>\
         <p class=\"muted\">Per hour, the last {days} day(s), UTC.</p>"
    );
    for (title, color, f) in [
        ("Joins per hour", "#12805c", (|h: &charts::Hour| h.joins) as fn(&charts::Hour) -> u64),
        ("FloodWaits per hour", "#b54708", |h: &charts::Hour| h.flood_waits),
        ("Errors per hour", "#b42318", |h: &charts::Hour| h.errors),
    ] {
        let _ = write!(body, "<h2>{title}</h2>{}", charts::svg(&per_hour, title, color, f));
    }
    let _ = write!(
        body,
        "<h2>Live tail</h2><p class=\"muted\">The latest {TAIL_LIMIT} attempts, refreshed every few seconds.</p>\
         <div id=\"tail\">{}</div>",
        tail_html(&c).await?
    );
    let v = visitor(&c, &access);
    ok("Activity", Tab::Activity, &v, &body)
}

async fn tail_html(c: &super::Console) -> Result<String, StoreError> {
    let rows = c.store.recent_attempts(None, None, TAIL_LIMIT).await?;
    let names = c.store.account_names().await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.target_id).collect();
    let links = c.store.target_links(&ids).await?;
    Ok(attempts_table(&rows, &names, &links))
}

pub(super) async fn tail(State(c): Shared) -> PageResult {
    Ok(Html(tail_html(&c).await?).into_response())
}

// ---------------------------------------------------------------------------------------------
// audit, login

pub(super) async fn audit(State(c): Shared, Extension(access): Extension<Access>) -> PageResult {
    let rows = c.store.audit_log(None, LIST_LIMIT).await?;
    let mut body = String::from(
        "<h1>Audit log</h1><p class=\"muted\">Every operator action, from the console and the CLI, newest first.</p>",
    );
    if rows.is_empty() {
        body.push_str("<p class=\"muted\">No action yet.</p>");
    }
    body.push_str(&audit_table(&rows).replacen("<h2>Audit</h2>", "", 1));
    let v = visitor(&c, &access);
    ok("Audit log", Tab::Audit, &v, &body)
}

/// Asks the browser for the admin token (basic auth) unless it already sent it.
pub(super) async fn login(State(c): Shared, Extension(access): Extension<Access>) -> Response {
    if !c.auth.actions_enabled() {
        return (
            StatusCode::FORBIDDEN,
            "this console is read-only: CONSOLE_ADMIN_TOKEN is not set\n",
        )
            .into_response();
    }
    match access {
        Access::Admin { .. } => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
        _ => super::unauthorized("sign in with the admin token as the password"),
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_titles_cannot_become_formulas() {
        assert_eq!(csv_field("plain", true), "plain");
        assert_eq!(csv_field("a,b", false), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", false), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)", true), "'=HYPERLINK(1)");
        assert_eq!(csv_field("@cars_kyiv", false), "@cars_kyiv");
    }
}
