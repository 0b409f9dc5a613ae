#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main(shipping::SERVICE, shipping::DEFAULT_PORT, shipping::run).await
}
