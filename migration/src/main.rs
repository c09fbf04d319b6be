//! `migration up [n] | down [n] | status`, against DATABASE_URL.

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;

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
    Down { steps: Option<u32> },
    /// List every migration and whether it is applied.
    Status,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let db = Database::connect(cli.database_url.as_str()).await?;
    match cli.command {
        Command::Up { steps } => Migrator::up(&db, steps).await?,
        Command::Down { steps } => Migrator::down(&db, Some(steps.unwrap_or(1))).await?,
        Command::Status => {
            for m in Migrator::get_migration_with_status(&db).await? {
                println!("{:?}\t{}", m.status(), m.name());
            }
        }
    }
    Ok(())
}
