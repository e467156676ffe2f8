//! A blocking xfrm netlink socket: one request, its acknowledgement or
//! answer. Writes are rare (pairs and rotations), so no async transport;
//! callers on tokio run it in `spawn_blocking`. The socket works in the
//! network namespace of the thread that opened it.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_xfrm::XfrmMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};

use crate::{
    XfrmError,
    message::{self, Owned},
    schedule::Op,
};

pub struct Xfrm {
    socket: Socket,
    seq: u32,
}

impl Xfrm {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Xfrm, XfrmError> {
        let sock = |source| XfrmError::Socket { source };
        let mut socket = Socket::new(NETLINK_XFRM).map_err(sock)?;
        socket.bind_auto().map_err(sock)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(sock)?;
        Ok(Xfrm { socket, seq: 0 })
    }

    /// Carries out one planned write.
    pub fn apply(&mut self, op: &Op) -> Result<(), XfrmError> {
        let what = format!("{op:?}");
        self.request(message::for_op(op), &what).map(|_| ())
    }

    /// Shoal's states and outbound policies the kernel holds, whoever
    /// installed them (this process or an earlier shoald).
    pub fn owned(&mut self) -> Result<Owned, XfrmError> {
        let mut all = self.exchange(message::dump_sas(), NLM_F_DUMP, "dump states")?;
        all.extend(self.exchange(message::dump_policies(), NLM_F_DUMP, "dump policies")?);
        Ok(message::owned(&all))
    }

    /// The kernel's copy of a message's object (`XFRM_MSG_GET*`).
    pub fn get(&mut self, msg: XfrmMessage, what: &str) -> Result<XfrmMessage, XfrmError> {
        self.request(msg, what)?.ok_or_else(|| XfrmError::Decode {
            what: what.to_owned(),
            reason: "no answer".into(),
        })
    }

    fn request(&mut self, msg: XfrmMessage, what: &str) -> Result<Option<XfrmMessage>, XfrmError> {
        Ok(self.exchange(msg, NLM_F_ACK, what)?.pop())
    }

    /// Sends `msg` with `flags` (an acknowledged request, or a dump); the
    /// answers up to the acknowledgement or the end of the dump.
    fn exchange(
        &mut self,
        msg: XfrmMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<XfrmMessage>, XfrmError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.sequence_number = self.seq;
        header.flags = NLM_F_REQUEST | flags;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| XfrmError::Socket { source })?;
        let mut answers = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| XfrmError::Socket { source })?;
            let mut at = 0;
            while at < data.len() {
                let m = message::decode(&data[at..]).map_err(|reason| XfrmError::Decode {
                    what: what.to_owned(),
                    reason,
                })?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                at += len;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(code) => Err(XfrmError::Kernel {
                                what: what.to_owned(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    _ => {}
                }
            }
        }
    }
}
