//! Command-line interface: `weir serve` and the topic/produce/consume tools.

mod group;
mod serve;
mod tools;
mod top;

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
    /// Print a topic's records to stdout (every partition, or one).
    Consume(tools::ConsumeArgs),
    /// List, describe or reset consumer groups; show their lag.
    Group(group::GroupArgs),
    /// A live view of a broker from its metrics: throughput, latency, lag.
    Top(top::TopArgs),
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Topic(args) => tools::topic(args),
        Command::Produce(args) => tools::produce(args),
        Command::Consume(args) => tools::consume(args),
        Command::Group(args) => group::run(args),
        Command::Top(args) => top::run(args),
    }
}
