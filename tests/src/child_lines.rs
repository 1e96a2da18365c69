//! A child process's output as lines on a channel, read by a thread of its own so a
//! test can wait for a line with a deadline and then read everything up to the end.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The lines a child writes to one of its (piped) outputs, in order.
pub struct ChildLines {
    rx: mpsc::Receiver<String>,
}

impl ChildLines {
    /// Takes the child's piped stdout; panics if it was not piped.
    pub fn of(child: &mut Child) -> Self {
        Self::read(child.stdout.take().expect("piped stdout"))
    }

    /// The lines of `output` (a child's piped stdout or stderr).
    pub fn read(output: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// Reads lines until one satisfies `want`; returns the lines read, that one last.
    /// Panics with what it read if none does within `limit` or the output ends first.
    pub fn until(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
        self.try_until(limit, want).unwrap_or_else(|(why, seen)| {
            panic!("no wanted line ({why}); read:\n{}", seen.join("\n"))
        })
    }

    /// [`Self::until`], or `Err` with why and the lines read if no line satisfies `want`
    /// within `limit` or the output ends first.
    pub fn try_until(
        &self,
        limit: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, (String, Vec<String>)> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let found = want(&line);
                    seen.push(line);
                    if found {
                        return Ok(seen);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err((format!("not within {limit:?}"), seen))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(("the output ended".to_string(), seen))
                }
            }
        }
    }

    /// Every line still to come, up to the end of the output. Call it once the child
    /// has exited: the reader thread may not have passed on its last lines yet, which
    /// is why a plain `try_iter` after the exit loses lines.
    pub fn to_end(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => return rest,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the output did not end within {limit:?}; read:\n{}",
                    rest.join("\n")
                ),
            }
        }
    }
}
