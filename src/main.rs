//! The `tributary` binary: parse arguments, dispatch, map errors to exit codes.

use clap::Parser;
use tributary::cli::{Cli, Command};
use tributary::commands;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate(args) => commands::validate::execute(&cli, args),
        Command::Schema(args) => commands::schema::execute(&cli, args),
        Command::Run(args) => commands::run::execute(&cli, args),
        Command::Fields(args) => commands::fields::execute(&cli, args),
        Command::Contacts(args) => commands::contacts::execute(&cli, args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}
