#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main(order::SERVICE, order::DEFAULT_PORT, order::run).await
}
