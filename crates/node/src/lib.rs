//! PiCloud's node (DESIGN.md §2): the function endpoints `/fn/{tenant}/{function}/{*rest}`,
//! served from a routing table held in memory, the ingress limits, the metrics, the scheduler
//! and dispatch to the executor. It never imports the control plane. Nothing on the
//! request path of a public function touches the database; the table follows the store's
//! change announcements ([`picloud_store::RouteEvent`]) and reloads everything after a
//! reconnect. [`server`] and [`args`] hold what the server binaries are composed of.

pub mod args;
mod endpoints;
pub mod hosts;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod scheduler;
pub mod server;
mod table;

pub use endpoints::{EndpointState, router};
pub use hosts::{FunctionHosts, route_by_host};
pub use limits::{Ingress, IngressConfig};
pub use metrics::{Metrics, PoolFigures};
pub use table::{LocalRoutes, RoutingTable, start_routing};
