//! gRPC (HTTP/2 with trailers) through two sidecars, with a real tonic client and server.

use mesh_testkit::grpc::pb::echo_client::EchoClient;
use mesh_testkit::grpc::pb::{EchoRequest, StreamRequest};
use mesh_testkit::{TestMesh, grpc};
use tonic::Code;
use tonic::transport::Endpoint;

use crate::ORDERS_ID;

async fn client() -> (
    EchoClient<tonic::transport::Channel>,
    TestMesh,
    Vec<mesh_testkit::Sidecar>,
) {
    let mesh = TestMesh::new();
    let app = grpc::start().await;
    let inventory = mesh.sidecar("inventory").app(app).start().await;
    let orders = mesh
        .sidecar("orders")
        .destination("inventory", &[inventory.inbound])
        .start()
        .await;
    // The channel dials the outbound listener but names the service as :authority.
    let channel = Endpoint::from_shared(orders.outbound_url())
        .unwrap()
        .origin("http://inventory".parse().unwrap())
        .connect()
        .await
        .unwrap();
    (EchoClient::new(channel), mesh, vec![orders, inventory])
}

#[tokio::test]
async fn unary_call_goes_through_with_the_callers_identity() {
    let (mut client, _mesh, _sidecars) = client().await;
    let reply = client
        .unary(EchoRequest {
            message: "hello".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.caller, ORDERS_ID);
}

#[tokio::test]
async fn server_streaming_call_ends_with_its_trailers() {
    let (mut client, _mesh, _sidecars) = client().await;

    // Ends OK: grpc-status 0 arrives in the trailers after five messages.
    let mut stream = client
        .stream(StreamRequest {
            message: "m".into(),
            count: 5,
            final_code: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        seqs.push(reply.seq);
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4]);

    // Ends with an error status and custom trailing metadata.
    let mut stream = client
        .stream(StreamRequest {
            message: "m".into(),
            count: 3,
            final_code: Code::Aborted as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("stream ended OK; expected the error status from the trailers"),
            Err(status) => break status,
        }
    };
    assert_eq!(received, 3);
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "ended after 3");
    assert_eq!(status.metadata().get("x-sent").unwrap(), "3");
}
