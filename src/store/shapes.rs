//! Postgres: the join's statements rendered once per shape.
//!
//! The pick, the take, the gate and the decision are built with sea-query, whose doc comments
//! show their SQL (a test compares). Building and rendering them for every join was about a
//! fifth of a worker's CPU (BENCHMARKS.md, session 13), though their text changes only with
//! their shape (which conditions are there, how many ids a list holds) and never with their
//! inputs, which are all bound values. So each shape is built once, on its first use, and its
//! SQL kept; later uses send that SQL with values listed by hand in the order the builder
//! binds them.
//!
//! The builder stays the definition. A first use keeps the SQL only when the listed values are
//! exactly the ones the builder bound; otherwise the statement is built on every use and the
//! mismatch is logged once. Debug builds (every test) also build each statement on every use
//! and panic when the cached SQL or the listed values differ from it, so a change to a
//! builder that the list does not follow fails the tests at once.

use std::collections::HashMap;
use std::sync::Mutex;

use sea_orm::sea_query::{Value, Values};
use sea_orm::{DbBackend, Statement};

use super::Claimable;

/// The statements kept, and what decides their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Shape {
    /// The pick (`eligible_query`): how many accounts it leaves out, and whether it shuffles a
    /// spread.
    Pick { excluded: usize, spread: bool },
    /// The take (`take_statement`) of the targets `Claimable` allows.
    Take(Claimable),
    /// The gate (`Store::gate_join`).
    Gate,
    /// The decision (`decision_statement`): the changes it writes.
    Decision(super::apply::DecisionShape),
}

/// A pick leaving out more accounts than this is built each time, so that the kept shapes stay
/// few: a job leaves out a handful (the accounts it tried, those without configuration).
const MOST_EXCLUDED_KEPT: usize = 32;

impl Shape {
    fn kept(self) -> bool {
        match self {
            Shape::Pick { excluded, .. } => excluded <= MOST_EXCLUDED_KEPT,
            Shape::Take(_) | Shape::Gate | Shape::Decision(_) => true,
        }
    }
}

/// The SQL of each shape seen, or `None` for a shape whose listed values did not match.
#[derive(Debug, Default)]
pub(super) struct Shapes {
    sql: Mutex<HashMap<Shape, Option<String>>>,
}

impl Shapes {
    /// The statement of `shape` with `values`: its kept SQL if there is one, else `build()`'s
    /// (kept for next time when `values` are the values it bound).
    pub(super) fn statement(
        &self,
        shape: Shape,
        values: Vec<Value>,
        build: impl FnOnce() -> Statement,
    ) -> Statement {
        let built =
            self.try_statement(shape, values, || Ok::<_, std::convert::Infallible>(build()));
        match built {
            Ok(stmt) => stmt,
            Err(never) => match never {},
        }
    }

    /// [`statement`](Self::statement) for a builder that may fail; its error is returned, and
    /// nothing is kept.
    pub(super) fn try_statement<E>(
        &self,
        shape: Shape,
        values: Vec<Value>,
        build: impl FnOnce() -> Result<Statement, E>,
    ) -> Result<Statement, E> {
        let values = Values(values);
        let kept = self.sql.lock().unwrap_or_else(|p| p.into_inner()).get(&shape).cloned();
        match kept {
            Some(Some(sql)) => {
                let stmt = Statement { sql, values: Some(values), db_backend: DbBackend::Postgres };
                if cfg!(debug_assertions) {
                    let built = build()?;
                    assert_eq!(stmt.sql, built.sql, "{shape:?}: the kept SQL is not the built SQL");
                    assert_eq!(stmt.values, built.values, "{shape:?}: listed values differ");
                }
                Ok(stmt)
            }
            Some(None) => build(),
            None => {
                let built = build()?;
                let matches = built.values.as_ref() == Some(&values);
                if !matches {
                    debug_assert!(
                        matches,
                        "{shape:?}: listed values {values:?} differ from the built {:?}",
                        built.values
                    );
                    tracing::error!(
                        ?shape,
                        "a statement's listed values differ from the built ones; it is built on every use"
                    );
                }
                if shape.kept() {
                    let sql = matches.then(|| built.sql.clone());
                    self.sql.lock().unwrap_or_else(|p| p.into_inner()).insert(shape, sql);
                }
                Ok(built)
            }
        }
    }
}

impl super::Store {
    /// One of the join's statements: on Postgres its kept SQL with `values()` (see
    /// [`Shapes::statement`]), on SQLite `build()`'s, as it always was.
    pub(super) fn join_statement(
        &self,
        shape: Shape,
        values: impl FnOnce() -> Vec<Value>,
        build: impl FnOnce() -> Statement,
    ) -> Statement {
        if self.is_postgres() { self.shapes.statement(shape, values(), build) } else { build() }
    }
}

/// A value as the builder binds it.
pub(super) fn v(x: impl Into<Value>) -> Value {
    x.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str, values: Vec<Value>) -> Statement {
        Statement {
            sql: sql.to_owned(),
            values: Some(Values(values)),
            db_backend: DbBackend::Postgres,
        }
    }

    #[test]
    fn a_shape_is_built_once_and_its_sql_sent_with_the_listed_values() {
        let shapes = Shapes::default();
        let first = shapes.statement(Shape::Gate, vec![v(1)], || stmt("SELECT $1", vec![v(1)]));
        assert_eq!(first.sql, "SELECT $1");
        let builds = std::sync::atomic::AtomicUsize::new(0);
        let later = shapes.statement(Shape::Gate, vec![v(2)], || {
            builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stmt("SELECT $1", vec![v(2)])
        });
        assert_eq!((later.sql.as_str(), later.values), ("SELECT $1", Some(Values(vec![v(2)]))));
        // Debug builds build it again to check it; release builds do not.
        let expected = usize::from(cfg!(debug_assertions));
        assert_eq!(builds.into_inner(), expected);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "listed values"))]
    fn listed_values_that_differ_from_the_built_ones_are_refused() {
        let shapes = Shapes::default();
        let built = shapes.statement(Shape::Gate, vec![v(1)], || stmt("SELECT $1", vec![v(2)]));
        // Release builds: the built statement is sent, and built again next time.
        assert_eq!(built.values, Some(Values(vec![v(2)])));
        let again = shapes.statement(Shape::Gate, vec![v(1)], || stmt("SELECT $1", vec![v(3)]));
        assert_eq!(again.values, Some(Values(vec![v(3)])));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "kept SQL"))]
    fn a_builder_that_changes_its_sql_under_a_kept_shape_fails_debug_builds() {
        let shapes = Shapes::default();
        shapes.statement(Shape::Gate, vec![v(1)], || stmt("SELECT $1", vec![v(1)]));
        let kept = shapes.statement(Shape::Gate, vec![v(1)], || stmt("SELECT $1 + 0", vec![v(1)]));
        // Release builds trust the kept SQL.
        assert_eq!(kept.sql, "SELECT $1");
    }

    #[test]
    fn picks_leaving_out_many_accounts_are_not_kept() {
        let shapes = Shapes::default();
        let many = Shape::Pick { excluded: MOST_EXCLUDED_KEPT + 1, spread: true };
        shapes.statement(many, vec![v(1)], || stmt("SELECT $1", vec![v(1)]));
        assert!(shapes.sql.lock().unwrap().is_empty());
        let few = Shape::Pick { excluded: 2, spread: true };
        shapes.statement(few, vec![v(1)], || stmt("SELECT $1", vec![v(1)]));
        assert_eq!(shapes.sql.lock().unwrap().len(), 1);
    }
}
