//! What a recommendation is: an item, its score and the customer's items that led to it (the
//! largest contributions, chosen by `index::Index`).

use serde::{Deserialize, Serialize};

/// Items named as the reason for one recommendation, at most.
pub const MAX_BECAUSE: usize = 3;

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The item.
    pub item: String,
    /// Its score (only the order means something).
    pub score: f64,
    /// The customer's items that contributed most, largest first.
    pub because: Vec<String>,
}
