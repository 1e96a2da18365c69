//! The terminal modes of a `pty-req` (RFC 4254 section 8: the client's own settings, so
//! that Backspace, Ctrl-C and line endings behave on the server as on the client's
//! terminal), applied to the new pty before the command starts, as sshd does
//! (OpenSSH's `ttymodes.c`). Without them a client whose erase key is `^H` got `^?`
//! semantics, and so on. Opcodes Linux has no counterpart for are skipped; speeds are
//! meaningless on a pty and skipped too.

use russh::Pty;
use rustix::termios::{
    ControlModes, InputModes, LocalModes, OutputModes, SpecialCodeIndex, Termios,
};

/// `255` in a special-character opcode means "disabled" (`_POSIX_VDISABLE`, which is 0
/// on Linux).
const DISABLED_FROM_CLIENT: u32 = 255;
const POSIX_VDISABLE: u8 = 0;

/// Applies `modes` to `termios`; the rest stays as the pty had it.
pub fn apply(termios: &mut Termios, modes: &[(Pty, u32)]) {
    for &(op, value) in modes {
        let on = value != 0;
        if let Some(index) = special_code(op) {
            termios.special_codes[index] = match value {
                DISABLED_FROM_CLIENT => POSIX_VDISABLE,
                v => u8::try_from(v).unwrap_or(POSIX_VDISABLE),
            };
        } else if let Some(flag) = input_flag(op) {
            termios.input_modes.set(flag, on);
        } else if let Some(flag) = local_flag(op) {
            termios.local_modes.set(flag, on);
        } else if let Some(flag) = output_flag(op) {
            termios.output_modes.set(flag, on);
        } else if let Some(flag) = control_flag(op) {
            termios.control_modes.set(flag, on);
        }
    }
}

fn special_code(op: Pty) -> Option<SpecialCodeIndex> {
    Some(match op {
        Pty::VINTR => SpecialCodeIndex::VINTR,
        Pty::VQUIT => SpecialCodeIndex::VQUIT,
        Pty::VERASE => SpecialCodeIndex::VERASE,
        Pty::VKILL => SpecialCodeIndex::VKILL,
        Pty::VEOF => SpecialCodeIndex::VEOF,
        Pty::VEOL => SpecialCodeIndex::VEOL,
        Pty::VEOL2 => SpecialCodeIndex::VEOL2,
        Pty::VSTART => SpecialCodeIndex::VSTART,
        Pty::VSTOP => SpecialCodeIndex::VSTOP,
        Pty::VSUSP => SpecialCodeIndex::VSUSP,
        Pty::VREPRINT => SpecialCodeIndex::VREPRINT,
        Pty::VWERASE => SpecialCodeIndex::VWERASE,
        Pty::VLNEXT => SpecialCodeIndex::VLNEXT,
        Pty::VDISCARD => SpecialCodeIndex::VDISCARD,
        _ => return None,
    })
}

fn input_flag(op: Pty) -> Option<InputModes> {
    Some(match op {
        Pty::IGNPAR => InputModes::IGNPAR,
        Pty::PARMRK => InputModes::PARMRK,
        Pty::INPCK => InputModes::INPCK,
        Pty::ISTRIP => InputModes::ISTRIP,
        Pty::INLCR => InputModes::INLCR,
        Pty::IGNCR => InputModes::IGNCR,
        Pty::ICRNL => InputModes::ICRNL,
        Pty::IUCLC => InputModes::IUCLC,
        Pty::IXON => InputModes::IXON,
        Pty::IXANY => InputModes::IXANY,
        Pty::IXOFF => InputModes::IXOFF,
        Pty::IMAXBEL => InputModes::IMAXBEL,
        Pty::IUTF8 => InputModes::IUTF8,
        _ => return None,
    })
}

fn local_flag(op: Pty) -> Option<LocalModes> {
    Some(match op {
        Pty::ISIG => LocalModes::ISIG,
        Pty::ICANON => LocalModes::ICANON,
        Pty::XCASE => LocalModes::XCASE,
        Pty::ECHO => LocalModes::ECHO,
        Pty::ECHOE => LocalModes::ECHOE,
        Pty::ECHOK => LocalModes::ECHOK,
        Pty::ECHONL => LocalModes::ECHONL,
        Pty::NOFLSH => LocalModes::NOFLSH,
        Pty::TOSTOP => LocalModes::TOSTOP,
        Pty::IEXTEN => LocalModes::IEXTEN,
        Pty::ECHOCTL => LocalModes::ECHOCTL,
        Pty::ECHOKE => LocalModes::ECHOKE,
        Pty::PENDIN => LocalModes::PENDIN,
        _ => return None,
    })
}

fn output_flag(op: Pty) -> Option<OutputModes> {
    Some(match op {
        Pty::OPOST => OutputModes::OPOST,
        Pty::OLCUC => OutputModes::OLCUC,
        Pty::ONLCR => OutputModes::ONLCR,
        Pty::OCRNL => OutputModes::OCRNL,
        Pty::ONOCR => OutputModes::ONOCR,
        Pty::ONLRET => OutputModes::ONLRET,
        _ => return None,
    })
}

fn control_flag(op: Pty) -> Option<ControlModes> {
    Some(match op {
        Pty::CS7 => ControlModes::CS7,
        Pty::CS8 => ControlModes::CS8,
        Pty::PARENB => ControlModes::PARENB,
        Pty::PARODD => ControlModes::PARODD,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new pty's own settings (pty-process registers the master with tokio's reactor).
    fn pty_termios() -> Termios {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _inside = rt.enter();
        let (_pty, pts) = pty_process::open().expect("a pty");
        rustix::termios::tcgetattr(&pts).expect("tcgetattr")
    }

    #[test]
    fn the_clients_modes_replace_the_ptys_own() {
        let mut t = pty_termios();
        t.special_codes[SpecialCodeIndex::VERASE] = 0x7f;
        t.input_modes.insert(InputModes::ICRNL);
        t.local_modes.insert(LocalModes::ECHO);
        apply(
            &mut t,
            &[
                (Pty::VERASE, 8),
                (Pty::VINTR, 255),
                (Pty::ICRNL, 0),
                (Pty::IUTF8, 1),
                (Pty::ECHO, 0),
                (Pty::ONLCR, 1),
                (Pty::TTY_OP_ISPEED, 38400),
                (Pty::VDSUSP, 25),
            ],
        );
        assert_eq!(t.special_codes[SpecialCodeIndex::VERASE], 8);
        assert_eq!(t.special_codes[SpecialCodeIndex::VINTR], POSIX_VDISABLE);
        assert!(!t.input_modes.contains(InputModes::ICRNL));
        assert!(t.input_modes.contains(InputModes::IUTF8));
        assert!(!t.local_modes.contains(LocalModes::ECHO));
        assert!(t.output_modes.contains(OutputModes::ONLCR));
    }

    #[test]
    fn a_special_character_past_a_byte_is_disabled_not_truncated() {
        let mut t = pty_termios();
        apply(&mut t, &[(Pty::VKILL, 0x115)]);
        assert_eq!(t.special_codes[SpecialCodeIndex::VKILL], POSIX_VDISABLE);
    }
}
