//! Generates the Rust code for `llmsoup/v1/router.proto` with protox (pure Rust, no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=llmsoup/v1/router.proto");
    let fds = protox::compile(["llmsoup/v1/router.proto"], ["."])?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    } else {
        prost_build::Config::new().compile_fds(fds)?;
    }
    Ok(())
}
