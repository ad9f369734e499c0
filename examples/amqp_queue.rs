//! Binds a queue to SOM's RabbitMQ exchange, so that published events have somewhere to go
//! (SOM publishes with `mandatory`: an event no queue takes is kept and retried), or deletes
//! both. Used by `scripts/bench-http.sh`.
//!
//!   cargo run --example amqp_queue -- amqp://guest:guest@127.0.0.1:5672/%2f SOM_EVENTS som-events
//!   cargo run --example amqp_queue -- amqp://guest:guest@127.0.0.1:5672/%2f SOM_EVENTS som-events --delete

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, exchange, queue, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: amqp_queue AMQP_URL EXCHANGE QUEUE [--delete]");
    };
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    if rest.iter().any(|a| a == "--delete") {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
        return Ok(());
    }
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
        .await?;
    let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.as_str().into(), queue_options, FieldTable::default()).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "som.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
