//! Adopting a SmartJoiner database (`lexus_db`) in place, and undoing it.
//!
//! SmartJoiner keeps `accounts` and `targets` in Postgres. Adoption turns those two tables into
//! this project's schema without moving a row: it adds the columns smart-joiner needs, widens
//! the types it cannot read as they are (integer ids to bigint, enum or varchar statuses to
//! text, timestamps without a time zone to `timestamptz`, read as UTC), derives the normalised
//! `targets.link` from their group column (which stays as it was), creates `join_attempts` and
//! the indexes, and marks the migrations whose schema it built as applied, all in one
//! transaction under an exclusive lock on both tables. Their rows, statuses, bindings,
//! timestamps and every column smart-joiner does not know are kept.
//!
//! What it changed is written to [`RECORD_TABLE`] as JSON. The first migration's `down` reads
//! it on an adopted database and, instead of dropping the tables, puts them back in their
//! original shape ([`undo`]): the columns it added dropped, types, defaults, NOT NULLs and
//! checks as they were, the values it filled reset, and the group and session columns of rows
//! added since filled from smart-joiner's columns, so nothing added after the switch is lost.

use std::collections::BTreeMap;
use std::fmt;

use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement,
    TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};

/// Where an adoption records what it changed (one row, JSON).
pub const RECORD_TABLE: &str = "smart_joiner_adoption";

/// The migrations whose schema an adoption builds; they are marked applied.
pub const ADOPTED_MIGRATIONS: [&str; 3] = [
    "m20260112_000001_create_tables",
    "m20261123_000002_account_hold",
    "m20261124_000003_leaner_indexes",
];

/// Names SmartJoiner-family tools give the group column, in the order they are looked for.
pub const GROUP_COLUMNS: &[&str] = &[
    "link",
    "username",
    "group_link",
    "group_username",
    "group_url",
    "url",
    "group",
    "invite_link",
    "chat",
    "chat_link",
    "channel",
    "target",
];

/// Names of the column holding the session name that keys `accounts_config.json`.
pub const SESSION_COLUMNS: &[&str] = &["session_name", "session", "name", "phone", "phone_number"];

/// Their group column, when it is called `link`, is renamed to this: `link` is smart-joiner's
/// normalised column.
pub const RENAMED_LINK: &str = "smartjoiner_link";

/// `kind` of a target whose group value cannot be read as a link (its link is
/// `unparsed:<id>`); smart-joiner never loads such a row as a target.
pub const UNPARSED_KIND: &str = "unparsed";

/// `error_code` of a target whose group value cannot be read as a link.
pub const UNPARSED_CODE: &str = "unparsed_link";

/// Every index and constraint name smart-joiner's migrations ever create on the two tables.
const OUR_NAMES: &[&str] = &[
    "idx_accounts_pool_last_action",
    "idx_targets_niche_status_id",
    "idx_targets_status_next_run",
    "idx_targets_assigned_account",
    "idx_targets_new_by_niche",
    "idx_targets_open_by_next_run",
    "idx_targets_bound_account",
    "uq_accounts_session_name",
    "uq_targets_link",
    "fk_targets_assigned_account",
    "fk_targets_claimed_account",
];

/// How a group value becomes smart-joiner's link: `Ok((normalised link, kind))`, or why not.
pub type Normalise = dyn Fn(&str) -> Result<(String, String), String> + Send + Sync;

/// What the caller knows that this crate does not (it has no domain types).
pub struct Options<'a> {
    /// The group column, when the operator names it.
    pub group_column: Option<String>,
    /// The session-name column, when the operator names it.
    pub session_column: Option<String>,
    /// Every account status smart-joiner reads.
    pub account_statuses: &'a [&'a str],
    /// Every target status smart-joiner reads.
    pub target_statuses: &'a [&'a str],
    /// Statuses of targets that are still to be joined (`new`, ...).
    pub workable_statuses: &'a [&'a str],
    pub normalise: &'a Normalise,
}

/// Why a database is not adopted. Nothing was changed.
#[derive(Debug)]
pub enum AdoptError {
    /// The layout or the data cannot be adopted as it is: every problem, fit to print.
    Refused(Vec<String>),
    Db(DbErr),
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdoptError::Refused(problems) => {
                write!(f, "this database cannot be adopted, nothing was changed: ")?;
                write!(f, "{}", problems.join("; "))
            }
            AdoptError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AdoptError {}

impl From<DbErr> for AdoptError {
    fn from(e: DbErr) -> Self {
        AdoptError::Db(e)
    }
}

/// A target row whose group value is not a link smart-joiner can join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsed {
    pub id: i64,
    /// Why (the value itself is not repeated beyond what the reason quotes).
    pub reason: String,
    /// Its status, which it keeps unless it was still to be joined (then it becomes `error`).
    pub status: String,
}

/// What an adoption does (or did), in order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub group_column: String,
    pub session_column: String,
    pub accounts: u64,
    pub targets: u64,
    /// Targets bound to an account, kept bound.
    pub bound: u64,
    /// Every schema change and every kind of row change, in the order they are made.
    pub changes: Vec<String>,
    pub unparsed: Vec<Unparsed>,
    statements: Vec<Statement>,
    record: Record,
}

/// A column of theirs whose type, default or nullability the adoption changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Altered {
    table: String,
    column: String,
    /// `format_type` of the original type, when the type changed.
    original_type: Option<String>,
    /// Whether the default changed; then `original_default` is the one to restore (None: none).
    default_changed: bool,
    original_default: Option<String>,
    /// The original NOT NULL, when it changed.
    original_not_null: Option<bool>,
}

/// NULLs the adoption filled, so undo puts them back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Filled {
    table: String,
    column: String,
    ids: Vec<i64>,
}

/// A target the adoption moved to `error` (its group value is unreadable).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Errored {
    id: i64,
    status: String,
    error_message: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    version: u32,
    group_column: String,
    /// Set when their group column was renamed (it was called `link`).
    renamed_group_column: Option<String>,
    session_column: String,
    /// (table, column) added by the adoption.
    added_columns: Vec<(String, String)>,
    altered: Vec<Altered>,
    filled: Vec<Filled>,
    /// (table, name, definition) of CHECK constraints dropped.
    dropped_checks: Vec<(String, String, String)>,
    /// (table, name) of constraints and indexes added.
    added_constraints: Vec<(String, String)>,
    added_indexes: Vec<String>,
    errored: Vec<Errored>,
    /// The `fillfactor` of `accounts` before (None: unset).
    fillfactor: Option<String>,
    join_attempts_created: bool,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// `format_type`, e.g. `character varying(32)`.
    type_name: String,
    /// `pg_type.typname`, e.g. `varchar`.
    udt: String,
    /// `pg_type.typtype`: `b` base, `e` enum, `d` domain, ...
    typtype: String,
    not_null: bool,
    default: Option<String>,
    identity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BigInt,
    Int,
    Text,
    Time,
}

impl Kind {
    fn sql(self) -> &'static str {
        match self {
            Kind::BigInt => "bigint",
            Kind::Int => "integer",
            Kind::Text => "text",
            Kind::Time => "timestamp with time zone",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::BigInt | Kind::Int => "an integer",
            Kind::Text => "text",
            Kind::Time => "a timestamp",
        }
    }

    /// Whether a column of `c`'s type can be read as this kind: `Some(false)` as it is,
    /// `Some(true)` after a type change, `None` not at all.
    fn needs_change(self, c: &Column) -> Option<bool> {
        let udt = c.udt.as_str();
        match self {
            Kind::BigInt => match udt {
                "int8" => Some(false),
                "int2" | "int4" => Some(true),
                _ => None,
            },
            Kind::Int => match udt {
                "int4" => Some(false),
                "int2" | "int8" => Some(true),
                _ => None,
            },
            Kind::Text => match udt {
                "text" => Some(false),
                "varchar" | "bpchar" | "citext" | "name" => Some(true),
                _ if c.typtype == "e" => Some(true),
                _ => None,
            },
            Kind::Time => match udt {
                "timestamptz" => Some(false),
                "timestamp" => Some(true),
                _ => None,
            },
        }
    }

    /// The USING expression converting `col` to this kind.
    fn using(self, col: &str) -> String {
        match self {
            Kind::Time => format!("{col} AT TIME ZONE 'UTC'"),
            other => format!("{col}::{}", other.sql()),
        }
    }
}

/// One of smart-joiner's columns.
struct Spec {
    name: &'static str,
    kind: Kind,
    not_null: bool,
    /// SQL default expression.
    default: Option<&'static str>,
    /// Required in their table (the layout is not SmartJoiner's without it).
    required: bool,
    /// What their NULLs become, when `not_null`.
    fill: Option<&'static str>,
}

const fn spec(name: &'static str, kind: Kind) -> Spec {
    Spec { name, kind, not_null: false, default: None, required: false, fill: None }
}

const fn with_default(name: &'static str, kind: Kind, default: &'static str) -> Spec {
    Spec {
        name,
        kind,
        not_null: true,
        default: Some(default),
        required: false,
        fill: Some(default),
    }
}

const NOW: &str = "CURRENT_TIMESTAMP";

/// `accounts` without `id` and `session_name`, which are handled on their own.
const ACCOUNT_COLUMNS: &[Spec] = &[
    Spec { required: true, ..with_default("status", Kind::Text, "'active'") },
    with_default("pool", Kind::Text, "'default'"),
    spec("status_reason", Kind::Text),
    spec("next_allowed_action_time", Kind::Time),
    spec("last_action_at", Kind::Time),
    with_default("lease_epoch", Kind::BigInt, "0"),
    spec("held_until", Kind::Time),
    with_default("created_at", Kind::Time, NOW),
    with_default("updated_at", Kind::Time, NOW),
];

/// `targets` without `id`, `link` and `kind`, which are handled on their own.
const TARGET_COLUMNS: &[Spec] = &[
    Spec {
        name: "niche",
        kind: Kind::Text,
        not_null: true,
        default: None,
        required: true,
        fill: Some("''"),
    },
    Spec { required: true, ..with_default("status", Kind::Text, "'new'") },
    spec("assigned_account_id", Kind::BigInt),
    spec("claimed_account_id", Kind::BigInt),
    spec("claim_epoch", Kind::BigInt),
    spec("joined_at", Kind::Time),
    spec("warmup_ends_at", Kind::Time),
    spec("error_code", Kind::Text),
    spec("error_message", Kind::Text),
    with_default("attempts", Kind::Int, "0"),
    with_default("in_doubt_tries", Kind::Int, "0"),
    spec("enqueued_at", Kind::Time),
    spec("next_run_at", Kind::Time),
    spec("peer_id", Kind::BigInt),
    spec("title", Kind::Text),
    with_default("created_at", Kind::Time, NOW),
    with_default("updated_at", Kind::Time, NOW),
];

/// Quotes an identifier for Postgres.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for Postgres (standard_conforming_strings is on since 9.1).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn pg(sql: impl Into<String>) -> Statement {
    Statement::from_string(DbBackend::Postgres, sql.into())
}

async fn exists<C: ConnectionTrait>(db: &C, table: &str) -> Result<bool, DbErr> {
    let sql = format!("SELECT to_regclass({}) IS NOT NULL AS present", literal(table));
    let row = db.query_one_raw(pg(sql)).await?;
    Ok(match row {
        Some(row) => row.try_get("", "present")?,
        None => false,
    })
}

async fn columns<C: ConnectionTrait>(db: &C, table: &str) -> Result<Vec<Column>, DbErr> {
    let sql = format!(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type_name, \
         t.typname::text AS udt, t.typtype::text AS typtype, a.attnotnull AS not_null, \
         pg_get_expr(d.adbin, d.adrelid) AS dflt, a.attidentity::text <> '' AS identity \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = to_regclass({}) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        literal(table)
    );
    let rows = db.query_all_raw(pg(sql)).await?;
    rows.iter()
        .map(|r| {
            Ok(Column {
                name: r.try_get("", "name")?,
                type_name: r.try_get("", "type_name")?,
                udt: r.try_get("", "udt")?,
                typtype: r.try_get("", "typtype")?,
                not_null: r.try_get("", "not_null")?,
                default: r.try_get("", "dflt")?,
                identity: r.try_get("", "identity")?,
            })
        })
        .collect()
}

async fn count<C: ConnectionTrait>(db: &C, sql: String) -> Result<u64, DbErr> {
    let row = db.query_one_raw(pg(sql)).await?;
    let n: i64 = match row {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Names (of indexes or constraints) in use anywhere in the schema.
async fn names_in_use<C: ConnectionTrait>(db: &C, names: &[&str]) -> Result<Vec<String>, DbErr> {
    let list: Vec<String> = names.iter().map(|n| literal(n)).collect();
    let sql = format!(
        "SELECT relname::text AS name FROM pg_class WHERE relname IN ({0}) \
         AND relnamespace = current_schema()::regnamespace \
         UNION SELECT conname::text FROM pg_constraint WHERE conname IN ({0}) \
         AND connamespace = current_schema()::regnamespace",
        list.join(", ")
    );
    let rows = db.query_all_raw(pg(sql)).await?;
    rows.iter().map(|r| r.try_get("", "name")).collect()
}

/// CHECK constraints of `table` mentioning `column`: (name, definition).
async fn checks_on<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
) -> Result<Vec<(String, String)>, DbErr> {
    let sql = format!(
        "SELECT c.conname::text AS name, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.conrelid = to_regclass({}) AND c.contype = 'c' AND a.attname = {} \
         ORDER BY c.conname",
        literal(table),
        literal(column)
    );
    let rows = db.query_all_raw(pg(sql)).await?;
    rows.iter().map(|r| Ok((r.try_get("", "name")?, r.try_get("", "def")?))).collect()
}

/// Whether `table.column` is, alone, the key of a unique index or the primary key.
async fn is_unique<C: ConnectionTrait>(db: &C, table: &str, column: &str) -> Result<bool, DbErr> {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = to_regclass({}) AND i.indisunique AND i.indnkeyatts = 1 \
         AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = {}",
        literal(table),
        literal(column)
    );
    Ok(count(db, sql).await? > 0)
}

/// Whether `table.column` is, alone, the primary key.
async fn is_primary_key<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
) -> Result<bool, DbErr> {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = to_regclass({}) AND i.indisprimary AND i.indnkeyatts = 1 \
         AND a.attname = {}",
        literal(table),
        literal(column)
    );
    Ok(count(db, sql).await? > 0)
}

/// Whether a foreign key from `targets.column` to `accounts` exists.
async fn has_fk_to_accounts<C: ConnectionTrait>(db: &C, column: &str) -> Result<bool, DbErr> {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         WHERE c.conrelid = to_regclass('targets') AND c.contype = 'f' \
         AND c.confrelid = to_regclass('accounts') AND array_length(c.conkey, 1) = 1 \
         AND a.attname = {}",
        literal(column)
    );
    Ok(count(db, sql).await? > 0)
}

async fn fillfactor<C: ConnectionTrait>(db: &C) -> Result<Option<String>, DbErr> {
    let sql = "SELECT option_value AS v FROM pg_options_to_table(\
               (SELECT reloptions FROM pg_class WHERE oid = to_regclass('accounts'))) \
               WHERE option_name = 'fillfactor'";
    let row = db.query_one_raw(pg(sql)).await?;
    match row {
        Some(row) => Ok(Some(row.try_get("", "v")?)),
        None => Ok(None),
    }
}

fn ids_text(ids: &[i64]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = ids.iter().take(SHOWN).map(|id| id.to_string()).collect();
    if ids.len() > SHOWN {
        parts.push(format!("and {} more", ids.len() - SHOWN));
    }
    parts.join(", ")
}

fn pick_column(
    table: &str,
    what: &str,
    flag: &str,
    named: Option<&str>,
    candidates: &[&str],
    cols: &[Column],
    problems: &mut Vec<String>,
) -> Option<String> {
    if let Some(name) = named {
        if cols.iter().any(|c| c.name == name) {
            return Some(name.to_owned());
        }
        problems.push(format!("{table} has no column {name:?} (named by {flag})"));
        return None;
    }
    let found: Vec<&str> =
        candidates.iter().copied().filter(|n| cols.iter().any(|c| c.name == *n)).collect();
    match found.as_slice() {
        [one] => Some((*one).to_owned()),
        [] => {
            problems.push(format!(
                "{table} has none of the usual {what} columns ({}): name it with {flag}",
                candidates.join(", ")
            ));
            None
        }
        // `session_name` is the documented name: it wins over look-alikes.
        [first, ..] if *first == "session_name" => Some((*first).to_owned()),
        many => {
            problems.push(format!(
                "{table} has several possible {what} columns ({}): name one with {flag}",
                many.join(", ")
            ));
            None
        }
    }
}

/// Inspects the database and plans the adoption, changing nothing.
pub async fn plan<C: ConnectionTrait>(db: &C, opts: &Options<'_>) -> Result<Plan, AdoptError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Err(AdoptError::Refused(vec![
            "adoption works on PostgreSQL, where SmartJoiner keeps its tables; this database is not PostgreSQL".to_owned(),
        ]));
    }
    if exists(db, RECORD_TABLE).await? {
        return Err(AdoptError::Refused(vec![format!(
            "this database was adopted already ({RECORD_TABLE} exists); `smart-joiner migrate status` shows its migrations"
        )]));
    }
    let mut problems = Vec::new();
    for table in ["accounts", "targets"] {
        if !exists(db, table).await? {
            problems.push(format!(
                "there is no {table} table: this is not a SmartJoiner database (a new database is set up with `smart-joiner migrate up`)"
            ));
        }
    }
    if exists(db, "join_attempts").await? {
        problems.push(
            "join_attempts exists: this is a smart-joiner database already, not SmartJoiner's"
                .to_owned(),
        );
    }
    if exists(db, "seaql_migrations").await?
        && count(db, "SELECT COUNT(*) AS n FROM seaql_migrations".to_owned()).await? > 0
    {
        problems.push(
            "seaql_migrations holds applied migrations: this database is managed by migrations already"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(AdoptError::Refused(problems));
    }

    let acc = columns(db, "accounts").await?;
    let tgt = columns(db, "targets").await?;
    let session_column = pick_column(
        "accounts",
        "session-name",
        "--session-column",
        opts.session_column.as_deref(),
        SESSION_COLUMNS,
        &acc,
        &mut problems,
    );
    let group_column = pick_column(
        "targets",
        "group",
        "--group-column",
        opts.group_column.as_deref(),
        GROUP_COLUMNS,
        &tgt,
        &mut problems,
    );
    let in_use = names_in_use(db, OUR_NAMES).await?;
    if !in_use.is_empty() {
        problems
            .push(format!("names smart-joiner creates are taken already: {}", in_use.join(", ")));
    }
    let (Some(session_column), Some(group_column)) = (session_column, group_column) else {
        return Err(AdoptError::Refused(problems));
    };
    if group_column == "link" && tgt.iter().any(|c| c.name == RENAMED_LINK) {
        problems.push(format!(
            "targets has both link and {RENAMED_LINK}: the group column link cannot be set aside"
        ));
    }
    if session_column == "session_name" {
        let c = acc.iter().find(|c| c.name == "session_name");
        if let Some(c) = c
            && Kind::Text.needs_change(c).is_none()
        {
            problems.push(format!(
                "accounts.session_name is {}; smart-joiner needs text there",
                c.type_name
            ));
        }
    }

    let mut b = Builder { record: Record::default(), changes: Vec::new(), statements: Vec::new() };
    b.record.version = 1;
    b.record.session_column = session_column.clone();
    b.record.group_column = group_column.clone();

    // Ids: an integer primary key the database fills in.
    for (table, cols) in [("accounts", &acc), ("targets", &tgt)] {
        match cols.iter().find(|c| c.name == "id") {
            None => problems.push(format!("{table} has no id column")),
            Some(c) => {
                if Kind::BigInt.needs_change(c).is_none() {
                    problems.push(format!(
                        "{table}.id is {}; smart-joiner needs an integer id",
                        c.type_name
                    ));
                }
                if c.default.is_none() && !c.identity {
                    problems.push(format!(
                        "{table}.id has no default (serial or identity): new rows could not get one"
                    ));
                }
                if !is_primary_key(db, table, "id").await? {
                    problems.push(format!("{table}.id is not the primary key"));
                }
            }
        }
    }
    for (table, cols, specs) in
        [("accounts", &acc, ACCOUNT_COLUMNS), ("targets", &tgt, TARGET_COLUMNS)]
    {
        for s in specs {
            if let Some(c) = cols.iter().find(|c| c.name == s.name)
                && s.kind.needs_change(c).is_none()
            {
                problems.push(format!(
                    "{table}.{} is {}; smart-joiner needs {} there",
                    s.name,
                    c.type_name,
                    s.kind.describe()
                ));
            } else if s.required && !cols.iter().any(|c| c.name == s.name) {
                problems.push(format!("{table} has no {} column", s.name));
            }
        }
    }
    if !problems.is_empty() {
        return Err(AdoptError::Refused(problems));
    }

    // The data: statuses smart-joiner reads, session names, links, bindings.
    for (table, known) in [("accounts", opts.account_statuses), ("targets", opts.target_statuses)] {
        let list: Vec<String> = known.iter().map(|s| literal(s)).collect();
        let sql = format!(
            "SELECT status::text AS s, COUNT(*) AS n FROM {table} \
             WHERE status IS NOT NULL AND status::text NOT IN ({}) GROUP BY 1 ORDER BY 1",
            list.join(", ")
        );
        let rows = db.query_all_raw(pg(sql)).await?;
        for r in rows {
            let s: String = r.try_get("", "s")?;
            let n: i64 = r.try_get("", "n")?;
            problems.push(format!(
                "{table}: {n} row(s) have status {s:?}, which smart-joiner does not know (it knows {})",
                known.join(", ")
            ));
        }
    }
    let sess = ident(&session_column);
    let no_name = count(
        db,
        format!("SELECT COUNT(*) AS n FROM accounts WHERE COALESCE(TRIM({sess}::text), '') = ''"),
    )
    .await?;
    if no_name > 0 {
        problems.push(format!("accounts: {no_name} row(s) have no {session_column}"));
    }
    let dup_sql = format!(
        "SELECT {sess}::text AS v, COUNT(*) AS n FROM accounts WHERE {sess} IS NOT NULL \
         GROUP BY 1 HAVING COUNT(*) > 1 ORDER BY 1"
    );
    for r in db.query_all_raw(pg(dup_sql)).await? {
        let n: i64 = r.try_get("", "n")?;
        problems.push(format!(
            "accounts: {n} rows share one {session_column} (each account needs its own)"
        ));
    }
    let orphans = count(
        db,
        "SELECT COUNT(*) AS n FROM targets t WHERE t.assigned_account_id IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.assigned_account_id)"
            .to_owned(),
    )
    .await?;
    if tgt.iter().any(|c| c.name == "assigned_account_id") && orphans > 0 {
        problems
            .push(format!("targets: {orphans} row(s) are bound to an account that does not exist"));
    }

    let has_assigned = tgt.iter().any(|c| c.name == "assigned_account_id");
    let grp = ident(&group_column);
    let assigned_sql = if has_assigned { "assigned_account_id::bigint" } else { "NULL::bigint" };
    let em_sql = if tgt.iter().any(|c| c.name == "error_message") {
        "error_message::text"
    } else {
        "NULL::text"
    };
    let rows_sql = format!(
        "SELECT id::bigint AS id, {grp}::text AS v, status::text AS s, \
         {assigned_sql} AS bound, {em_sql} AS em FROM targets ORDER BY id"
    );
    let rows = db.query_all_raw(pg(rows_sql)).await?;
    let mut links: BTreeMap<String, Vec<(i64, Option<i64>)>> = BTreeMap::new();
    let mut parsed: Vec<(i64, String, String)> = Vec::with_capacity(rows.len());
    let mut unparsed = Vec::new();
    let mut joined_unbound = Vec::new();
    let mut bound = 0u64;
    for r in &rows {
        let id: i64 = r.try_get("", "id")?;
        let value: Option<String> = r.try_get("", "v")?;
        let status: Option<String> = r.try_get("", "s")?;
        let status = status.unwrap_or_else(|| "new".to_owned());
        let account: Option<i64> = r.try_get("", "bound")?;
        let em: Option<String> = r.try_get("", "em")?;
        bound += u64::from(account.is_some());
        if status == "joined" && account.is_none() {
            joined_unbound.push(id);
        }
        match value.as_deref().map(|v| (opts.normalise)(v)) {
            Some(Ok((link, kind))) => {
                links.entry(link.clone()).or_default().push((id, account));
                parsed.push((id, link, kind));
            }
            other => {
                let reason = match other {
                    Some(Err(e)) => e,
                    _ => format!("{group_column} is NULL"),
                };
                if opts.workable_statuses.contains(&status.as_str()) {
                    b.record.errored.push(Errored {
                        id,
                        status: status.clone(),
                        error_message: em,
                    });
                }
                unparsed.push(Unparsed { id, reason, status });
            }
        }
    }
    for (link, ids) in &links {
        if ids.len() > 1 {
            let shown: Vec<String> = ids
                .iter()
                .map(|(id, a)| match a {
                    Some(a) => format!("{id} (bound to account {a})"),
                    None => id.to_string(),
                })
                .collect();
            problems.push(format!(
                "targets {} are one group, {link}: keep one row per group",
                shown.join(", ")
            ));
        }
    }
    if !joined_unbound.is_empty() {
        problems.push(format!(
            "targets {} are joined but bound to no account (assigned_account_id is NULL): bind them or set them to error",
            ids_text(&joined_unbound)
        ));
    }
    if !problems.is_empty() {
        return Err(AdoptError::Refused(problems));
    }

    let accounts = count(db, "SELECT COUNT(*) AS n FROM accounts".to_owned()).await?;
    let targets = rows.len() as u64;

    // Ids as bigint (smart-joiner reads them as i64), the referencing column with them.
    for (table, cols) in [("accounts", &acc), ("targets", &tgt)] {
        if let Some(c) = cols.iter().find(|c| c.name == "id")
            && Kind::BigInt.needs_change(c) == Some(true)
        {
            let keep = c.default.clone();
            b.change_type(table, c, Kind::BigInt, None);
            // A serial's nextval() default goes back on at once (the sequence stays).
            if let Some(d) = keep {
                b.statements
                    .push(pg(format!("ALTER TABLE {table} ALTER COLUMN id SET DEFAULT {d}")));
            }
        }
    }

    // accounts
    if session_column != "session_name" {
        b.add_column("accounts", "session_name", Kind::Text, false, None);
        b.run(
            format!("fill accounts.session_name from {session_column}"),
            format!("UPDATE accounts SET session_name = TRIM({sess}::text)"),
        );
        b.set_not_null_new("accounts", "session_name");
        let c = acc.iter().find(|c| c.name == session_column).cloned();
        if let Some(c) = c {
            b.relax_not_null("accounts", &c);
        }
    } else if let Some(c) = acc.iter().find(|c| c.name == "session_name") {
        if Kind::Text.needs_change(c) == Some(true) {
            b.change_type("accounts", c, Kind::Text, None);
        }
        if !c.not_null {
            b.alter_not_null("accounts", c, true);
        }
    }
    if !is_unique(db, "accounts", "session_name").await.unwrap_or(false)
        || session_column != "session_name"
    {
        b.add_unique("accounts", "uq_accounts_session_name", "session_name");
    }
    b.fit_columns(db, "accounts", &acc, ACCOUNT_COLUMNS, &session_column).await?;
    b.record.fillfactor = fillfactor(db).await?;
    b.run(
        "set accounts' fillfactor to 50 (smart-joiner's updates stay on the row's page)",
        "ALTER TABLE accounts SET (fillfactor = 50)",
    );

    // targets
    let source = if group_column == "link" {
        b.run(
            format!("rename targets.link to {RENAMED_LINK} (their group column, kept as it is)"),
            format!("ALTER TABLE targets RENAME COLUMN link TO {RENAMED_LINK}"),
        );
        b.record.renamed_group_column = Some(RENAMED_LINK.to_owned());
        RENAMED_LINK.to_owned()
    } else {
        group_column.clone()
    };
    b.add_column("targets", "link", Kind::Text, false, None);
    b.add_column("targets", "kind", Kind::Text, false, None);
    let group_col = tgt.iter().find(|c| c.name == group_column).cloned();
    if let Some(mut c) = group_col {
        c.name = source.clone();
        b.relax_not_null("targets", &c);
    }
    b.fit_columns(db, "targets", &tgt, TARGET_COLUMNS, &group_column).await?;
    b.changes.push(format!(
        "set targets.link and kind from {group_column} for {} row(s), normalised (@name or t.me/+hash)",
        parsed.len()
    ));
    for chunk in parsed.chunks(1000) {
        let mut values = Vec::with_capacity(chunk.len() * 3);
        let mut tuples = Vec::with_capacity(chunk.len());
        for (i, (id, link, kind)) in chunk.iter().enumerate() {
            tuples.push(format!(
                "(${}::bigint, ${}::text, ${}::text)",
                3 * i + 1,
                3 * i + 2,
                3 * i + 3
            ));
            values.push(Value::from(*id));
            values.push(Value::from(link.clone()));
            values.push(Value::from(kind.clone()));
        }
        let sql = format!(
            "UPDATE targets AS t SET link = v.link, kind = v.kind FROM (VALUES {}) AS v(id, link, kind) \
             WHERE t.id = v.id",
            tuples.join(", ")
        );
        b.statements.push(Statement::from_sql_and_values(DbBackend::Postgres, sql, values));
    }
    if !unparsed.is_empty() {
        b.changes.push(format!(
            "set targets.link to unparsed:<id> and kind to unparsed for the {} row(s) whose {group_column} is not a link (listed below; their {group_column} is kept)",
            unparsed.len()
        ));
        let ids: Vec<String> = unparsed.iter().map(|u| u.id.to_string()).collect();
        for chunk in ids.chunks(1000) {
            b.statements.push(pg(format!(
                "UPDATE targets SET link = 'unparsed:' || id::text, kind = {} WHERE id IN ({})",
                literal(UNPARSED_KIND),
                chunk.join(", ")
            )));
        }
    }
    if !b.record.errored.is_empty() {
        let ids: Vec<i64> = b.record.errored.iter().map(|e| e.id).collect();
        b.changes.push(format!(
            "set status error (error_code {UNPARSED_CODE}) on the {} unparsed row(s) still to be joined: {}",
            ids.len(),
            ids_text(&ids)
        ));
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        for chunk in list.chunks(1000) {
            b.statements.push(pg(format!(
                "UPDATE targets SET status = 'error', error_code = {}, \
                 error_message = 'adoption: the group is not a Telegram link smart-joiner can join' \
                 WHERE id IN ({})",
                literal(UNPARSED_CODE),
                chunk.join(", ")
            )));
        }
    }
    b.set_not_null_new("targets", "link");
    b.set_not_null_new("targets", "kind");
    b.add_unique("targets", "uq_targets_link", "link");
    if !has_fk_to_accounts(db, "assigned_account_id").await? {
        b.run(
            "add foreign key fk_targets_assigned_account (targets.assigned_account_id -> accounts.id)",
            "ALTER TABLE targets ADD CONSTRAINT fk_targets_assigned_account \
             FOREIGN KEY (assigned_account_id) REFERENCES accounts (id) ON DELETE RESTRICT",
        );
        b.record.added_constraints.push(("targets".into(), "fk_targets_assigned_account".into()));
    }
    b.run(
        "add foreign key fk_targets_claimed_account (targets.claimed_account_id -> accounts.id)",
        "ALTER TABLE targets ADD CONSTRAINT fk_targets_claimed_account \
         FOREIGN KEY (claimed_account_id) REFERENCES accounts (id) ON DELETE RESTRICT",
    );
    b.record.added_constraints.push(("targets".into(), "fk_targets_claimed_account".into()));
    for (name, sql) in [
        (
            "idx_targets_new_by_niche",
            "CREATE INDEX idx_targets_new_by_niche ON targets (niche, id) WHERE status = 'new'",
        ),
        (
            "idx_targets_open_by_next_run",
            "CREATE INDEX idx_targets_open_by_next_run ON targets (status, next_run_at) \
             WHERE status IN ('queued', 'joining')",
        ),
        (
            "idx_targets_bound_account",
            "CREATE INDEX idx_targets_bound_account ON targets (assigned_account_id) \
             WHERE assigned_account_id IS NOT NULL",
        ),
    ] {
        b.run(format!("create index {name}"), sql);
        b.record.added_indexes.push(name.to_owned());
    }

    // join_attempts, as the first migration creates it.
    b.run(
        "create table join_attempts (empty) with its indexes",
        "CREATE TABLE join_attempts (\
         id bigserial PRIMARY KEY, \
         target_id bigint NOT NULL, \
         account_id bigint NOT NULL, \
         epoch bigint NOT NULL, \
         started_at timestamp with time zone NOT NULL, \
         finished_at timestamp with time zone NOT NULL, \
         outcome text NOT NULL, \
         flood_wait_seconds integer NULL, \
         error_code text NULL, \
         worker text NOT NULL, \
         CONSTRAINT fk_join_attempts_target FOREIGN KEY (target_id) REFERENCES targets (id) ON DELETE RESTRICT, \
         CONSTRAINT fk_join_attempts_account FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE RESTRICT)",
    );
    b.statements.push(pg(
        "CREATE INDEX idx_join_attempts_account_finished ON join_attempts (account_id, finished_at)",
    ));
    b.statements.push(pg("CREATE INDEX idx_join_attempts_target ON join_attempts (target_id)"));
    b.record.join_attempts_created = true;
    b.changes.push(format!(
        "mark migrations {} applied; record the adoption in {RECORD_TABLE}",
        ADOPTED_MIGRATIONS.join(", ")
    ));

    Ok(Plan {
        group_column,
        session_column,
        accounts,
        targets,
        bound,
        changes: b.changes,
        unparsed,
        statements: b.statements,
        record: b.record,
    })
}

struct Builder {
    record: Record,
    changes: Vec<String>,
    statements: Vec<Statement>,
}

impl Builder {
    fn run(&mut self, change: impl Into<String>, sql: impl Into<String>) {
        self.changes.push(change.into());
        self.statements.push(pg(sql));
    }

    fn add_column(
        &mut self,
        table: &str,
        column: &str,
        kind: Kind,
        not_null: bool,
        default: Option<&str>,
    ) {
        let mut sql = format!("ALTER TABLE {table} ADD COLUMN {} {}", ident(column), kind.sql());
        let mut change = format!("add column {table}.{column} {}", kind.sql());
        if let Some(d) = default {
            sql.push_str(&format!(" DEFAULT {d}"));
            change.push_str(&format!(" default {d}"));
        }
        if not_null {
            sql.push_str(" NOT NULL");
            change.push_str(" not null");
        }
        self.run(change, sql);
        self.record.added_columns.push((table.to_owned(), column.to_owned()));
    }

    /// NOT NULL on a column the adoption added and filled.
    fn set_not_null_new(&mut self, table: &str, column: &str) {
        self.run(
            format!("set {table}.{column} not null"),
            format!("ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL", ident(column)),
        );
    }

    /// A column of theirs smart-joiner never writes: new rows would fail its NOT NULL.
    fn relax_not_null(&mut self, table: &str, c: &Column) {
        if c.not_null {
            self.alter_not_null(table, c, false);
        }
    }

    fn alter_not_null(&mut self, table: &str, c: &Column, not_null: bool) {
        let (verb, word) = if not_null { ("SET", "not null") } else { ("DROP", "nullable") };
        self.run(
            format!("make {table}.{} {word}", c.name),
            format!("ALTER TABLE {table} ALTER COLUMN {} {verb} NOT NULL", ident(&c.name)),
        );
        self.record.altered.push(Altered {
            table: table.to_owned(),
            column: c.name.clone(),
            original_type: None,
            default_changed: false,
            original_default: None,
            original_not_null: Some(c.not_null),
        });
    }

    fn add_unique(&mut self, table: &str, name: &str, column: &str) {
        self.run(
            format!("add unique constraint {name} on {table}.{column}"),
            format!("ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE ({})", ident(column)),
        );
        self.record.added_constraints.push((table.to_owned(), name.to_owned()));
    }

    /// Changes a column's type to `kind` (its default dropped first: an enum default cannot be
    /// cast), then sets `default` when given.
    fn change_type(&mut self, table: &str, c: &Column, kind: Kind, default: Option<&str>) {
        let col = ident(&c.name);
        if c.default.is_some() {
            self.statements
                .push(pg(format!("ALTER TABLE {table} ALTER COLUMN {col} DROP DEFAULT")));
        }
        self.run(
            format!(
                "change {table}.{} from {} to {}{}",
                c.name,
                c.type_name,
                kind.sql(),
                if kind == Kind::Time { " (read as UTC)" } else { "" }
            ),
            format!(
                "ALTER TABLE {table} ALTER COLUMN {col} TYPE {} USING {}",
                kind.sql(),
                kind.using(&col)
            ),
        );
        if let Some(d) = default {
            self.run(
                format!("set {table}.{} default {d}", c.name),
                format!("ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {d}"),
            );
        }
        self.record.altered.push(Altered {
            table: table.to_owned(),
            column: c.name.clone(),
            original_type: Some(c.type_name.clone()),
            default_changed: true,
            original_default: c.default.clone(),
            original_not_null: None,
        });
    }

    /// Makes every column of `specs` exist with a type smart-joiner reads, its NOT NULL and
    /// its default; relaxes the NOT NULL of their columns smart-joiner does not write.
    async fn fit_columns<C: ConnectionTrait>(
        &mut self,
        db: &C,
        table: &str,
        cols: &[Column],
        specs: &[Spec],
        mapped: &str,
    ) -> Result<(), DbErr> {
        for s in specs {
            let Some(c) = cols.iter().find(|c| c.name == s.name) else {
                let default = s.default;
                self.add_column(table, s.name, s.kind, s.not_null && default.is_some(), default);
                continue;
            };
            let col = ident(s.name);
            // CHECK constraints on a status would refuse smart-joiner's other statuses.
            if s.name == "status" {
                for (name, def) in checks_on(db, table, s.name).await? {
                    self.run(
                        format!("drop check constraint {table}.{name} ({def})"),
                        format!("ALTER TABLE {table} DROP CONSTRAINT {}", ident(&name)),
                    );
                    self.record.dropped_checks.push((table.to_owned(), name, def));
                }
            }
            if s.kind.needs_change(c) == Some(true) {
                self.change_type(table, c, s.kind, s.default);
            } else if let Some(d) = s.default
                && c.default.is_none()
            {
                self.run(
                    format!("set {table}.{} default {d}", s.name),
                    format!("ALTER TABLE {table} ALTER COLUMN {col} SET DEFAULT {d}"),
                );
                self.record.altered.push(Altered {
                    table: table.to_owned(),
                    column: s.name.to_owned(),
                    original_type: None,
                    default_changed: true,
                    original_default: None,
                    original_not_null: None,
                });
            }
            if s.not_null && !c.not_null {
                let nulls: Vec<i64> = {
                    let sql = format!(
                        "SELECT id::bigint AS id FROM {table} WHERE {col} IS NULL ORDER BY id"
                    );
                    let rows = db.query_all_raw(pg(sql)).await?;
                    rows.iter().map(|r| r.try_get("", "id")).collect::<Result<_, _>>()?
                };
                if !nulls.is_empty() {
                    let fill = s.fill.unwrap_or("''");
                    self.run(
                        format!(
                            "fill {} NULL {table}.{} with {fill} (rows {})",
                            nulls.len(),
                            s.name,
                            ids_text(&nulls)
                        ),
                        format!("UPDATE {table} SET {col} = {fill} WHERE {col} IS NULL"),
                    );
                    self.record.filled.push(Filled {
                        table: table.to_owned(),
                        column: s.name.to_owned(),
                        ids: nulls,
                    });
                }
                self.alter_not_null(table, c, true);
            } else if !s.not_null && c.not_null {
                // smart-joiner writes NULL there (a cleared error, an unbound target).
                self.alter_not_null(table, c, false);
            }
        }
        // Their other columns: smart-joiner's inserts give them nothing but their default.
        for c in cols {
            let ours = c.name == "id"
                || c.name == mapped
                || specs.iter().any(|s| s.name == c.name)
                || matches!((table, c.name.as_str()), ("accounts", "session_name"))
                || matches!((table, c.name.as_str()), ("targets", "link" | "kind"));
            if !ours && c.not_null && c.default.is_none() && !c.identity {
                self.alter_not_null(table, c, false);
            }
        }
        Ok(())
    }
}

/// Adopts the database: plans again under an exclusive lock on both tables and applies the
/// plan in one transaction. On any error nothing is changed.
pub async fn adopt(db: &DatabaseConnection, opts: &Options<'_>) -> Result<Plan, AdoptError> {
    if db.get_database_backend() != DbBackend::Postgres {
        // The plan says why, changing nothing.
        return plan(db, opts).await;
    }
    let txn = db.begin().await?;
    // Refused right away if another command holds the tables: the adoption does not wait
    // behind a running batch.
    txn.execute_unprepared("SET LOCAL lock_timeout = '5s'").await?;
    if exists(&txn, "accounts").await? && exists(&txn, "targets").await? {
        txn.execute_unprepared("LOCK TABLE accounts, targets IN ACCESS EXCLUSIVE MODE").await?;
    }
    let plan = plan(&txn, opts).await?;
    for statement in &plan.statements {
        txn.execute_raw(statement.clone()).await?;
    }
    let record = serde_json::to_string(&plan.record)
        .map_err(|e| DbErr::Custom(format!("cannot write the adoption record: {e}")))?;
    txn.execute_unprepared(&format!(
        "CREATE TABLE {RECORD_TABLE} (id integer PRIMARY KEY, adopted_at timestamp with time zone \
         NOT NULL DEFAULT CURRENT_TIMESTAMP, record text NOT NULL)"
    ))
    .await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("INSERT INTO {RECORD_TABLE} (id, record) VALUES (1, $1)"),
        [Value::from(record)],
    ))
    .await?;
    crate::install_migrations_table(&txn).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for name in ADOPTED_MIGRATIONS {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ($1, $2)",
            [Value::from(name), Value::from(now)],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(plan)
}

/// Whether the database was adopted (its first migration's `down` is then [`undo`]).
pub async fn is_adopted<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(false);
    }
    exists(db, RECORD_TABLE).await
}

async fn read_record<C: ConnectionTrait>(db: &C) -> Result<Record, DbErr> {
    let sql = format!("SELECT record FROM {RECORD_TABLE} WHERE id = 1");
    let row: Option<QueryResult> = db.query_one_raw(pg(sql)).await?;
    let text: String = match row {
        Some(row) => row.try_get("", "record")?,
        None => return Err(DbErr::Custom(format!("{RECORD_TABLE} is empty: cannot undo"))),
    };
    serde_json::from_str(&text)
        .map_err(|e| DbErr::Custom(format!("{RECORD_TABLE} cannot be read: {e}")))
}

/// Puts an adopted database back in SmartJoiner's shape (run by the first migration's `down`,
/// inside its transaction): `join_attempts` and smart-joiner's indexes, constraints and
/// columns dropped, their types, defaults, NOT NULLs and checks restored, the NULLs it filled
/// and the statuses it set put back. Rows added since the adoption are kept, their group and
/// session columns filled from smart-joiner's. Fails, changing nothing, when a NOT NULL of
/// theirs cannot come back (a row added since has no value for it).
pub async fn undo<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let r = read_record(db).await?;
    if r.join_attempts_created {
        db.execute_unprepared("DROP TABLE IF EXISTS join_attempts").await?;
    }
    for name in OUR_NAMES {
        if name.starts_with("idx_") {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}")).await?;
        }
    }
    for (table, name) in r.added_constraints.iter().rev() {
        db.execute_unprepared(&format!("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"))
            .await?;
    }
    let group = r.renamed_group_column.clone().unwrap_or_else(|| r.group_column.clone());
    // Rows added since the adoption: their columns from smart-joiner's.
    // (An unparsed row's NULL stays NULL: its link is only a placeholder.)
    db.execute_unprepared(&format!(
        "UPDATE targets SET {g} = link WHERE {g} IS NULL AND kind <> {}",
        literal(UNPARSED_KIND),
        g = ident(&group)
    ))
    .await?;
    if r.session_column != "session_name" {
        db.execute_unprepared(&format!(
            "UPDATE accounts SET {s} = session_name WHERE {s} IS NULL",
            s = ident(&r.session_column)
        ))
        .await?;
    }
    for e in &r.errored {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE targets SET status = $1, error_message = $2 WHERE id = $3 AND status = 'error' \
             AND error_code = $4",
            [
                Value::from(e.status.clone()),
                Value::from(e.error_message.clone()),
                Value::from(e.id),
                Value::from(UNPARSED_CODE),
            ],
        ))
        .await?;
    }
    for f in &r.filled {
        let ids: Vec<String> = f.ids.iter().map(|i| i.to_string()).collect();
        for chunk in ids.chunks(1000) {
            db.execute_unprepared(&format!(
                "ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL; \
                 UPDATE {t} SET {c} = NULL WHERE id IN ({})",
                chunk.join(", "),
                t = f.table,
                c = ident(&f.column)
            ))
            .await?;
        }
    }
    for (table, column) in r.added_columns.iter().rev() {
        db.execute_unprepared(&format!(
            "ALTER TABLE {table} DROP COLUMN IF EXISTS {}",
            ident(column)
        ))
        .await?;
    }
    for a in r.altered.iter().rev() {
        let (t, c) = (&a.table, ident(&a.column));
        if let Some(original) = &a.original_type {
            db.execute_unprepared(&format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"))
                .await?;
            let using = if original.starts_with("timestamp without time zone") {
                format!("{c} AT TIME ZONE 'UTC'")
            } else {
                format!("{c}::{original}")
            };
            db.execute_unprepared(&format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {original} USING {using}"
            ))
            .await?;
        }
        if a.default_changed {
            let sql = match &a.original_default {
                Some(d) => format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {d}"),
                None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
            };
            db.execute_unprepared(&sql).await?;
        }
        match a.original_not_null {
            Some(true) => {
                let nulls =
                    count(db, format!("SELECT COUNT(*) AS n FROM {t} WHERE {c} IS NULL")).await?;
                if nulls > 0 {
                    return Err(DbErr::Custom(format!(
                        "cannot restore NOT NULL on {t}.{}: {nulls} row(s) added since the adoption have no value there; fill them, then roll back again",
                        a.column
                    )));
                }
                db.execute_unprepared(&format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"))
                    .await?;
            }
            Some(false) => {
                db.execute_unprepared(&format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"))
                    .await?;
            }
            None => {}
        }
    }
    for (table, name, def) in &r.dropped_checks {
        db.execute_unprepared(&format!("ALTER TABLE {table} ADD CONSTRAINT {} {def}", ident(name)))
            .await?;
    }
    if let Some(renamed) = &r.renamed_group_column {
        db.execute_unprepared(&format!(
            "ALTER TABLE targets RENAME COLUMN {} TO {}",
            ident(renamed),
            ident(&r.group_column)
        ))
        .await?;
    }
    match &r.fillfactor {
        Some(v) => {
            db.execute_unprepared(&format!("ALTER TABLE accounts SET (fillfactor = {v})")).await?
        }
        None => db.execute_unprepared("ALTER TABLE accounts RESET (fillfactor)").await?,
    };
    db.execute_unprepared(&format!("DROP TABLE {RECORD_TABLE}")).await?;
    Ok(())
}

/// Why [`undo`] would fail now, if it would: it is tried in a transaction that is rolled
/// back, so `migrate down` can refuse before rolling back any migration.
pub async fn undo_blocker(db: &DatabaseConnection) -> Result<Option<String>, DbErr> {
    let txn = db.begin().await?;
    let tried = undo(&txn).await;
    txn.rollback().await?;
    Ok(tried.err().map(|e| match e {
        DbErr::Custom(message) => message,
        other => other.to_string(),
    }))
}
