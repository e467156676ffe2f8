//! TC classifiers for a node's data interface: count packets and bytes per
//! protocol and direction. No policy here: userspace reads the maps.
//!
//! Counting never changes a packet's fate: both programs return
//! `TC_ACT_UNSPEC`, which lets the next classifier (the mesh's) or the
//! stack decide, whether attached by TCX or by a clsact filter.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The datapath is the one place unsafe is allowed: map pointers and the
// #[no_mangle] entry points the macros emit.
#![allow(unsafe_code)]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use shoal_common::stats::{Counter, Direction, Proto, Reason, STATS_ENTRIES, counter_index};

mod packet;

use packet::Read as _;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

// Map names are literals because the macro wants one; they must equal
// shoal_common::stats::{STATS_MAP, REASONS_MAP}, which the loader looks up.
#[map(name = "SHOAL_STATS_V1")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

#[map(name = "SHOAL_REASON_V1")]
static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

#[classifier]
pub fn shoal_tc_in(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Ingress)
}

#[classifier]
pub fn shoal_tc_out(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Egress)
}

#[inline(always)]
fn count(ctx: &TcContext, dir: Direction) -> i32 {
    let proto = match classify(ctx) {
        Ok(p) => p,
        Err(reason) => {
            bump_reason(reason);
            Proto::Other
        }
    };
    if let Some(c) = STATS.get_ptr_mut(counter_index(dir, proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(ctx.len());
        }
    }
    TC_ACT_UNSPEC
}

#[inline(always)]
fn classify(ctx: &TcContext) -> Result<Proto, Reason> {
    // A short skb gives an error (packet.rs), never an out-of-bounds read.
    let ethertype = u16::from_be(
        ctx.read::<u16>(ETH_HLEN - 2)
            .map_err(|_| Reason::TruncatedEth)?,
    );
    match ethertype {
        ETH_P_IP => {
            // Two bytes where there are (packet.rs reads one alone through
            // the helper); a 15-byte frame still gets its version checked.
            let ver_ihl = match ctx.read::<[u8; 2]>(ETH_HLEN) {
                Ok(b) => b[0],
                Err(_) => ctx
                    .read::<u8>(ETH_HLEN)
                    .map_err(|_| Reason::TruncatedIpv4)?,
            };
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 {
                return Err(Reason::BadIpv4Header);
            }
            if (ctx.len() as usize) < ETH_HLEN + ihl {
                return Err(Reason::TruncatedIpv4);
            }
            // TTL and protocol: the header is whole by now.
            let proto = ctx
                .read::<[u8; 2]>(ETH_HLEN + 8)
                .map_err(|_| Reason::TruncatedIpv4)?[1];
            Ok(match proto {
                IPPROTO_TCP => Proto::Tcp,
                IPPROTO_UDP => Proto::Udp,
                IPPROTO_ICMP => Proto::Icmp,
                _ => Proto::Ipv4Other,
            })
        }
        ETH_P_IPV6 => Ok(Proto::Ipv6),
        ETH_P_ARP => Ok(Proto::Arp),
        _ => Ok(Proto::Other),
    }
}

#[inline(always)]
fn bump_reason(reason: Reason) {
    if let Some(n) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *n += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Host builds (clippy, `cargo test --workspace`) only type-check the
/// programs; the real object is built for bpfel-unknown-none by agent/build.rs.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
