//! Every HTTP route, declared once: method, path template, the permission it needs, whose
//! record it touches, and its request and response shapes. Routing, the 405 answers,
//! authorization and the OpenAPI document all read this table; a route cannot exist without a
//! permission, and anything not in it is a 404.

use std::collections::HashMap;

/// What a caller must be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Nobody needs to prove anything (`/health`, `/ready`).
    Open,
    /// Any valid identity (the API description).
    Authenticated,
    /// Read customers, devices, twins, telemetry, tickets, alerts.
    ReadData,
    /// Create or change customers, interactions, devices, twins, commands.
    WriteData,
    /// Delete (erase) a customer.
    EraseCustomer,
    /// See the cluster, its shards, where an entity lives.
    ClusterOps,
    /// Manage API keys and device credentials.
    ManageKeys,
    /// Add or remove nodes.
    ManageCluster,
    /// Inject faults (only with `fault_injection = true`).
    FaultInjection,
}

impl Permission {
    /// Name used in 403 answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Open => "open",
            Permission::Authenticated => "authenticated",
            Permission::ReadData => "read_data",
            Permission::WriteData => "write_data",
            Permission::EraseCustomer => "erase_customer",
            Permission::ClusterOps => "cluster_ops",
            Permission::ManageKeys => "manage_keys",
            Permission::ManageCluster => "manage_cluster",
            Permission::FaultInjection => "fault_injection",
        }
    }
}

/// Whose record a route touches, for principals limited to their own (customers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// No one's: a customer principal may not use the route.
    None,
    /// The customer named by the `{id}` path parameter.
    CustomerParam,
    /// The device named by `{id}`, owned by the customer it was registered to.
    DeviceParam,
}

/// What serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Health,
    Ready,
    OpenApi,
    CreateCustomer,
    GetCustomer,
    PatchCustomer,
    DeleteCustomer,
    AddInteraction,
    ListInteractions,
    InteractionsBatch,
    Recommendations,
    Tickets,
    CreateDevice,
    GetDevice,
    PostTelemetry,
    GetTelemetry,
    GetTwin,
    PatchDesired,
    PostCommand,
    GetCommands,
    GetAlerts,
    DeviceCredentials,
    MqttCredentials,
    Cluster,
    Shards,
    Locate,
    CreateKey,
    ListKeys,
    RevokeKey,
    RemoveNode,
    Fault,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Method.
    pub method: &'static str,
    /// Path template, `{name}` for a parameter; also the route's metric label.
    pub path: &'static str,
    /// What the caller needs.
    pub permission: Permission,
    /// Whose record it touches.
    pub owner: Owner,
    /// What serves it.
    pub handler: Handler,
    /// Request body schema (a name in the OpenAPI components), if it takes a body.
    pub request: Option<&'static str>,
    /// Success status and response schema.
    pub response: (u16, &'static str),
    /// One line for the API description.
    pub summary: &'static str,
}

// One positional row per route keeps the table readable as a table.
#[allow(clippy::too_many_arguments)]
const fn r(
    method: &'static str,
    path: &'static str,
    permission: Permission,
    owner: Owner,
    handler: Handler,
    request: Option<&'static str>,
    response: (u16, &'static str),
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        permission,
        owner,
        handler,
        request,
        response,
        summary,
    }
}

use Handler as H;
use Owner as O;
use Permission as P;

/// The API.
pub static ROUTES: &[Route] = &[
    r(
        "GET",
        "/health",
        P::Open,
        O::None,
        H::Health,
        None,
        (200, "Status"),
        "Liveness of this gateway",
    ),
    r(
        "GET",
        "/ready",
        P::Open,
        O::None,
        H::Ready,
        None,
        (200, "Status"),
        "Whether this gateway can serve",
    ),
    r(
        "GET",
        "/v1/openapi.json",
        P::Authenticated,
        O::None,
        H::OpenApi,
        None,
        (200, "OpenApi"),
        "This API's description",
    ),
    r(
        "POST",
        "/v1/customers",
        P::WriteData,
        O::None,
        H::CreateCustomer,
        Some("CreateCustomer"),
        (201, "Customer"),
        "Create a customer",
    ),
    r(
        "GET",
        "/v1/customers/{id}",
        P::ReadData,
        O::CustomerParam,
        H::GetCustomer,
        None,
        (200, "Customer"),
        "Read a customer",
    ),
    r(
        "PATCH",
        "/v1/customers/{id}",
        P::WriteData,
        O::CustomerParam,
        H::PatchCustomer,
        Some("PatchCustomer"),
        (200, "Customer"),
        "Change a customer",
    ),
    r(
        "DELETE",
        "/v1/customers/{id}",
        P::EraseCustomer,
        O::CustomerParam,
        H::DeleteCustomer,
        None,
        (204, "Empty"),
        "Erase a customer",
    ),
    r(
        "POST",
        "/v1/customers/{id}/interactions",
        P::WriteData,
        O::CustomerParam,
        H::AddInteraction,
        Some("AddInteraction"),
        (201, "InteractionAdded"),
        "Record an interaction",
    ),
    r(
        "GET",
        "/v1/customers/{id}/interactions",
        P::ReadData,
        O::CustomerParam,
        H::ListInteractions,
        None,
        (200, "Interactions"),
        "A page of the customer's interactions (`after`, `limit`)",
    ),
    r(
        "POST",
        "/v1/interactions:batch",
        P::WriteData,
        O::None,
        H::InteractionsBatch,
        Some("InteractionsBatch"),
        (200, "BatchResults"),
        "Record up to 1,000 interactions for the recommender, each counted once by its id",
    ),
    r(
        "GET",
        "/v1/customers/{id}/recommendations",
        P::ReadData,
        O::CustomerParam,
        H::Recommendations,
        None,
        (200, "Recommendations"),
        "Items the customer has not interacted with, best first, with the items that led to each (`limit`)",
    ),
    r(
        "GET",
        "/v1/customers/{id}/tickets",
        P::ReadData,
        O::CustomerParam,
        H::Tickets,
        None,
        (200, "Tickets"),
        "Support tickets opened for the customer's devices",
    ),
    r(
        "POST",
        "/v1/devices",
        P::WriteData,
        O::None,
        H::CreateDevice,
        Some("CreateDevice"),
        (201, "Device"),
        "Register a device",
    ),
    r(
        "GET",
        "/v1/devices/{id}",
        P::ReadData,
        O::DeviceParam,
        H::GetDevice,
        None,
        (200, "Device"),
        "Read a device",
    ),
    r(
        "POST",
        "/v1/devices/{id}/telemetry",
        P::WriteData,
        O::DeviceParam,
        H::PostTelemetry,
        Some("PostTelemetry"),
        (200, "Device"),
        "Send a device's readings",
    ),
    r(
        "GET",
        "/v1/devices/{id}/telemetry",
        P::ReadData,
        O::DeviceParam,
        H::GetTelemetry,
        None,
        (200, "Telemetry"),
        "Recent readings and per-minute history",
    ),
    r(
        "GET",
        "/v1/devices/{id}/twin",
        P::ReadData,
        O::DeviceParam,
        H::GetTwin,
        None,
        (200, "Twin"),
        "Reported and desired state",
    ),
    r(
        "PATCH",
        "/v1/devices/{id}/twin/desired",
        P::WriteData,
        O::DeviceParam,
        H::PatchDesired,
        Some("PatchDesired"),
        (200, "Twin"),
        "Change the desired state",
    ),
    r(
        "POST",
        "/v1/devices/{id}/commands",
        P::WriteData,
        O::DeviceParam,
        H::PostCommand,
        Some("PostCommand"),
        (202, "Command"),
        "Send a command to a device",
    ),
    r(
        "GET",
        "/v1/devices/{id}/commands",
        P::ReadData,
        O::DeviceParam,
        H::GetCommands,
        None,
        (200, "Commands"),
        "Commands and their acknowledgements",
    ),
    r(
        "GET",
        "/v1/devices/{id}/alerts",
        P::ReadData,
        O::DeviceParam,
        H::GetAlerts,
        None,
        (200, "Alerts"),
        "Alerts raised for a device",
    ),
    r(
        "POST",
        "/v1/devices/{id}/credentials",
        P::ManageKeys,
        O::None,
        H::DeviceCredentials,
        None,
        (201, "DeviceCredentials"),
        "Issue or rotate a device's MQTT credentials (the password is shown once)",
    ),
    r(
        "GET",
        "/v1/mqtt/credentials",
        P::ManageKeys,
        O::None,
        H::MqttCredentials,
        None,
        (200, "MqttCredentials"),
        "Every device's MQTT password hash, for brokers",
    ),
    r(
        "GET",
        "/v1/cluster",
        P::ClusterOps,
        O::None,
        H::Cluster,
        None,
        (200, "Cluster"),
        "Members, their state and shards",
    ),
    r(
        "GET",
        "/v1/cluster/shards",
        P::ClusterOps,
        O::None,
        H::Shards,
        None,
        (200, "Shards"),
        "Every shard's placement",
    ),
    r(
        "GET",
        "/v1/cluster/locate/{kind}/{id}",
        P::ClusterOps,
        O::None,
        H::Locate,
        None,
        (200, "Location"),
        "Where an entity lives",
    ),
    r(
        "DELETE",
        "/v1/cluster/nodes/{name}",
        P::ManageCluster,
        O::None,
        H::RemoveNode,
        None,
        (202, "NodeRemoval"),
        "Remove a node: its copies move elsewhere, its primaries are handed over, then it stops",
    ),
    r(
        "POST",
        "/v1/keys",
        P::ManageKeys,
        O::None,
        H::CreateKey,
        Some("CreateKey"),
        (201, "NewKey"),
        "Make an API key (shown once)",
    ),
    r(
        "GET",
        "/v1/keys",
        P::ManageKeys,
        O::None,
        H::ListKeys,
        None,
        (200, "Keys"),
        "Every API key, without secrets",
    ),
    r(
        "DELETE",
        "/v1/keys/{name}",
        P::ManageKeys,
        O::None,
        H::RevokeKey,
        None,
        (200, "Key"),
        "Revoke an API key",
    ),
    r(
        "POST",
        "/v1/debug/fault/{kind}/{id}",
        P::FaultInjection,
        O::None,
        H::Fault,
        Some("InjectFault"),
        (200, "Injected"),
        "Make an entity panic or fail (fault_injection = true only)",
    ),
];

/// Path parameters by name.
pub type Params<'a> = HashMap<&'static str, &'a str>;

/// What a method and path resolve to.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// A route and its parameters.
    Route(&'static Route, Params<'a>),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<&'static str>),
    /// No such path.
    NotFound,
}

fn matches<'a>(template: &'static str, segs: &[&'a str]) -> Option<Params<'a>> {
    let parts: Vec<&'static str> = template[1..].split('/').collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = Params::new();
    for (p, s) in parts.iter().zip(segs) {
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !s.is_empty() => {
                params.insert(name, *s);
            }
            Some(_) => return None,
            None if p == s => {}
            None => return None,
        }
    }
    Some(params)
}

/// Resolves a request's method and path (exact segments; the query string is not part of it).
pub fn resolve<'a>(method: &str, path: &'a str) -> Resolved<'a> {
    let segs: Vec<&'a str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = matches(route.path, &segs) {
            if route.method == method {
                return Resolved::Route(route, params);
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() {
        Resolved::NotFound
    } else {
        Resolved::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_unique_and_resolves_to_itself() {
        for route in ROUTES {
            let concrete = route
                .path
                .replace("{kind}", "customer")
                .replace("{id}", "x1")
                .replace("{name}", "k1");
            match resolve(route.method, &concrete) {
                Resolved::Route(found, _) => {
                    assert_eq!(found.path, route.path, "{} {}", route.method, route.path)
                }
                other => panic!("{} {} resolved to {other:?}", route.method, route.path),
            }
            let same = ROUTES
                .iter()
                .filter(|r| r.method == route.method && r.path == route.path)
                .count();
            assert_eq!(same, 1, "{} {} declared twice", route.method, route.path);
        }
    }

    #[test]
    fn paths_match_exactly() {
        assert!(matches!(resolve("GET", "/health"), Resolved::Route(..)));
        for p in [
            "/health/",
            "/healthz",
            "/health/x",
            "//health",
            "/v1/customers/",
            "/v1/customers//interactions",
        ] {
            assert!(
                !matches!(resolve("GET", p), Resolved::Route(..)),
                "{p} must not match a route"
            );
        }
        match resolve("PUT", "/v1/customers/a") {
            Resolved::MethodNotAllowed(m) => assert_eq!(m, vec!["GET", "PATCH", "DELETE"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("GET", "/v2/customers"),
            Resolved::NotFound
        ));
    }

    #[test]
    fn parameters_are_named() {
        let Resolved::Route(_, p) = resolve("GET", "/v1/cluster/locate/device/d-1") else {
            panic!()
        };
        assert_eq!(p["kind"], "device");
        assert_eq!(p["id"], "d-1");
    }
}
