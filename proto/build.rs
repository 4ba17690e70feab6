//! Compiles proto/agent.proto with protox (pure Rust), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["agent.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A pushed chunk is sliced from the controller's copy of the file and decoded on the
        // agent as a view of the received buffer: no copy on either side.
        .bytes(".volley.agent.v1.PushRequest")
        // `--stdin` is one buffer for the whole run, shared by every host's request.
        .bytes(".volley.agent.v1.ExecRequest.stdin")
        .compile_fds(descriptors)?;
    Ok(())
}
