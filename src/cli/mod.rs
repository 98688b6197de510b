//! Command-line interface: `weir serve` and the topic/produce/consume tools.

mod serve;
mod tools;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weir", version, about = "A Kafka-compatible message broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe or delete topics.
    Topic(tools::TopicArgs),
    /// Write stdin lines to a topic, one record per line.
    Produce(tools::ProduceArgs),
    /// Print a partition's records to stdout.
    Consume(tools::ConsumeArgs),
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Topic(args) => tools::topic(args),
        Command::Produce(args) => tools::produce(args),
        Command::Consume(args) => tools::consume(args),
    }
}
