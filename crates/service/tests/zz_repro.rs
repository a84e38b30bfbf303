mod common;
use common::{connect_quiet, get, within};
use weir_proto::CancelReason;
use weir_service::{Endpoint, RawResponse, Service};

#[tokio::test]
async fn immediate_cancel_after_call() {
    let service = Service::builder("x", "1.0.0")
        .endpoint(Endpoint::get("/ok").raw(|_| async { Ok(RawResponse::text(200, "fine")) }))
        .build()
        .unwrap();
    let (gateway, session) = connect_quiet(&service).await;
    let call = gateway.call(get("/ok")).await;
    call.handle.cancel(CancelReason::ClientDisconnected);
    let (head, _) = gateway.exchange(get("/ok")).await;
    assert_eq!(head.status, 200);
    assert!(!session.is_closed(), "{:?}", session.close_reason());
    let _ = within(async {}).await;
}
