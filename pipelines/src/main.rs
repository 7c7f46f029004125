//! The `floe` binary; see [`floe_pipelines::cli`].

// mimalloc: the dataflow allocates many small rows and strings across threads, where
// glibc's allocator spent ~15% of the time in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    floe_pipelines::cli::main()
}
