#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main(email::SERVICE, email::DEFAULT_PORT, email::run).await
}
