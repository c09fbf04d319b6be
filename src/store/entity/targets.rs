use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "targets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Normalised: `@name` or `t.me/+hash` (the Display of `TargetLink`).
    #[sea_orm(unique)]
    pub link: String,
    /// `username` or `invite`.
    pub kind: String,
    pub niche: String,
    pub status: String,
    /// Write-once: the account the target is bound to after a join or a join request.
    pub assigned_account_id: Option<i64>,
    pub claimed_account_id: Option<i64>,
    pub claim_epoch: Option<i64>,
    pub joined_at: Option<DateTimeUtc>,
    pub warmup_ends_at: Option<DateTimeUtc>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    /// In-doubt answers under the current claim.
    pub in_doubt_tries: i32,
    pub enqueued_at: Option<DateTimeUtc>,
    pub next_run_at: Option<DateTimeUtc>,
    pub peer_id: Option<i64>,
    pub title: Option<String>,
    /// The folder link (`t.me/addlist/SLUG`) this target was expanded from.
    pub folder: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::accounts::Entity",
        from = "Column::AssignedAccountId",
        to = "super::accounts::Column::Id"
    )]
    AssignedAccount,
    #[sea_orm(
        belongs_to = "super::accounts::Entity",
        from = "Column::ClaimedAccountId",
        to = "super::accounts::Column::Id"
    )]
    ClaimedAccount,
    #[sea_orm(has_many = "super::join_attempts::Entity")]
    JoinAttempts,
}

impl Related<super::join_attempts::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::JoinAttempts.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
