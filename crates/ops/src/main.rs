//! `ops`: the operator's tools.
//!
//! ```text
//! ops dead-letters list
//! ops dead-letters replay 12 15   # by sequence, as `list` shows them
//! ops dead-letters replay --all
//! ops views rebuild               # drop the read model and replay every event
//! ```
//!
//! Reads `NATS_URL` (default `nats://127.0.0.1:4222`) like the services, and
//! logs in the same way: `NATS_USER` with `NATS_PASSWORD` or
//! `NATS_PASSWORD_FILE`. The broker's `ops` user has exactly the rights these
//! tools need; against `make run` or compose:
//!
//! ```text
//! NATS_USER=ops NATS_PASSWORD_FILE=deploy/secrets/dev-nats-ops-password.txt ops dead-letters list
//! ```

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Operator tools: dead letters and the read model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Messages a consumer gave up on.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// The order service's read model.
    #[command(subcommand)]
    Views(Views),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// Print every dead letter: sequence, time, consumer, subject, reason.
    List,
    /// Send dead letters back to the consumer that gave up on them.
    Replay {
        /// Sequences from `list`.
        sequences: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum Views {
    /// Drop every view and replay every order event into the read model.
    Rebuild {
        /// How long to wait for the replay to finish, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let auth = platform::config::NatsAuth::from_env()?;
    let client = platform::bus::connect_options(auth.as_ref())
        .name("ops")
        .connect(&url)
        .await?;
    let js = async_nats::jetstream::new(client);
    match cli.command {
        Command::DeadLetters(DeadLetters::List) => {
            let letters = ops::list(&js).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in &letters {
                println!(
                    "{:>6}  {}  {:<30}  {}  (deliveries: {})\n        reason: {}",
                    l.sequence, l.time, l.consumer, l.subject, l.deliveries, l.reason
                );
            }
        }
        Command::DeadLetters(DeadLetters::Replay { sequences, all }) => {
            let letters = ops::list(&js).await?;
            let missing: Vec<&u64> = sequences
                .iter()
                .filter(|s| !letters.iter().any(|l| l.sequence == **s))
                .collect();
            if !missing.is_empty() {
                anyhow::bail!("no dead letter with sequence {missing:?}");
            }
            for letter in letters
                .iter()
                .filter(|l| all || sequences.contains(&l.sequence))
            {
                let subject = ops::replay(&js, letter).await?;
                println!("replayed {} to {subject}", letter.sequence);
            }
        }
        Command::Views(Views::Rebuild { timeout }) => {
            let rebuilt = ops::views::rebuild(&js, Duration::from_secs(timeout)).await?;
            println!(
                "dropped {} views and replayed {} events into the read model",
                rebuilt.dropped, rebuilt.events
            );
        }
    }
    Ok(())
}
