//! `[cluster]`: several instances behind one Service. `peer_id` is encoded
//! in the BackendKeyData this instance hands out; `[[cluster.peers]]` says
//! where a CancelRequest carrying another instance's id is forwarded.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The largest `peer_id`: it takes 8 bits of the proxy's pid (see
/// [`crate::cancel`]).
pub const MAX_PEER_ID: u32 = 255;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCluster {
    pub peer_id: Option<u32>,
    pub peers: Vec<RawPeer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPeer {
    pub id: u32,
    pub address: String,
}

/// `[cluster]`: this instance's id and its peers' cancel addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// 1..=255, the high bits of every proxy pid this instance hands out.
    pub peer_id: u8,
    /// Peer id to `host:port` (the peer's client listener).
    pub peers: BTreeMap<u8, String>,
}

/// `None` without `[cluster]`: keys carry no instance, nothing is forwarded.
pub(super) fn resolve(raw: &RawCluster) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(own) = raw.peer_id else {
        if raw.peers.is_empty() {
            return Ok(None);
        }
        return Err(invalid("cluster.peers needs cluster.peer_id"));
    };
    let peer_id = valid_id(own, "cluster.peer_id")?;
    let mut peers = BTreeMap::new();
    for p in &raw.peers {
        let id = valid_id(p.id, "cluster.peers.id")?;
        if id == peer_id {
            return Err(invalid(format!(
                "cluster.peers lists id {id}, this instance's own cluster.peer_id"
            )));
        }
        if p.address.trim().is_empty() {
            return Err(invalid(format!("cluster.peers id {id} has no address")));
        }
        if peers.insert(id, p.address.clone()).is_some() {
            return Err(invalid(format!("cluster.peers lists id {id} twice")));
        }
    }
    Ok(Some(ClusterConfig { peer_id, peers }))
}

fn valid_id(id: u32, key: &str) -> Result<u8, ConfigError> {
    match u8::try_from(id) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(invalid(format!(
            "{key} = {id} is out of range (1..={MAX_PEER_ID})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(own: Option<u32>, peers: &[(u32, &str)]) -> RawCluster {
        RawCluster {
            peer_id: own,
            peers: peers
                .iter()
                .map(|(id, a)| RawPeer {
                    id: *id,
                    address: a.to_string(),
                })
                .collect(),
        }
    }

    fn err(r: RawCluster) -> String {
        resolve(&r).expect_err("must be refused").to_string()
    }

    #[test]
    fn absent_cluster_is_none() {
        assert_eq!(resolve(&raw(None, &[])).expect("ok"), None);
    }

    #[test]
    fn peers_resolve_by_id() {
        let c = resolve(&raw(Some(1), &[(2, "b:6432"), (3, "c:6432")]))
            .expect("ok")
            .expect("some");
        assert_eq!(c.peer_id, 1);
        assert_eq!(c.peers.get(&2).map(String::as_str), Some("b:6432"));
        assert_eq!(c.peers.len(), 2);
    }

    #[test]
    fn duplicate_peer_ids_are_refused() {
        assert!(err(raw(Some(1), &[(2, "a:1"), (2, "b:1")])).contains("twice"));
    }

    #[test]
    fn own_id_listed_as_peer_is_refused() {
        assert!(err(raw(Some(1), &[(1, "a:1")])).contains("own"));
    }

    #[test]
    fn out_of_range_ids_are_refused() {
        assert!(err(raw(Some(0), &[])).contains("out of range"));
        assert!(err(raw(Some(256), &[])).contains("out of range"));
        assert!(err(raw(Some(1), &[(300, "a:1")])).contains("out of range"));
    }

    #[test]
    fn peers_without_peer_id_are_refused() {
        assert!(err(raw(None, &[(2, "a:1")])).contains("peer_id"));
    }

    #[test]
    fn a_peer_without_address_is_refused() {
        assert!(err(raw(Some(1), &[(2, " ")])).contains("no address"));
    }
}
