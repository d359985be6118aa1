//! The `tocsin.v1.ComponentService` handlers: the component catalogue.

use tocsin_core::Component;
use tocsin_core::component::check_id;
use tocsin_proto::v1::{self, component_service_server::ComponentService};
use tocsin_store::{ComponentPut, Store};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::catalogue::Catalogue;
use crate::status::{domain_status, status};

/// The gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ComponentApi {
    store: Store,
    catalogue: Catalogue,
}

impl ComponentApi {
    pub fn new(store: Store, catalogue: Catalogue) -> Self {
        Self { store, catalogue }
    }
}

#[tonic::async_trait]
impl ComponentService for ComponentApi {
    #[instrument(skip_all, fields(component))]
    async fn put_component(
        &self,
        request: Request<v1::PutComponentRequest>,
    ) -> Result<Response<v1::PutComponentResponse>, Status> {
        let component = request
            .into_inner()
            .component
            .ok_or_else(|| Status::invalid_argument("component: is required"))?;
        let component = Component::from(component)
            .validate()
            .map_err(domain_status)?;
        tracing::Span::current().record("component", component.id.as_str());
        let put = self.store.put_component(&component).await.map_err(status)?;
        self.catalogue.invalidate();
        info!(name = %component.name, created = put == ComponentPut::Created, "component put");
        Ok(Response::new(v1::PutComponentResponse {
            component: Some(v1::Component::from(&component)),
            created: put == ComponentPut::Created,
        }))
    }

    async fn list_components(
        &self,
        _request: Request<v1::ListComponentsRequest>,
    ) -> Result<Response<v1::ListComponentsResponse>, Status> {
        let components = self.store.components().await.map_err(status)?;
        Ok(Response::new(v1::ListComponentsResponse {
            components: components.iter().map(v1::Component::from).collect(),
        }))
    }

    #[instrument(skip_all, fields(component = %request.get_ref().id))]
    async fn delete_component(
        &self,
        request: Request<v1::DeleteComponentRequest>,
    ) -> Result<Response<v1::DeleteComponentResponse>, Status> {
        let id = request.into_inner().id;
        check_id(&id).map_err(domain_status)?;
        let deleted = self.store.delete_component(&id).await.map_err(status)?;
        self.catalogue.invalidate();
        info!(deleted, "component deleted");
        Ok(Response::new(v1::DeleteComponentResponse { deleted }))
    }
}
