//! Test fixture for `tests/lab_cleanup.rs`: creates a non-persistent lab,
//! prints `ready <lab>` and blocks until stdin closes (then drops the lab).
//! The test SIGKILLs it to check that a lab whose owner died without
//! unwinding is cleaned up.

use std::io::{Read, Write};

fn main() -> anyhow::Result<()> {
    let nodes = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2,
    };
    // A current-thread runtime: the daemons' parent-death signal is tied to
    // the thread that spawned them, here the main thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lab = runtime.block_on(shoal_lab::Lab::builder("fixture").nodes(nodes).start())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {}", lab.name())?;
    stdout.flush()?;
    // Returns at EOF: the test closed our stdin (or died).
    std::io::stdin().read_to_end(&mut Vec::new())?;
    drop(lab);
    Ok(())
}
