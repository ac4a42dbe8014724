//! RabbitMQ from the outside for the AMQP tests and bench: a native client (lapin, not the
//! adapter's codec) on the machine's broker (127.0.0.1:5672, user guest).

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use super::nats::within;

/// RabbitMQ's default user, passed explicitly (the adapter assumes no credentials).
pub const GUEST: [(&str, &str); 2] = [("AMQP_USERNAME", "guest"), ("AMQP_PASSWORD", "guest")];

/// GUEST plus `extra` environment pairs.
pub fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    GUEST.iter().copied().chain(extra.iter().copied()).collect()
}

/// A native connection and a channel in confirm mode.
pub async fn native() -> (Connection, Channel) {
    let connection = within(
        "connection to RabbitMQ",
        Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            ConnectionProperties::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| {
        panic!("cannot connect to RabbitMQ on 127.0.0.1:5672: {e}; start rabbitmq-server (.ci/services does)")
    });
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    (connection, channel)
}

/// An exclusive queue bound to `amq.topic` with `key`, consumed with manual acks.
pub async fn listen(channel: &Channel, key: &str) -> Consumer {
    bind(channel, "amq.topic", key).await
}

/// An exclusive queue bound to `exchange` with `key`, consumed with manual acks.
pub async fn bind(channel: &Channel, exchange: &str, key: &str) -> Consumer {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// Publishes `data` to `exchange` with `routing_key`, mandatory (as the AMQP backend
/// publishes), and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    properties: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            data,
            properties,
        )
        .await
        .expect("publish");
    within("publisher confirm", confirm)
        .await
        .expect("confirmed");
}
