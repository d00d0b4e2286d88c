//! Protocol detection on a connection's first bytes, sent through an in-memory duplex in the
//! chunks the input decides.
//!
//! Input: a flags byte, then chunks, each a length byte and that many bytes. Bit 0 of the flags
//! keeps the connection open after the last chunk (detection then ends by its timeout, under
//! paused time) instead of closing it. Whatever the outcome, the bytes detection read are
//! replayed in order: the reader sees exactly what was sent.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Far beyond any detection, in paused time: only a hang reaches it.
const HANG: Duration = Duration::from_secs(3600);

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let stay_open = flags & 1 == 1;
    let mut chunks = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        chunks.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    let sent: Vec<u8> = chunks.concat();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                // Another read for the next chunk: let the detector run first.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if stay_open {
                tokio::time::sleep(HANG * 2).await;
            }
            drop(client);
        });
        let detected =
            tokio::time::timeout(HANG, mesh_sidecar::fuzzing::detect(server, DETECT_TIMEOUT))
                .await
                .expect("detection ends by its timeout");
        let (outcome, mut io) = detected.expect("a duplex does not fail");
        match outcome {
            "h2" => assert!(sent.starts_with(H2_PREFACE)),
            "http1" => {
                let space = sent
                    .iter()
                    .position(|&b| b == b' ')
                    .expect("a method and a space");
                assert!(space > 0 && space <= 32, "method of {space} bytes");
            }
            "tcp" | "timeout" => {}
            other => panic!("unknown outcome {other}"),
        }
        let mut seen = vec![0u8; sent.len()];
        tokio::time::timeout(HANG, io.read_exact(&mut seen))
            .await
            .expect("every byte sent is read again")
            .expect("a duplex does not fail");
        assert_eq!(seen, sent);
        // Awaited, so the writer and its end of the duplex are gone before the next input.
        writer.abort();
        let _ = writer.await;
    });
});
