//! What `lbctl` prints: the service list and the kube-proxy replacement status, as text laid
//! out like the documents' examples and as JSON.

mod service_list;
mod status;
mod table;

pub use service_list::{BackendEntry, ServiceEntry, ServiceList};
pub use status::{KprStatus, ServiceTypes};
