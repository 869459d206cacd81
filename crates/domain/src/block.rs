//! Block ids: `s{S}.b{B}` with a 0-based stage and in-stage index, one string everywhere.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    pub stage: u32,
    pub block: u32,
}

impl BlockId {
    pub fn new(stage: u32, block: u32) -> Self {
        Self { stage, block }
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}.b{}", self.stage, self.block)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid block id {0:?}: expected s<stage>.b<block>, e.g. s2.b17")]
pub struct ParseBlockIdError(String);

impl FromStr for BlockId {
    type Err = ParseBlockIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseBlockIdError(s.to_string());
        let (stage, block) = s.split_once('.').ok_or_else(err)?;
        let number = |part: &str, prefix: char| -> Result<u32, ParseBlockIdError> {
            let digits = part.strip_prefix(prefix).ok_or_else(err)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            digits.parse().map_err(|_| err())
        };
        Ok(Self {
            stage: number(stage, 's')?,
            block: number(block, 'b')?,
        })
    }
}

impl Serialize for BlockId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_one_string() {
        let id = BlockId::new(2, 17);
        assert_eq!(id.to_string(), "s2.b17");
        assert_eq!("s2.b17".parse::<BlockId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s2.b17\"");
        let back: BlockId = serde_json::from_str("\"s0.b0\"").unwrap();
        assert_eq!(back, BlockId::new(0, 0));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "", "s1", "s1.b", "1.2", "s-1.b0", "s1.b2.c3", "S1.B2", "s1.b+2",
        ] {
            assert!(bad.parse::<BlockId>().is_err(), "{bad} parsed");
        }
    }
}
