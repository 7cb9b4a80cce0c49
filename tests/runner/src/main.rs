//! `ktest`: build the testkernel, boot it in QEMU and report its KTAP results.

#![forbid(unsafe_code)]

use ktest_runner::cli::{self, Cli, Mode};
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
            let result = match opts.mode {
                Mode::Run | Mode::Bench => ktest_runner::run::run(&opts, &mut lock, tty),
                Mode::Restart => ktest_runner::run::restart(&opts, &mut lock, tty),
                Mode::BenchLinux => ktest_runner::linux::run(&opts, &mut lock, tty),
                Mode::BenchCompare => ktest_runner::rounds::run_compare(&opts, &mut lock, tty),
                Mode::BenchScale => ktest_runner::rounds::run_scale(&opts, &mut lock, tty),
            };
            match result {
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
