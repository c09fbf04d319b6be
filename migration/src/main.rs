//! `migration up [n] | down [n] [--yes] | status`, against DATABASE_URL.
//!
//! `smart-joiner migrate` does the same with the application's reporting; this binary is the
//! schema crate's own tool and keeps to the same safety rule: `down` refuses while the tables it
//! would drop hold rows, unless `--yes`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait, plan_rollback};
use sea_orm_migration::sea_orm::{Database, DatabaseConnection};

#[derive(Parser)]
#[command(about = "Applies or reverts the smart-joiner database schema")]
struct Cli {
    /// Postgres or SQLite URL (sqlite://file.db?mode=rwc).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations (all, or the next N).
    Up { steps: Option<u32> },
    /// Revert applied migrations (the last one, or the last N).
    Down {
        steps: Option<u32>,
        /// Drop tables even when they hold rows (every row is lost).
        #[arg(long)]
        yes: bool,
    },
    /// List every migration and whether it is applied.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("migration: {}", without_password(&message, &cli.database_url));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), String> {
    let db = connect(&cli.database_url).await?;
    match cli.command {
        Command::Up { steps } => Migrator::up(&db, steps).await.map_err(|e| e.to_string())?,
        Command::Down { steps, yes } => {
            let plan = plan_rollback(&db, steps.unwrap_or(1)).await.map_err(|e| e.to_string())?;
            if !plan.tables_with_rows.is_empty() && !yes {
                let tables: Vec<String> = plan
                    .tables_with_rows
                    .iter()
                    .map(|(t, n)| format!("{t} ({n} row(s))"))
                    .collect();
                return Err(format!(
                    "rolling back would drop {}: nothing was rolled back; back the database up \
                     and pass --yes to drop them",
                    tables.join(", ")
                ));
            }
            if !plan.migrations.is_empty() {
                let steps = plan.migrations.len() as u32;
                Migrator::down(&db, Some(steps)).await.map_err(|e| e.to_string())?;
            }
            println!("rolled back {} migration(s)", plan.migrations.len());
            for name in &plan.migrations {
                println!("  {name}");
            }
        }
        Command::Status => {
            let all = Migrator::get_migration_with_status(&db).await.map_err(|e| e.to_string())?;
            for m in all {
                println!("{:?}\t{}", m.status(), m.name());
            }
        }
    }
    Ok(())
}

async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    Database::connect(url).await.map_err(|e| format!("cannot connect to the database: {e}"))
}

/// `text` without the password of `url`. sea-orm quotes a connection string it cannot parse
/// whole; this crate cannot use smart-joiner's redaction (smart-joiner depends on it), so it
/// cuts the password out itself: everything between the first `:` after `scheme://` and the
/// last `@`, which may take more than the password but never less.
fn without_password(text: &str, url: &str) -> String {
    let Some(rest) = url.find("://").map(|i| &url[i + 3..]) else { return text.to_owned() };
    let Some(at) = rest.rfind('@') else { return text.to_owned() };
    match rest[..at].find(':') {
        Some(colon) if colon + 1 < at => text.replace(&rest[colon + 1..at], "[redacted]"),
        _ => text.to_owned(),
    }
}
