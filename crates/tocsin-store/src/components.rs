//! The component catalogue: operators' names for the parts of their service.

use tocsin_core::component::MAX_CATALOGUE;
use tocsin_core::{Component, DomainError};

use crate::{Store, StoreError};

#[derive(sqlx::FromRow)]
struct ComponentRow {
    id: String,
    name: String,
    group_name: Option<String>,
    description: Option<String>,
}

impl From<ComponentRow> for Component {
    fn from(row: ComponentRow) -> Component {
        Component {
            id: row.id,
            name: row.name,
            group: row.group_name,
            description: row.description,
        }
    }
}

/// What [`Store::put_component`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentPut {
    Created,
    Updated,
}

impl Store {
    /// Adds `component` to the catalogue or replaces the entry with its id. It must be
    /// validated ([`Component::validate`]).
    pub async fn put_component(&self, component: &Component) -> Result<ComponentPut, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialises puts, so the size limit holds under concurrent adds; puts are rare.
        sqlx::query("LOCK TABLE components IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let (count, exists): (i64, bool) =
            sqlx::query_as("SELECT count(*), bool_or(id = $1) IS TRUE FROM components")
                .bind(&component.id)
                .fetch_one(&mut *tx)
                .await?;
        if !exists && count as usize >= MAX_CATALOGUE {
            return Err(DomainError::invalid(
                "id",
                format!("the catalogue is full ({MAX_CATALOGUE} components); delete one first"),
            )
            .into());
        }
        sqlx::query(
            "INSERT INTO components (id, name, group_name, description) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
             group_name = EXCLUDED.group_name, description = EXCLUDED.description, \
             updated_at = now()",
        )
        .bind(&component.id)
        .bind(&component.name)
        .bind(&component.group)
        .bind(&component.description)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if exists {
            ComponentPut::Updated
        } else {
            ComponentPut::Created
        })
    }

    /// The whole catalogue, in the order its entries were added.
    pub async fn components(&self) -> Result<Vec<Component>, StoreError> {
        let rows: Vec<ComponentRow> = sqlx::query_as(
            "SELECT id, name, group_name, description FROM components ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Component::from).collect())
    }

    /// Removes a component from the catalogue; `false` when there was none with that id.
    /// Refused while an open incident or maintenance names it: its messages would lose the
    /// name customers know mid-incident.
    pub async fn delete_component(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT incident_id::text FROM incidents \
             WHERE status NOT IN ('resolved', 'completed') AND state->'components' ? $1 LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(incident) = open {
            return Err(DomainError::InvalidTransition(format!(
                "component {id:?} is affected by open incident {incident}; delete it once that \
                 is resolved or completed"
            ))
            .into());
        }
        let deleted = sqlx::query("DELETE FROM components WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }
}
