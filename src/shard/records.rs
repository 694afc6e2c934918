//! The standby announcement on a member Lease (pure): how a set of shards
//! is written into, and read from, its annotation.

use std::collections::BTreeSet;

/// Annotation on a member Lease: the shards whose changes that replica
/// already routes to standby workers ("3,17"). The current owner stops
/// writing a shard it hands over once someone announced it.
pub const STANDBY_ANNOTATION: &str = "configbutler.ai/standby";

/// Formats a set of shards for [`STANDBY_ANNOTATION`].
pub fn format_shards(shards: &BTreeSet<u32>) -> String {
    shards.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The shards of a [`STANDBY_ANNOTATION`] value; what does not parse is
/// left out.
pub fn parse_shards(value: &str) -> BTreeSet<u32> {
    value.split(',').filter_map(|s| s.trim().parse::<u32>().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_through_the_annotation() {
        let shards = BTreeSet::from([17, 3]);
        assert_eq!(format_shards(&shards), "3,17");
        assert_eq!(parse_shards("3,17"), shards);
        assert_eq!(parse_shards(""), BTreeSet::new());
        assert_eq!(parse_shards(" 4 ,x,,-1,9"), BTreeSet::from([4, 9]), "what does not parse is left out");
    }
}
