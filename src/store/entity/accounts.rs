use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub session_name: String,
    pub pool: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub next_allowed_action_time: Option<DateTimeUtc>,
    pub last_action_at: Option<DateTimeUtc>,
    pub lease_epoch: i64,
    /// Set while a worker holds the account (see the migration `account_hold`).
    pub held_until: Option<DateTimeUtc>,
    /// What Telegram said when the account last connected (see the migration `policies`).
    pub premium: Option<bool>,
    pub channel_limit: Option<i32>,
    pub frozen_since: Option<DateTimeUtc>,
    pub frozen_until: Option<DateTimeUtc>,
    pub freeze_appeal_url: Option<String>,
    pub profile_read_at: Option<DateTimeUtc>,
    /// When `accounts check` last connected it, and its verdict.
    pub checked_at: Option<DateTimeUtc>,
    pub check_result: Option<String>,
    /// The account's own active hours (`ActiveHours` text); NULL: the pool's.
    pub active_hours: Option<String>,
    /// How many targets are bound to the account (see the migration `bound_targets`): kept
    /// exact by every write that binds a target, so the pick need not count them.
    pub bound_targets: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::join_attempts::Entity")]
    JoinAttempts,
}

impl Related<super::join_attempts::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::JoinAttempts.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
