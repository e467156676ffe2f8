#[allow(unsafe_code)] // set_var: the build script is single-threaded here.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so no system protobuf-compiler is needed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: no other thread exists yet to read the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Secret payloads: `Debug` written by hand, without the data, so no
        // log line or error can print one.
        .skip_debug(["shoal.cluster.v1.TaskFile", "shoal.cluster.v1.NetworkKey"])
        .compile_protos(
            &[
                "proto/node.proto",
                "proto/cluster.proto",
                "proto/blobs.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
