//! The kernel's ids, each its own type: an agent id cannot be passed where a task id is
//! wanted, and a map says what it is keyed by.
//!
//! Each id is a string on the wire and in JSON (`#[serde(transparent)]`), as Mesos's ids
//! are. It reads as a `&str` (it derefs to one, and `Borrow<str>` lets a map keyed by ids
//! be searched with a `&str`), and compares with strings, so code that only looks at an id
//! stays short.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id `s`.
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Quoted, as the string is (messages quote ids with `{:?}`).
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(s.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id_type!(
    /// An agent's id: stable across its restarts (its node name unless configured).
    AgentId
);
id_type!(
    /// A framework's id, minted by the master when it first subscribes; kept across its
    /// failovers.
    FrameworkId
);
id_type!(
    /// A task's id, chosen by its framework; unique within the cluster.
    TaskId
);
id_type!(
    /// An offer's id, minted by the master.
    OfferId
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_id_is_a_plain_string_on_the_wire_and_in_json() {
        let id = TaskId::from("t-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"t-1\"");
        let bytes = plexus_net::codec::encode(&id).unwrap();
        assert_eq!(
            bytes,
            plexus_net::codec::encode(&"t-1".to_string()).unwrap()
        );
        let back: TaskId = plexus_net::codec::decode(&bytes).unwrap();
        assert_eq!(back, "t-1");
    }

    #[test]
    fn maps_keyed_by_ids_are_searched_with_text() {
        let mut m = BTreeMap::new();
        m.insert(AgentId::from("a"), 1);
        assert_eq!(m.get("a"), Some(&1));
        assert_eq!(AgentId::from("a").len(), 1);
        assert_eq!(format!("{}", FrameworkId::new("fw-1")), "fw-1");
        assert_eq!(
            format!("[{:<6}]", TaskId::new("t-1")),
            "[t-1   ]",
            "tables line up"
        );
        assert_eq!(format!("{:?}", OfferId::new("o-1")), "\"o-1\"");
    }
}
