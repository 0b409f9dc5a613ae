#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main(payment::SERVICE, payment::DEFAULT_PORT, payment::run).await
}
