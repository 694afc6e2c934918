//! Entry point: parse the command line and dispatch.

use std::process::ExitCode;

use clap::Parser;
use gitops_reverser::cli::{Cli, Command};
use gitops_reverser::{api, run, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { output_dir } => match write_crds(output_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::Restore(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
            };
            match runtime.block_on(gitops_reverser::restore::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error.to_string()),
            }
        }
        Command::Run(args) => {
            gitops_reverser::memory::limit_arenas();
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
            };
            // The OTLP exporter's gRPC channel lives on the runtime.
            let traces = match runtime
                .block_on(async { telemetry::init(args.log_format, &args.log_level, &args.replica_name()) })
            {
                Ok(traces) => traces,
                Err(error) => return fail(&error),
            };
            let result = runtime.block_on(run::run(*args, traces));
            // Blocking tasks (a commit in progress) must not hold the exit up.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "the operator stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints the CRDs, or writes them one file each into `dir`.
fn write_crds(dir: Option<&std::path::Path>) -> Result<(), String> {
    let Some(dir) = dir else {
        print!("{}", api::crds_yaml().map_err(|e| format!("cannot render the CRDs: {e}"))?);
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for crd in api::all_crds() {
        let path = dir.join(api::crd_file_name(&crd));
        let yaml = api::crd_yaml(&crd).map_err(|e| format!("cannot render the CRDs: {e}"))?;
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn fail(message: &str) -> ExitCode {
    eprintln!("gitops-reverser: {message}");
    ExitCode::FAILURE
}
