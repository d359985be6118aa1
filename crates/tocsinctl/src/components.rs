//! `tocsinctl components list|put|delete`: the component catalogue.

use tocsin_proto::v1;

use crate::client::{CtlError, Server};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ComponentsCommand {
    /// Every component, in the order they were added.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a component, or replace the one with this id.
    Put {
        /// The id incidents and preferences name it by ("payments-api").
        id: String,
        /// What customers read ("Payments API").
        #[arg(long)]
        name: String,
        /// Where a status page lists it ("Platform").
        #[arg(long)]
        group: Option<String>,
        /// A sentence for customers about what it is.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a component (refused while an open incident names it).
    Delete { id: String },
}

pub(crate) async fn run(server: &Server, command: ComponentsCommand) -> Result<(), CtlError> {
    let mut client = server.components();
    match command {
        ComponentsCommand::List { json } => {
            let listed = client
                .list_components(v1::ListComponentsRequest {})
                .await
                .map_err(|status| server.fail(status))?
                .into_inner()
                .components;
            if json {
                for c in &listed {
                    println!("{}", as_json(c));
                }
            } else if listed.is_empty() {
                println!(
                    "the catalogue is empty: components are free-form names until one is added"
                );
            } else {
                crate::table::print(&["ID", "NAME", "GROUP", "DESCRIPTION"], &rows(&listed));
            }
        }
        ComponentsCommand::Put {
            id,
            name,
            group,
            description,
        } => {
            let reply = client
                .put_component(v1::PutComponentRequest {
                    component: Some(v1::Component {
                        id,
                        name,
                        group: group.unwrap_or_default(),
                        description: description.unwrap_or_default(),
                    }),
                })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner();
            let c = reply.component.unwrap_or_default();
            let done = if reply.created { "added" } else { "updated" };
            println!("{done} component {} \"{}\"", c.id, c.name);
        }
        ComponentsCommand::Delete { id } => {
            let reply = client
                .delete_component(v1::DeleteComponentRequest { id: id.clone() })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner();
            if reply.deleted {
                println!("deleted component {id}");
            } else {
                println!("no component {id}; nothing deleted");
            }
        }
    }
    Ok(())
}

fn rows(components: &[v1::Component]) -> Vec<Vec<String>> {
    components
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.name.clone(),
                c.group.clone(),
                c.description.clone(),
            ]
        })
        .collect()
}

fn as_json(c: &v1::Component) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "name": c.name,
        "group": Some(&c.group).filter(|g| !g.is_empty()),
        "description": Some(&c.description).filter(|d| !d.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_show_every_field_and_leave_absent_ones_out_of_json() {
        let c = v1::Component {
            id: "payments-api".into(),
            name: "Payments API".into(),
            group: "Platform".into(),
            description: String::new(),
        };
        assert_eq!(
            crate::table::render(
                &["ID", "NAME", "GROUP", "DESCRIPTION"],
                &rows(std::slice::from_ref(&c))
            ),
            "ID            NAME          GROUP     DESCRIPTION\npayments-api  Payments API  Platform\n"
        );
        assert_eq!(
            as_json(&c),
            serde_json::json!({"id": "payments-api", "name": "Payments API", "group": "Platform", "description": null})
        );
    }
}
