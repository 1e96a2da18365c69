//! A classic-BPF program for `SO_ATTACH_REUSEPORT_CBPF` that makes the kernel pick the
//! worker socket from the QUIC destination connection ID, as Envoy and nginx do.
//!
//! Without it the kernel hashes the 4-tuple: every connection from one client socket lands
//! on one worker, and a client whose address changes lands on a random one (then our
//! userspace forwarding moves its datagrams). With it:
//!
//! * a packet whose DCID is one of ours goes straight to the worker the CID names — also
//!   after migration, with no userspace hop;
//! * any other packet (a new connection's Initial, carrying a client-chosen DCID) goes to
//!   `first 4 DCID bytes mod workers`, so connections spread over workers even from one
//!   client socket, and every packet of a handshake reaches the same worker;
//! * a packet too short to parse goes by the kernel's receive hash.
//!
//! This agrees with [`CidLayout::route`]: what `route` sends to a worker, the program sends
//! to that worker; everything else `route` leaves where the kernel put it. Offsets are from
//! the start of the UDP payload. The program is pure data; the runtime attaches it.

use crate::cid::{CidLayout, CID_LEN, CONFIG_ID};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// opcodes (linux/filter.h)
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_W_LEN: u16 = 0x80;
const ALU_AND_K: u16 = 0x54;
const ALU_MOD_K: u16 = 0x94;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_A: u16 = 0x16;
/// `SKF_AD_OFF + SKF_AD_RXHASH`: loads the skb's receive hash.
const LD_RXHASH_K: u32 = (-0x1000i32 + 32) as u32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Short,
    Long,
    HashShort,
    HashLong,
    HashRx,
    Ret,
    Next,
}

enum Ins {
    Op(u16, u32),
    Jump(u16, u32, Label, Label),
    At(Label),
}

/// The program for `layout`. Socket `i` of the reuseport group must be worker `i`'s.
pub fn steering_program(layout: &CidLayout) -> Vec<SockFilter> {
    use Ins::{At, Jump, Op};
    use Label::*;
    let n = layout.workers() as u32;
    let sid = u32::from(layout.server_id());
    let cfg = u32::from(CONFIG_ID) << 5;
    let cid = CID_LEN as u32;
    let prog = [
        Op(LD_W_LEN, 0),
        Jump(JMP_JGE_K, 1 + cid, Next, HashRx),
        Op(LD_B_ABS, 0),
        Jump(JMP_JSET_K, 0x80, Long, Short),
        // short header: DCID at 1
        At(Short),
        Op(LD_B_ABS, 1),
        Op(ALU_AND_K, 0xe0),
        Jump(JMP_JEQ_K, cfg, Next, HashShort),
        Op(LD_H_ABS, 2),
        Jump(JMP_JEQ_K, sid, Next, HashShort),
        Op(LD_B_ABS, 4),
        Jump(JMP_JGE_K, n, HashShort, Ret),
        At(HashShort),
        Op(LD_W_ABS, 1),
        Op(ALU_MOD_K, n),
        Jump(JMP_JEQ_K, 0, Ret, Ret),
        // long header: DCID length at 5, DCID at 6
        At(Long),
        Op(LD_W_LEN, 0),
        Jump(JMP_JGE_K, 6 + cid, Next, HashRx),
        Op(LD_B_ABS, 5),
        Jump(JMP_JEQ_K, cid, Next, HashLong),
        Op(LD_B_ABS, 6),
        Op(ALU_AND_K, 0xe0),
        Jump(JMP_JEQ_K, cfg, Next, HashLong),
        Op(LD_H_ABS, 7),
        Jump(JMP_JEQ_K, sid, Next, HashLong),
        Op(LD_B_ABS, 9),
        Jump(JMP_JGE_K, n, HashLong, Ret),
        At(HashLong),
        Op(LD_B_ABS, 5),
        Jump(JMP_JGE_K, 4, Next, HashRx),
        Op(LD_W_ABS, 6),
        Op(ALU_MOD_K, n),
        Jump(JMP_JEQ_K, 0, Ret, Ret),
        At(HashRx),
        Op(LD_W_ABS, LD_RXHASH_K),
        Op(ALU_MOD_K, n),
        At(Ret),
        Op(RET_A, 0),
    ];
    assemble(&prog)
}

/// Resolves labels into relative jump offsets (`Next` is the following instruction).
fn assemble(prog: &[Ins]) -> Vec<SockFilter> {
    let mut at = Vec::new();
    let mut index = 0usize;
    for ins in prog {
        match ins {
            Ins::At(l) => at.push((*l, index)),
            _ => index += 1,
        }
    }
    let find = |l: Label, from: usize| -> u8 {
        let target = match l {
            Label::Next => from + 1,
            _ => at
                .iter()
                .find(|(x, _)| *x == l)
                .map_or(from + 1, |(_, i)| *i),
        };
        // every jump in this program goes forward, by less than 256
        u8::try_from(target - from - 1).unwrap_or(0)
    };
    let mut out = Vec::with_capacity(index);
    for ins in prog {
        match ins {
            Ins::At(_) => {}
            Ins::Op(code, k) => out.push(SockFilter {
                code: *code,
                jt: 0,
                jf: 0,
                k: *k,
            }),
            Ins::Jump(code, k, t, f) => {
                let i = out.len();
                out.push(SockFilter {
                    code: *code,
                    jt: find(*t, i),
                    jf: find(*f, i),
                    k: *k,
                });
            }
        }
    }
    out
}

/// Runs `prog` on `packet` as the kernel would (for the opcodes above); `None` where the
/// kernel would abort (a load past the end). Tests and fuzzing use it.
pub fn interpret(prog: &[SockFilter], packet: &[u8], rxhash: u32) -> Option<u32> {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    while let Some(ins) = prog.get(pc) {
        pc += 1;
        let load = |off: u32, len: usize| -> Option<u32> {
            let off = off as usize;
            let bytes = packet.get(off..off + len)?;
            Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        };
        match ins.code {
            LD_W_LEN => a = packet.len() as u32,
            LD_W_ABS if ins.k == LD_RXHASH_K => a = rxhash,
            LD_W_ABS => a = load(ins.k, 4)?,
            LD_H_ABS => a = load(ins.k, 2)?,
            LD_B_ABS => a = load(ins.k, 1)?,
            ALU_AND_K => a &= ins.k,
            ALU_MOD_K => a = a.checked_rem(ins.k)?,
            JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                let taken = match ins.code {
                    JMP_JEQ_K => a == ins.k,
                    JMP_JGE_K => a >= ins.k,
                    _ => a & ins.k != 0,
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            RET_A => return Some(a),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::Route;

    fn packets(layout: &CidLayout) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for w in 0..layout.workers() as u8 {
            let cid = layout.encode(w, [w, 1, 2, 3, 4]);
            out.push([&[0x40u8][..], &cid, &[0; 30]].concat());
            for ty in [0xc0u8, 0xd0, 0xe0] {
                out.push([&[ty, 0, 0, 0, 1, 8][..], &cid, &[0; 1200]].concat());
            }
        }
        // client-chosen Initial DCIDs of various lengths, and garbage
        for (i, len) in [8usize, 16, 20, 3, 0].into_iter().enumerate() {
            let dcid: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            out.push([&[0xc0u8, 0, 0, 0, 1, len as u8][..], &dcid, &[0; 1200]].concat());
        }
        out.push(vec![0x40, 1, 2]);
        out.push(vec![]);
        out.push(vec![0xc0, 0, 0, 0, 1, 200, 1, 2, 3, 4, 5, 6, 7, 8]);
        out
    }

    #[test]
    fn agrees_with_route_and_stays_in_range() {
        for (sid, n) in [(0u16, 1usize), (0, 2), (0x1234, 4), (7, 3), (0, 256)] {
            let layout = CidLayout::new(sid, n).expect("layout");
            let prog = steering_program(&layout);
            for p in packets(&layout) {
                let chosen = interpret(&prog, &p, 12345).expect("never aborts");
                assert!((chosen as usize) < n, "worker {chosen} of {n}");
                if let Route::Worker(w) = layout.route(&p) {
                    assert_eq!(chosen, u32::from(w), "packet {p:02x?}");
                }
            }
        }
    }

    #[test]
    fn initials_spread_by_dcid_and_stick() {
        let layout = CidLayout::new(0, 2).expect("layout");
        let prog = steering_program(&layout);
        let initial =
            |last: u8| [&[0xc0u8, 0, 0, 0, 1, 16, 0, 0, 0, last][..], &[9; 1200]].concat();
        let a = interpret(&prog, &initial(0), 0);
        let b = interpret(&prog, &initial(1), 0);
        assert_ne!(
            a, b,
            "different DCIDs should be able to land on different workers"
        );
        assert_eq!(
            a,
            interpret(&prog, &initial(0), 999),
            "not the receive hash"
        );
    }
}
