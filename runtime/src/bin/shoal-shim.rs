//! `shoal-shim`: watches one task's container for the runtime, outside it
//! and outliving shoald (see `shoal_runtime::shim`).

fn main() -> std::process::ExitCode {
    shoal_runtime::shim::main()
}
