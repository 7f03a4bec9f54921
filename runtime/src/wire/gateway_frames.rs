//! What a gateway may send a node: requests, never replication or votes. ractor_cluster's
//! messages carry no sender identity, so a node reads every frame that arrives on a session
//! whose certificate says "gateway" and lets through only calls and casts of the RPCs a gateway
//! needs; anything else ends the session. Pure: [`check`] looks at one frame's bytes.
//!
//! A frame is ractor_cluster's `NetworkMessage` (protobuf): field 1 `auth` (the handshake),
//! 2 `node` (a `NodeMessage`: 1 `cast`, 2 `call`, 3 `reply`), 3 `control`. A cast names its
//! target's message variant in field 3, a call in field 5; Keelson's RPC variant names are the
//! constants of `wire` (ShardHostRpc, RaftRpc, HeartbeatRpc).

/// The variants a gateway calls: entity requests, the shard map, heartbeats, and an admin's
/// removal of a node (a drain, checked by the node like any other map change).
pub const GATEWAY_MAY_CALL: &[&str] = &["Request", "GetMap", "Ping", "Drain"];

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 64 bits".into())
}

/// One protobuf field: its number and, when length-delimited, its bytes.
type Field<'a> = (u64, Option<&'a [u8]>);

/// The fields of a protobuf message.
fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(b, &mut at)?;
                out.push((field, None));
            }
            1 | 5 => {
                at += if wire == 1 { 8 } else { 4 };
                if at > b.len() {
                    return Err("truncated fixed field".into());
                }
                out.push((field, None));
            }
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).map_err(|_| "length overflow")?;
                let end = at
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                out.push((field, Some(&b[at..end])));
                at = end;
            }
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(out)
}

/// Whether a gateway may send this frame (the bytes after the length prefix).
pub fn check(frame: &[u8]) -> Result<(), String> {
    for (field, body) in fields(frame)? {
        if field != 2 {
            continue; // auth handshake, control (groups, pings): allowed
        }
        let node = body.ok_or("node message is not length-delimited")?;
        for (kind, inner) in fields(node)? {
            let variant_field = match kind {
                1 => 3,        // cast
                2 => 5,        // call
                _ => continue, // replies to the node's own calls
            };
            let msg = inner.ok_or("cast/call is not length-delimited")?;
            let variant = fields(msg)?
                .into_iter()
                .find(|(f, _)| *f == variant_field)
                .and_then(|(_, v)| v)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if !GATEWAY_MAY_CALL.contains(&variant.as_str()) {
                return Err(format!("a gateway may not send {variant:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(field: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3 | 2) as u8, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    /// NetworkMessage{node: NodeMessage{call|cast: {to: 7, variant}}}
    fn message(kind: u64, variant: &str) -> Vec<u8> {
        let variant_field = if kind == 1 { 3 } else { 5 };
        let mut inner = vec![1 << 3, 7]; // to = 7
        inner.extend(len_field(2, b"payload"));
        inner.extend(len_field(variant_field, variant.as_bytes()));
        len_field(2, &len_field(kind, &inner))
    }

    #[test]
    fn a_gateway_sends_requests_and_nothing_that_changes_replicas_or_votes() {
        for v in GATEWAY_MAY_CALL {
            assert_eq!(check(&message(2, v)), Ok(()), "{v}");
            assert_eq!(check(&message(1, v)), Ok(()), "{v}");
        }
        for v in [
            "Replicate",
            "Copy",
            "HandOver",
            "ReadIndex",
            "Append",
            "Vote",
            "Snapshot",
            "Propose",
            "",
        ] {
            assert!(check(&message(2, v)).is_err(), "call {v}");
            assert!(check(&message(1, v)).is_err(), "cast {v}");
        }
        // Replies, the handshake and control messages pass.
        assert_eq!(check(&len_field(2, &len_field(3, &[1 << 3, 1]))), Ok(()));
        assert_eq!(check(&len_field(1, b"hello")), Ok(()));
        assert_eq!(check(&len_field(3, b"ping")), Ok(()));
    }

    #[test]
    fn malformed_frames_are_refused() {
        for bad in [
            &[0x12, 0x05, 0x01][..],
            &[0xff; 11][..],
            &[0x13][..],
            &[0x12, 0x02, 0x12, 0x10][..],
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
