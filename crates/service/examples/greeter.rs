//! A complete service in its own process: it dials a gateway over TCP (or through a
//! RabbitMQ broker, given an `amqp://` URL), registers two endpoints and serves until
//! Ctrl-C. Used by `docs/services.md`:
//!
//! ```sh
//! cargo run --release -- serve --no-demo                       # gateway; services on 127.0.0.1:7070
//! cargo run -p weir-service --example greeter -- 127.0.0.1:7070 # this service
//! curl http://127.0.0.1:8080/greet/ada                         # {"greeting":"hello, ada"}
//! curl -T big.iso -X POST http://127.0.0.1:8080/upload   # {"bytes":...}
//!
//! # through a broker, to a gateway with [services.rabbitmq]:
//! cargo run -p weir-service --example greeter -- amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//!
//! Set `WEIR_TOKEN` when the gateway has `[[services.credentials]]`.

use serde::Serialize;
use weir_service::{
    Endpoint, HandlerError, RabbitMqDialer, RawRequestContext, RawResponse, Service, TcpDialer, TypedRequest,
};

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

async fn greet(request: TypedRequest<()>) -> Result<Greeting, HandlerError> {
    let name = request.param("name").ok_or_else(|| HandlerError::bad_request("no name"))?;
    Ok(Greeting { greeting: format!("hello, {name}") })
}

async fn upload(mut ctx: RawRequestContext) -> Result<RawResponse, HandlerError> {
    let mut bytes = 0u64;
    while let Some(chunk) = ctx.body.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok(RawResponse::json(200, &serde_json::json!({ "bytes": bytes })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gateway = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7070".to_owned());
    let mut builder = Service::builder("greeter", "1.0.0")
        .endpoint(Endpoint::get("/greet/{name}").typed(greet))
        .endpoint(Endpoint::post("/upload").streaming().raw(upload));
    if let Ok(token) = std::env::var("WEIR_TOKEN") {
        builder = builder.token(token);
    }
    let service = builder.build()?;
    let (handle, place) = if gateway.starts_with("amqp://") || gateway.starts_with("amqps://") {
        let dialer = RabbitMqDialer::new(&gateway)?;
        let place = dialer.address().to_string(); // without the credentials
        (service.run(dialer), place)
    } else {
        (service.run(TcpDialer::new(gateway.clone())), gateway)
    };
    if handle.registered().await {
        println!("greeter registered with {place}");
    }
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    handle.join().await;
    Ok(())
}
