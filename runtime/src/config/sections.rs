//! Top-level sections of `nodes.toml` the runtime does not own (e.g. a bridge's), claimed by
//! whoever does: each [`Section`] reads and checks its own table, the runtime checks that nothing
//! else listens on the ports it names and keeps the table, as written, for its owner.
//!
//! ```text
//! text ─▶ top-level names: the runtime's own, or a claimed Section's, else "unknown field"
//!      ─▶ Section::check(text) ─▶ SectionCheck { problems, listens, hosts }
//!      ─▶ validate: problems in order, listens against every member's ports, hosts into the
//!         loopback rules ─▶ ClusterConfig::section(name) is the raw table
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::RawConfig;

/// A top-level table of `nodes.toml` that a crate above the runtime owns.
pub trait Section: Sync {
    /// Its name: `[name]` in the file.
    fn name(&self) -> &'static str;

    /// Reads and checks the section out of the whole file `text` (so a syntax error points at its
    /// line); an absent section takes its defaults. `Err` is a syntax or schema error.
    fn check(&self, text: &str) -> Result<SectionCheck, String>;
}

/// What a [`Section`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SectionCheck {
    /// Each problem, prefixed by its field (`mqtt.burst: ...`).
    pub problems: Vec<String>,
    /// Addresses its process listens on, by field: none may be a member's.
    pub listens: Vec<(&'static str, SocketAddr)>,
    /// Addresses it listens on or dials: beyond loopback, the laptop defaults are refused.
    pub hosts: Vec<IpAddr>,
}

/// The top-level names of [`RawConfig`], read from its own `Deserialize` so they never drift.
fn own_names() -> &'static [&'static str] {
    struct Fields;
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("fields")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Found(&[])
        }
    }
    impl<'de> de::Deserializer<'de> for Fields {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    match RawConfig::deserialize(Fields) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// Every top-level name of `text` is the runtime's or a claimed section's; returns the claimed
/// sections' tables. Errors read like the parser's own, with line and column.
pub(super) fn split(
    text: &str,
    sections: &[&dyn Section],
) -> Result<BTreeMap<String, toml::Table>, toml::de::Error> {
    let claimed: Vec<&'static str> = sections.iter().map(|s| s.name()).collect();
    let top = Top {
        own: own_names(),
        claimed: &claimed,
    };
    top.deserialize(toml::Deserializer::new(text))
}

#[derive(Clone, Copy)]
struct Top<'a> {
    own: &'static [&'static str],
    claimed: &'a [&'static str],
}

impl Top<'_> {
    fn expected(&self) -> String {
        let all: Vec<String> = self
            .own
            .iter()
            .chain(self.claimed)
            .map(|n| format!("`{n}`"))
            .collect();
        format!("one of {}", all.join(", "))
    }
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = BTreeMap<String, toml::Table>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = BTreeMap<String, toml::Table>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut tables = BTreeMap::new();
        while let Some(name) = map.next_key_seed(Name(self))? {
            if self.claimed.contains(&name.as_str()) {
                tables.insert(name, map.next_value::<toml::Table>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(tables)
    }
}

/// One top-level name, refused (at its position in the file) unless someone owns it.
struct Name<'a>(Top<'a>);

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a section name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        let top = self.0;
        if top.own.contains(&name) || top.claimed.contains(&name) {
            Ok(name.to_string())
        } else {
            Err(E::custom(format!(
                "unknown field `{name}`, expected {}",
                top.expected()
            )))
        }
    }
}
