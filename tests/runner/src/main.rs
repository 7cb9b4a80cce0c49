//! `ktest`: build the testkernel, boot it in QEMU and report its KTAP results.

#![forbid(unsafe_code)]

use ktest_runner::cli::{self, Cli};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse(std::env::args().skip(1)) {
        Ok(Cli::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Cli::Run(opts)) => {
            let stdout = std::io::stdout();
            let tty = stdout.is_terminal();
            let mut lock = stdout.lock();
            match ktest_runner::run::run(&opts, &mut lock, tty) {
                Ok(code) => ExitCode::from(code as u8),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(e.code as u8)
                }
            }
        }
        Err(msg) => {
            eprintln!("ktest: {msg}");
            eprintln!("run 'ktest --help' for usage");
            ExitCode::from(2)
        }
    }
}
