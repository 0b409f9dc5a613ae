//! `deadletters`: list dead letters and replay chosen ones.
//!
//! ```text
//! deadletters list
//! deadletters replay 12 15      # by sequence, as `list` shows them
//! deadletters replay --all
//! ```
//!
//! Reads `NATS_URL` (default `nats://127.0.0.1:4222`) like the services.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "List dead letters and replay them to the consumer that gave up")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let letters = ops::list(&js).await?;
    match cli.command {
        Command::List => {
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
        Command::Replay { sequences, all } => {
            let chosen: Vec<&ops::DeadLetter> = letters
                .iter()
                .filter(|l| all || sequences.contains(&l.sequence))
                .collect();
            let missing: Vec<&u64> = sequences
                .iter()
                .filter(|s| !letters.iter().any(|l| l.sequence == **s))
                .collect();
            if !missing.is_empty() {
                anyhow::bail!("no dead letter with sequence {missing:?}");
            }
            for letter in chosen {
                let subject = ops::replay(&js, letter).await?;
                println!("replayed {} to {subject}", letter.sequence);
            }
        }
    }
    Ok(())
}
