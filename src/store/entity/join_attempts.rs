use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "join_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub target_id: i64,
    pub account_id: i64,
    /// The lease epoch the attempt ran under.
    pub epoch: i64,
    pub started_at: DateTimeUtc,
    pub finished_at: DateTimeUtc,
    /// `JoinOutcome::kind()`.
    pub outcome: String,
    pub flood_wait_seconds: Option<i32>,
    pub error_code: Option<String>,
    pub worker: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::targets::Entity",
        from = "Column::TargetId",
        to = "super::targets::Column::Id"
    )]
    Target,
    #[sea_orm(
        belongs_to = "super::accounts::Entity",
        from = "Column::AccountId",
        to = "super::accounts::Column::Id"
    )]
    Account,
}

impl Related<super::targets::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Target.def()
    }
}

impl Related<super::accounts::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
