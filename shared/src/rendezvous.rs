//! Weighted rendezvous (highest-random-weight) hashing: which live node should own a force.
//!
//! Every (force, node) pair gets a pseudo-random `u` in (0, 1) from a stable hash, and a score
//! `-weight / ln(u)`; the node with the highest score owns the force. A node's expected share is
//! its weight over the total weight, and a join or leave moves only the forces that must move:
//! those the new node now wins, or those the departed node owned.
//!
//! The hash is FNV-1a 64 finished by the SplitMix64 mixer, written here so that it never changes
//! with a Rust release (unlike `DefaultHasher`). The score uses `f64::ln`; two platforms whose
//! `ln` differ in the last bit could disagree on an exact near-tie, which the force leases resolve
//! (the desired owner is a hint; the lease decides).

use std::collections::BTreeMap;

/// A candidate owner: a node id and its relative capacity (0 never wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeWeight {
    /// Node id.
    pub id: String,
    /// Relative capacity; a node of weight 2 gets about twice the forces of a node of weight 1.
    pub weight: u32,
}

impl NodeWeight {
    /// A node with `weight`.
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Self {
            id: id.into(),
            weight,
        }
    }
}

/// The stable 64-bit hash of a (force, node) pair.
pub fn pair_hash(force: &str, node: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
    for &b in force
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(node.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    splitmix64(h)
}

/// SplitMix64's finaliser: spreads every input bit over the whole output.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weighted score of `node` for `force`; higher wins.
pub fn score(force: &str, node: &NodeWeight) -> f64 {
    if node.weight == 0 {
        return f64::NEG_INFINITY;
    }
    // The top 53 bits, centred in their interval: strictly inside (0, 1).
    let u = ((pair_hash(force, &node.id) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(node.weight) / u.ln()
}

/// The node that should own `force`: the highest score, ties to the smaller id. `None` when no
/// node has a positive weight.
pub fn owner<'a>(force: &str, nodes: &'a [NodeWeight]) -> Option<&'a str> {
    nodes
        .iter()
        .filter(|n| n.weight > 0)
        .map(|n| (score(force, n), n.id.as_str()))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, id)| id)
}

/// The owner of every force (forces without any eligible node are left out).
pub fn assign<'f, 'n>(
    forces: impl IntoIterator<Item = &'f str>,
    nodes: &'n [NodeWeight],
) -> BTreeMap<&'f str, &'n str> {
    forces
        .into_iter()
        .filter_map(|f| owner(f, nodes).map(|n| (f, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::force::FORCES;

    fn nodes(ids: &[&str]) -> Vec<NodeWeight> {
        ids.iter().map(|id| NodeWeight::new(*id, 1)).collect()
    }

    fn forces() -> impl Iterator<Item = &'static str> {
        FORCES.iter().map(|f| f.id)
    }

    fn counts<'a>(a: &BTreeMap<&str, &'a str>) -> BTreeMap<&'a str, usize> {
        let mut c = BTreeMap::new();
        for n in a.values() {
            *c.entry(*n).or_default() += 1;
        }
        c
    }

    #[test]
    fn hash_is_pinned() {
        // Changing these values would move forces between nodes across an upgrade.
        assert_eq!(pair_hash("kent", "node-a"), pair_hash("kent", "node-a"));
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        assert_eq!(pair_hash("", ""), 0x01df_27c8_adb0_f2d1);
        assert_eq!(pair_hash("kent", "node-a"), 0xae38_5ccd_c830_0ca8);
    }

    #[test]
    fn deterministic_and_order_independent() {
        let a = nodes(&["node-a", "node-b", "node-c"]);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(assign(forces(), &a), assign(forces(), &b));
        assert_eq!(owner("kent", &a), owner("kent", &a));
        assert_eq!(owner("kent", &[]), None);
        assert_eq!(owner("kent", &[NodeWeight::new("idle", 0)]), None);
    }

    #[test]
    fn balanced_over_three_nodes() {
        let n = nodes(&["node-a", "node-b", "node-c"]);
        let a = assign(forces(), &n);
        assert_eq!(a.len(), FORCES.len());
        let c = counts(&a);
        assert_eq!(c.len(), 3, "{c:?}");
        // 46 forces: 15.3 expected per node, standard deviation 3.2.
        for (node, k) in &c {
            assert!((9..=22).contains(k), "{node} owns {k} of 46: {c:?}");
        }
    }

    #[test]
    fn weights_set_the_share() {
        let n = vec![
            NodeWeight::new("big", 2),
            NodeWeight::new("small-1", 1),
            NodeWeight::new("small-2", 1),
            NodeWeight::new("off", 0),
        ];
        let names: Vec<String> = (0..4000).map(|i| format!("force-{i}")).collect();
        let c = counts(&assign(names.iter().map(String::as_str), &n));
        assert!(!c.contains_key("off"));
        let big = c["big"] as f64 / 4000.0;
        assert!((0.46..0.54).contains(&big), "big share {big}: {c:?}");
        for s in ["small-1", "small-2"] {
            let share = c[s] as f64 / 4000.0;
            assert!((0.21..0.29).contains(&share), "{s} share {share}: {c:?}");
        }
    }

    #[test]
    fn join_and_leave_move_only_what_must_move() {
        let three = nodes(&["node-a", "node-b", "node-c"]);
        let four = nodes(&["node-a", "node-b", "node-c", "node-d"]);
        let before = assign(forces(), &three);
        let after = assign(forces(), &four);
        let mut moved = 0;
        for (f, old) in &before {
            if after[f] != *old {
                assert_eq!(after[f], "node-d", "{f} moved {old} -> {}", after[f]);
                moved += 1;
            }
        }
        assert!(moved > 0, "the new node gained nothing");

        // node-b leaves: only its forces move.
        let two = nodes(&["node-a", "node-c"]);
        let left = assign(forces(), &two);
        for (f, old) in &before {
            if *old == "node-b" {
                assert_ne!(left[f], "node-b");
            } else {
                assert_eq!(left[f], *old, "{f} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn weight_change_moves_only_towards_the_heavier_node() {
        let before = nodes(&["node-a", "node-b", "node-c"]);
        let mut after = before.clone();
        after[0].weight = 3;
        let (b, a) = (assign(forces(), &before), assign(forces(), &after));
        for (f, old) in &b {
            if a[f] != *old {
                assert_eq!(a[f], "node-a", "{f}");
            }
        }
    }
}
