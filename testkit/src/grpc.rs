//! A real gRPC server (tonic) for tests of HTTP/2 with trailers through the mesh.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

/// Generated messages, client and server.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("meshtest");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest, StreamRequest};

/// The test service.
#[derive(Debug, Default)]
pub struct EchoService;

fn caller(metadata: &MetadataMap) -> String {
    metadata
        .get("x-mesh-client-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let caller = caller(req.metadata());
        Ok(Response::new(EchoReply {
            message: req.into_inner().message,
            caller,
            seq: 0,
        }))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

    async fn stream(
        &self,
        req: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = caller(req.metadata());
        let StreamRequest {
            message,
            count,
            final_code,
        } = req.into_inner();
        let mut items: Vec<Result<EchoReply, Status>> = (0..count)
            .map(|seq| {
                Ok(EchoReply {
                    message: message.clone(),
                    caller: caller.clone(),
                    seq,
                })
            })
            .collect();
        if final_code != 0 {
            let mut trailers = MetadataMap::new();
            if let Ok(v) = count.to_string().parse() {
                trailers.insert("x-sent", v);
            }
            items.push(Err(Status::with_metadata(
                Code::from(final_code),
                format!("ended after {count}"),
                trailers,
            )));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// Serves [`EchoService`] on 127.0.0.1, port 0; the task ends when the runtime does.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the gRPC app");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}
