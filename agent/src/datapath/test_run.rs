//! BPF_PROG_TEST_RUN for the fixture tables: one run of a loaded classifier
//! over a frame, giving its return value and the frame as it left.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use aya::programs::SchedClassifier;

/// `union bpf_attr` for BPF_PROG_TEST_RUN (linux/bpf.h), the fields up to `cpu`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}
const _: () = assert!(size_of::<TestRunAttr>() == 80);
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Bytes given for `struct __sk_buff` in and out: more than the kernel's
/// (its tail must be zero, and is).
const SKB_CTX: usize = 256;
/// `__sk_buff.mark`'s offset (after `len` and `pkt_type`).
const SKB_MARK: usize = 8;
/// `__sk_buff.gso_segs` and `.gso_size` (linux/bpf.h), the two GSO fields
/// a test run takes from the context.
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

/// Runs `prog` once over `frame`: (return value, the skb's mark after it).
pub fn run_mark(prog: &SchedClassifier, frame: &[u8]) -> (i32, u32) {
    let ctx_in = [0u8; SKB_CTX];
    let mut ctx_out = [0u8; SKB_CTX];
    let (rc, _) = run_with(prog, frame, Some((&ctx_in, &mut ctx_out)));
    let mark = u32::from_ne_bytes(
        ctx_out[SKB_MARK..SKB_MARK + 4]
            .try_into()
            .expect("four bytes"),
    );
    (rc, mark)
}

/// Runs `prog` once over `frame` made a GSO skb of `segs` segments of
/// `size` bytes (its `gso_type` stays 0, which the kernel's TCP and UDP
/// GSO paths would set): (return value, output frame).
pub fn run_gso(prog: &SchedClassifier, frame: &[u8], segs: u32, size: u32) -> (i32, Vec<u8>) {
    let mut ctx_in = [0u8; SKB_CTX];
    ctx_in[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
    ctx_in[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_CTX];
    run_with(prog, frame, Some((&ctx_in, &mut ctx_out)))
}

/// Runs `prog` once over `frame`: (return value, output frame). Panics if the
/// kernel refuses the run.
pub fn run(prog: &SchedClassifier, frame: &[u8]) -> (i32, Vec<u8>) {
    run_with(prog, frame, None)
}

fn run_with(
    prog: &SchedClassifier,
    frame: &[u8],
    ctx: Option<(&[u8; SKB_CTX], &mut [u8; SKB_CTX])>,
) -> (i32, Vec<u8>) {
    let fd = prog.fd().expect("loaded").as_fd().as_raw_fd();
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    if let Some((ctx_in, ctx_out)) = ctx {
        attr.ctx_size_in = SKB_CTX as u32;
        attr.ctx_in = ctx_in.as_ptr() as u64;
        attr.ctx_size_out = SKB_CTX as u32;
        attr.ctx_out = ctx_out.as_mut_ptr() as u64;
    }
    // SAFETY: attr points at live buffers whose sizes it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN over {} bytes: {}",
        frame.len(),
        std::io::Error::last_os_error()
    );
    out.truncate(attr.data_size_out as usize);
    (attr.retval as i32, out)
}
