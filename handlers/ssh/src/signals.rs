//! SSH signal names (RFC 4254 §6.10, without the `SIG` prefix) to and from POSIX signals.

use russh::Sig;
use rustix::process::Signal;

/// The signal a client's `signal` request names; `None` for names we do not deliver.
pub fn to_posix(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::ABORT,
        Sig::ALRM => Signal::ALARM,
        Sig::FPE => Signal::FPE,
        Sig::HUP => Signal::HUP,
        Sig::ILL => Signal::ILL,
        Sig::INT => Signal::INT,
        Sig::KILL => Signal::KILL,
        Sig::PIPE => Signal::PIPE,
        Sig::QUIT => Signal::QUIT,
        Sig::SEGV => Signal::SEGV,
        Sig::TERM => Signal::TERM,
        Sig::USR1 => Signal::USR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => Signal::USR2,
            "CONT" => Signal::CONT,
            "STOP" => Signal::STOP,
            "TSTP" => Signal::TSTP,
            "WINCH" => Signal::WINCH,
            _ => return None,
        },
    })
}

/// The SSH name of the signal (by number) that ended a process, for `exit-signal`.
pub fn from_posix(signo: i32) -> Sig {
    let named = [
        (Signal::ABORT, Sig::ABRT),
        (Signal::ALARM, Sig::ALRM),
        (Signal::FPE, Sig::FPE),
        (Signal::HUP, Sig::HUP),
        (Signal::ILL, Sig::ILL),
        (Signal::INT, Sig::INT),
        (Signal::KILL, Sig::KILL),
        (Signal::PIPE, Sig::PIPE),
        (Signal::QUIT, Sig::QUIT),
        (Signal::SEGV, Sig::SEGV),
        (Signal::TERM, Sig::TERM),
        (Signal::USR1, Sig::USR1),
        (Signal::USR2, Sig::Custom("USR2".into())),
    ];
    named
        .into_iter()
        .find(|(s, _)| s.as_raw() == signo)
        .map(|(_, sig)| sig)
        // RFC 4254 allows other names "name@domain"; OpenSSH itself sends e.g. "SIG42"
        .unwrap_or_else(|| Sig::Custom(format!("SIG{signo}@alknet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_names_map_to_posix_signals_and_back() {
        let pairs = [
            (Sig::INT, 2),
            (Sig::TERM, 15),
            (Sig::KILL, 9),
            (Sig::HUP, 1),
            (Sig::QUIT, 3),
            (Sig::USR1, 10),
            (Sig::Custom("USR2".into()), 12),
        ];
        for (sig, num) in pairs {
            assert_eq!(to_posix(&sig).map(|s| s.as_raw()), Some(num), "{sig:?}");
            // Sig has no PartialEq: compare the spelling
            assert_eq!(format!("{:?}", from_posix(num)), format!("{sig:?}"));
        }
        assert_eq!(to_posix(&Sig::Custom("BOGUS".into())), None);
        assert_eq!(format!("{:?}", from_posix(64)), "Custom(\"SIG64@alknet\")");
    }
}
