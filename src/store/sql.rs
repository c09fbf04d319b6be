//! Small SQL building blocks shared by the store's queries: scalar subqueries, and the pieces
//! of the one-statement writes on Postgres (data-modifying CTEs).

use sea_orm::Condition;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, LockType, Query, SelectStatement, SubQueryStatement,
    WithQuery,
};

use super::entity::targets;

/// `(<select>)` as a scalar expression.
pub(super) fn sub(select: SelectStatement) -> Expr {
    Expr::SubQuery(None, Box::new(select.into()))
}

/// `<name> AS (<query>)`
pub(super) fn cte(name: Alias, query: impl Into<SubQueryStatement>) -> CommonTableExpression {
    let mut cte = CommonTableExpression::new();
    cte.query(query).table_name(name);
    cte
}

/// `WITH <ctes> <main>`, built in place. sea-query's own way (`SelectStatement::with`, and the
/// builders' `to_owned()`) clones the whole statement on the way, and a join builds two of
/// these (the take and the decision): the clones were a tenth of a worker's CPU
/// (BENCHMARKS.md, session 12).
pub(super) fn with_ctes(
    ctes: impl IntoIterator<Item = CommonTableExpression>,
    main: impl Into<SubQueryStatement>,
) -> WithQuery {
    let mut with = WithQuery::new();
    for cte in ctes {
        with.cte(cte);
    }
    with.query(main);
    with
}

/// `EXISTS (SELECT 1 FROM <cte>)`
pub(super) fn exists_in(cte: &Alias) -> Expr {
    Expr::exists(Query::select().expr(Expr::val(1)).from(cte.clone()).take())
}

/// `SELECT id FROM <cte>`
pub(super) fn ids_of(cte: &Alias) -> SelectStatement {
    Query::select().column(Alias::new("id")).from(cte.clone()).take()
}

/// `SELECT id FROM targets WHERE <cond> FOR UPDATE`: the first CTE of a one-statement write,
/// so the target row is locked (and re-checked if it changed meanwhile) before anything else.
pub(super) fn locked_targets(cond: Condition) -> SelectStatement {
    Query::select()
        .column(targets::Column::Id)
        .from(targets::Entity)
        .cond_where(cond)
        .lock(LockType::Update)
        .take()
}

/// `next_allowed_action_time` is unset or earlier than `until`: a rest `until` would lengthen.
pub(super) fn rest_ends_before(until: chrono::DateTime<chrono::Utc>) -> Condition {
    use super::entity::accounts::Column as C;
    use sea_orm::ColumnTrait;
    Condition::any().add(C::NextAllowedActionTime.is_null()).add(C::NextAllowedActionTime.lt(until))
}

/// The later of `next_allowed_action_time` and `until`: a rest that is only ever lengthened.
pub(super) fn rest_at_least(until: chrono::DateTime<chrono::Utc>) -> Expr {
    use super::entity::accounts::Column as C;
    Expr::case(rest_ends_before(until), Expr::val(until))
        .finally(Expr::col(C::NextAllowedActionTime))
        .into()
}

/// Checks that the ```sql block of the doc comment of `fn item` in `source` is `sql` (spaces
/// and line breaks aside): the statement a function builds and the SQL its comment shows
/// cannot drift apart. On a mismatch it prints the SQL built, to paste.
#[cfg(test)]
pub(super) fn assert_documented(source: &str, item: &str, sql: &str) {
    let lines: Vec<&str> = source.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("fn {item}(")))
        .unwrap_or_else(|| panic!("no `fn {item}(` at the start of a line"));
    let doc: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .map_while(|l| l.trim_start().strip_prefix("///"))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let open = doc.iter().position(|l| l.trim() == "```sql");
    let close = open.and_then(|o| doc[o + 1..].iter().position(|l| l.trim() == "```"));
    let (Some(open), Some(close)) = (open, close) else {
        panic!("the doc comment of {item} has no ```sql block; the statement it builds:\n{sql}")
    };
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let documented = words(&doc[open + 1..open + 1 + close].join(" "));
    assert_eq!(
        documented,
        words(sql),
        "the doc comment of {item} no longer shows the statement it builds, which is:\n{sql}"
    );
}
