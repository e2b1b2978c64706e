//! The `tributary` binary: parse arguments, dispatch, map errors to exit codes.

use clap::Parser;
use tributary::cli::{Cli, Command};
use tributary::commands;

fn main() {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate(args) => commands::validate::execute(&cli, args),
        Command::Schema(args) => commands::schema::execute(&cli, args),
        Command::Fields(args) => commands::fields::execute(&cli, args),
        Command::Contacts(args) => commands::contacts::execute(&cli, args),
        Command::Run(args) => commands::run::execute(&cli, args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}

/// Rust ignores SIGPIPE, so `tributary contacts | head` would end in a panic when `head`
/// closes the pipe. A command-line tool should instead stop quietly, as `ls` or `grep` do.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
