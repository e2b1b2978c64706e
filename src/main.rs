//! The `tributary` binary: parse arguments, dispatch, map errors to exit codes.

use clap::Parser;
use tributary::cli::{Cli, Command};
use tributary::commands;

fn main() {
    let cli = Cli::parse();
    // The daemon keeps Rust's default (SIGPIPE ignored), as systemd sets it on purpose:
    // a journald restart must not kill the service.
    if !matches!(cli.command, Command::Daemon(_)) {
        restore_default_sigpipe();
    }
    let config = cli.config.as_deref();
    let result = match &cli.command {
        Command::Validate(args) => commands::validate::execute(config, args),
        Command::Schema(args) => commands::schema::execute(args),
        Command::Fields(args) => commands::fields::execute(config, args),
        Command::Contacts(args) => commands::contacts::execute(config, args),
        Command::Run(args) => commands::run::execute(config, args),
        Command::Daemon(args) => commands::daemon::execute(config, args),
        Command::Status(args) => commands::status::execute(config, args),
        Command::State(args) => commands::state::execute(config, args),
        Command::Auth(args) => commands::auth::execute(config, args),
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
