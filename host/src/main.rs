use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match proxlet::run(proxlet::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proxlet: error: {error}");
            ExitCode::FAILURE
        }
    }
}
