//! `heapprof::tower::LabelLayer` around a service shaped like axum's: its
//! `call` reads the request body ("extractors", in `extract_body`) and its
//! future runs the handler (`handle_request`). At rate 1 the profile says
//! exactly which route each byte was allocated for, both parts included.
//! Prints one line per (function, label set): `FUNCTION LABELS BYTES`.
//!
//! ```text
//! cargo run --features tower --example tower_labels
//! ```

use std::alloc::System;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use heapprof::report::{LabelValue, Resolved};
use tower_layer::Layer;
use tower_service::Service;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

/// What an extractor does before the handler: the body, copied.
#[inline(never)]
fn extract_body(req: &http::Request<Vec<u8>>) -> Box<[u8]> {
    req.body().clone().into_boxed_slice()
}

/// The handler's own allocation, kept (the leak under test).
#[inline(never)]
fn handle_request(body: Box<[u8]>) {
    Box::leak(vec![1u8; body.len() * 2].into_boxed_slice());
    Box::leak(body);
}

struct App;

/// The futures here are ready at their first poll: nothing to wake.
struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

impl Service<http::Request<Vec<u8>>> for App {
    type Response = ();
    type Error = ();
    type Future = Pin<Box<dyn Future<Output = Result<(), ()>>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Vec<u8>>) -> Self::Future {
        let body = extract_body(&req);
        Box::pin(async move {
            handle_request(body);
            Ok(())
        })
    }
}

fn main() {
    heapprof::set_rate(1);
    let layer = heapprof::tower::LabelLayer::new(|req: &http::Request<Vec<u8>>| {
        vec![("route", req.uri().path().to_string())]
    });
    let mut svc = layer.layer(App);
    let waker = Waker::from(Arc::new(NoWake));
    let mut cx = Context::from_waker(&waker);
    for (path, size) in [("/upload", 1000), ("/download", 300), ("/upload", 1000)] {
        let req = http::Request::builder()
            .uri(path)
            .body(vec![7u8; size])
            .unwrap();
        let mut fut = Box::pin(svc.call(req));
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    }
    let r = Resolved::from_profile("live", &heapprof::profile()).unwrap();
    let mut lines = std::collections::BTreeMap::new();
    for s in &r.samples {
        let Some(leaf) = r.stacks[s.stack].frames.first() else {
            continue;
        };
        let f = ["extract_body", "handle_request"]
            .into_iter()
            .find(|f| leaf.function.contains(f));
        let Some(f) = f else { continue };
        let labels: Vec<String> = s
            .labels
            .iter()
            .filter_map(|l| match &l.value {
                LabelValue::Str(v) => Some(format!("{}={v}", l.key)),
                LabelValue::Num { .. } => None,
            })
            .collect();
        *lines.entry((f, labels.join(","))).or_insert(0i64) += s.values[3];
    }
    for ((f, labels), bytes) in lines {
        println!("{f} {labels} {bytes}");
    }
}
