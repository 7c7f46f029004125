//! The `floe` binary, built inside the test crate so its tests can spawn and kill it; see [`floe_pipelines::cli`].

fn main() -> std::process::ExitCode {
    floe_pipelines::cli::main()
}
