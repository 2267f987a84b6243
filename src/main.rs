//! The `lit-mux` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lit_mux::cli::run(lit_mux::cli::Cli::parse())
}
