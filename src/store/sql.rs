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
