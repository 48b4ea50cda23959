//! Writing to the terminal. A run's results must not depend on whether anyone reads its output:
//! `run-exp cfg 2>&1 | head -1` closes the pipe after one line, and Rust's `println!` /
//! `eprintln!` panic on the next write. These macros drop a write that fails instead (`say!`,
//! stderr: progress and messages), or hand its error back (`out!`, stdout: results, so a
//! command whose reader went away can stop, as Unix tools do).

/// `eprintln!` that never panics: a failed write to stderr is dropped.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that returns the write's `std::io::Result` instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// True when an error is the reader having gone away (a closed pipe).
pub fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}
