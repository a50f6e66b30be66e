//! Thin binary over the library: parse, run, map failures to exit codes.

use clap::Parser;
use joulebench::cli::{self, Cli, Failure};

fn main() {
    joulebench::engine::alloc::configure_from_env();
    let parsed = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            eprintln!("joulebench: {}", cli::clap_error_line(&e));
            std::process::exit(2);
        }
    };
    let code = match cli::run(parsed) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("joulebench: error: {}", cli::one_line(&e));
            2
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("joulebench: error: {}", cli::one_line(&e));
            1
        }
    };
    std::process::exit(code);
}
