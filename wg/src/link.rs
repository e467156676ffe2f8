use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressScope;
use rtnetlink::{LinkUnspec, new_connection};

use crate::WgError;

/// Sets the tunnel's MTU ([`TUNNEL_MTU`](crate::TUNNEL_MTU)), gives it
/// `addr/prefix` and brings it up, with a loose reverse-path check, in the
/// calling thread's network namespace.
///
/// On a node `addr` is its VTEP as a `/32` of host scope: decrypted VXLAN
/// arrives on the tunnel from a peer's VTEP, which the main table routes
/// through the data interface, so a strict check drops it, and so does a
/// loose one on a device without an IPv4 address (the kernel's
/// `fib_validate_source`), whatever `all/rp_filter` the host sets.
pub async fn bring_up(device: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), WgError> {
    let fail = |detail: String| WgError::Link {
        device: device.to_owned(),
        detail,
    };
    let (conn, handle, _) = new_connection().map_err(|e| fail(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(device.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("not found".into()))?;
        let index = link.header.index;
        let mut add = handle.address().add(index, IpAddr::V4(addr), prefix);
        if prefix == 32 {
            add.message_mut().header.scope = AddressScope::Host;
        }
        match add.execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            other => other.map_err(|e| fail(format!("address {addr}/{prefix}: {e}")))?,
        }
        let message = LinkUnspec::new_with_index(index)
            .mtu(crate::TUNNEL_MTU)
            .up()
            .build();
        handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| fail(e.to_string()))
    }
    .await;
    conn.abort();
    result?;
    let rp = format!("/proc/sys/net/ipv4/conf/{device}/rp_filter");
    std::fs::write(&rp, "2").map_err(|e| fail(format!("{rp}: {e}")))?;
    Ok(())
}
