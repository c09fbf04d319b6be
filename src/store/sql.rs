//! Small SQL building blocks shared by the store's queries: scalar subqueries, and the pieces
//! of the one-statement writes on Postgres (data-modifying CTEs).

use sea_orm::Condition;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, LockType, Query, SelectStatement, SubQueryStatement,
};

use super::entity::targets;

/// `(<select>)` as a scalar expression.
pub(super) fn sub(select: SelectStatement) -> Expr {
    Expr::SubQuery(None, Box::new(select.into()))
}

/// `<name> AS (<query>)`
pub(super) fn cte(name: Alias, query: impl Into<SubQueryStatement>) -> CommonTableExpression {
    CommonTableExpression::new().query(query).table_name(name).to_owned()
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
