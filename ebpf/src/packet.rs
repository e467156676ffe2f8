//! Reading a packet's bytes. Headers a program looks at are almost always
//! in the skb's linear data, where the program can read them itself. A
//! `bpf_skb_load_bytes` call per field (about twelve per frame) was up to a
//! tenth of Shoal's programs' samples in `perf`, with its `memcpy`, and
//! every call and return is dear on CPUs with return-stack mitigations. Reads only: a program that writes packet data
//! directly makes the verifier unclone every skb it runs on (TCP transmits
//! clones), so writes stay with `bpf_skb_store_bytes`.

use aya_ebpf::programs::TcContext;

pub trait Read {
    /// The `T` at `offset` from the MAC header: from the linear data when
    /// all of it is there, else through `bpf_skb_load_bytes`, which also
    /// reaches paged data. Either way a packet too short gives an error, as
    /// the helper alone did. Read a wider field than one byte where it can
    /// be: single bytes always take the helper.
    fn read<T: Copy>(&self, offset: usize) -> Result<T, i64>;
}

impl Read for TcContext {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Result<T, i64> {
        let size = core::mem::size_of::<T>();
        let at = self.data() + offset;
        // One byte is left to the helper: LLVM turns `at + 1 <= end` into
        // `at < end`, from which the verifier learns no readable range.
        if size > 1 && at + size <= self.data_end() {
            // SAFETY: `at..at + size_of::<T>()` lies inside the linear data
            // (the comparison above is the bound the verifier checks), and
            // the read makes no assumption about alignment.
            return Ok(unsafe { core::ptr::read_unaligned(at as *const T) });
        }
        self.load(offset)
    }
}
