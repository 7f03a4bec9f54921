//! Who may do what: roles, principals, and the one decision every request goes through.
//! Pure: the router feeds it the route and the principal and performs what it returns.
//!
//! | permission        | admin | operator | agent | viewer | customer        |
//! | ----------------- | ----- | -------- | ----- | ------ | --------------- |
//! | read_data         | yes   |          | yes   | masked | own record only |
//! | write_data        | yes   |          | yes   |        |                 |
//! | erase_customer    | yes   |          |       |        |                 |
//! | cluster_ops       | yes   | yes      |       |        |                 |
//! | manage_keys       | yes   |          |       |        |                 |
//! | fault_injection   | yes   |          |       |        |                 |
//! | authenticated     | yes   | yes      | yes   | yes    | yes             |

use crate::route_table::{Owner, Permission, Route};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Runs the cluster; sees no personal data.
    Operator,
    /// A CRM service or person: reads and writes customer and device data.
    Agent,
    /// Reads, with email and phone masked.
    Viewer,
    /// One customer: reads its own record and devices.
    Customer,
}

/// Every role.
pub const ROLES: [Role; 5] = [
    Role::Admin,
    Role::Operator,
    Role::Agent,
    Role::Viewer,
    Role::Customer,
];

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Customer => "customer",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        ROLES.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role holds `p` (customers only for their own records: see [`decide`]).
    pub fn holds(self, p: Permission) -> bool {
        use Permission as P;
        matches!(
            (self, p),
            (_, P::Open | P::Authenticated)
                | (Role::Admin, _)
                | (Role::Operator, P::ClusterOps)
                | (Role::Agent, P::ReadData | P::WriteData)
                | (Role::Viewer | Role::Customer, P::ReadData)
        )
    }
}

/// How a principal proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An API key from the keyring (or the bootstrap key).
    ApiKey,
    /// A JWT from the identity provider.
    Jwt,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key name or token subject: what logs say did it.
    pub name: String,
    /// Role.
    pub role: Role,
    /// For a customer: the customer id it is.
    pub customer: Option<String>,
    /// How it proved itself.
    pub via: Via,
}

/// What the router must do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `mask` personal contact data in what is answered.
    Allow {
        /// Mask email and phone.
        mask: bool,
    },
    /// Go ahead if the device `{id}` belongs to this customer (the router looks it up).
    AllowIfOwnsDevice(String),
    /// 403 naming the permission.
    Deny(Permission),
}

/// The decision for `principal` on `route` whose `{id}` parameter is `id`.
pub fn decide(route: &Route, principal: &Principal, id: Option<&str>) -> Decision {
    let p = route.permission;
    if !principal.role.holds(p) {
        return Decision::Deny(p);
    }
    if principal.role != Role::Customer || matches!(p, Permission::Open | Permission::Authenticated)
    {
        return Decision::Allow {
            mask: principal.role == Role::Viewer && p == Permission::ReadData,
        };
    }
    match (route.owner, principal.customer.as_deref(), id) {
        (Owner::CustomerParam, Some(me), Some(id)) if me == id => Decision::Allow { mask: false },
        (Owner::DeviceParam, Some(_), Some(id)) => Decision::AllowIfOwnsDevice(id.to_string()),
        _ => Decision::Deny(p),
    }
}

/// Masks an e-mail address: `a***@example.com`.
pub fn mask_email(e: &str) -> String {
    match e.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// Masks a phone number: every digit but the last two.
pub fn mask_phone(p: &str) -> String {
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    p.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 2 <= digits {
                    return '*';
                }
            }
            c
        })
        .collect()
}

/// Masks every `email` and `phone` string in a JSON answer.
pub fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match (k.as_str(), &*val) {
                    ("email", serde_json::Value::String(s)) => *val = mask_email(s).into(),
                    ("phone", serde_json::Value::String(s)) => *val = mask_phone(s).into(),
                    _ => mask_json(val),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_table::{resolve, Resolved, ROUTES};

    fn who(role: Role, customer: Option<&str>) -> Principal {
        Principal {
            name: "t".into(),
            role,
            customer: customer.map(str::to_string),
            via: Via::ApiKey,
        }
    }

    fn route(method: &str, path: &str) -> &'static Route {
        match resolve(method, path) {
            Resolved::Route(r, _) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_role_table_holds() {
        use Permission as P;
        let table = [
            (P::ReadData, [true, false, true, true, true]),
            (P::WriteData, [true, false, true, false, false]),
            (P::EraseCustomer, [true, false, false, false, false]),
            (P::ClusterOps, [true, true, false, false, false]),
            (P::ManageKeys, [true, false, false, false, false]),
            (P::ManageCluster, [true, false, false, false, false]),
            (P::FaultInjection, [true, false, false, false, false]),
            (P::Authenticated, [true; 5]),
        ];
        for (p, row) in table {
            for (role, want) in ROLES.iter().zip(row) {
                assert_eq!(role.holds(p), want, "{} {}", role.as_str(), p.as_str());
            }
        }
    }

    #[test]
    fn a_customer_reads_only_its_own_record() {
        let me = who(Role::Customer, Some("ada"));
        let get = route("GET", "/v1/customers/ada");
        assert_eq!(
            decide(get, &me, Some("ada")),
            Decision::Allow { mask: false }
        );
        assert_eq!(
            decide(get, &me, Some("bob")),
            Decision::Deny(Permission::ReadData)
        );
        let patch = route("PATCH", "/v1/customers/ada");
        assert_eq!(
            decide(patch, &me, Some("ada")),
            Decision::Deny(Permission::WriteData)
        );
        let dev = route("GET", "/v1/devices/d1");
        assert_eq!(
            decide(dev, &me, Some("d1")),
            Decision::AllowIfOwnsDevice("d1".into())
        );
        let cluster = route("GET", "/v1/cluster");
        assert_eq!(
            decide(cluster, &me, None),
            Decision::Deny(Permission::ClusterOps)
        );
    }

    #[test]
    fn a_viewer_reads_masked_and_writes_nothing() {
        let v = who(Role::Viewer, None);
        let get = route("GET", "/v1/customers/ada");
        assert_eq!(decide(get, &v, Some("ada")), Decision::Allow { mask: true });
        for r in ROUTES
            .iter()
            .filter(|r| r.permission == Permission::WriteData)
        {
            assert_eq!(
                decide(r, &v, Some("x")),
                Decision::Deny(Permission::WriteData)
            );
        }
    }

    #[test]
    fn masking_hides_all_but_a_hint() {
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
        assert_eq!(mask_email("nope"), "***");
        assert_eq!(mask_phone("+44 20 7946 0958"), "+** ** **** **58");
        let mut v = serde_json::json!({"id":"a","email":"ada@x.org","phone":"12345","nested":[{"email":"b@y"}],"email_ok":1});
        mask_json(&mut v);
        assert_eq!(v["email"], "a***@x.org");
        assert_eq!(v["phone"], "***45");
        assert_eq!(v["nested"][0]["email"], "b***@y");
        assert_eq!(v["email_ok"], 1);
    }
}
