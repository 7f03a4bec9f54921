//! keelson-actors: the CRM and IoT entities. Each customer and each device is one entity actor run
//! by the runtime; this crate owns their state, commands, validation rules and replies, and never
//! does I/O itself.
//!
//! ```text
//! gateway ──CustomerCommand──▶ runtime ──▶ Customer::handle(state, cmd) ──▶ CustomerReply
//! gateway ──DeviceCommand────▶ runtime ──▶ Device::handle(state, cmd)   ──▶ DeviceReply
//! ```

mod customer;
mod device;
mod validate;

pub use customer::{
    Consent, Customer, CustomerCommand, CustomerPatch, CustomerReply, CustomerState, Interaction,
    NewCustomer, NewInteraction,
};
pub use device::{Device, DeviceCommand, DeviceReply, DeviceState, NewDevice, Telemetry};
pub use validate::{validate_id, DomainError};

use keelson_runtime::EntityKinds;

/// Every entity kind this crate defines, for a node to host.
pub fn kinds() -> EntityKinds {
    EntityKinds::new()
        .register::<Customer>()
        .register::<Device>()
}
