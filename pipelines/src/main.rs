//! The `floe` binary; see [`floe_pipelines::cli`].

fn main() -> std::process::ExitCode {
    floe_pipelines::cli::main()
}
