use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// Who: the console's token identity, or `cli:<user>`.
    pub actor: String,
    /// What: `pause`, `resume`, `retry`, `release`, `import`.
    pub action: String,
    /// On which row: `account:<id>`, `target:<id>`, `niche:<name>`.
    pub subject: String,
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
