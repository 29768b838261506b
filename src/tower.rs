//! Heap labels for a whole request in a `tower` stack (axum, tonic, hyper
//! services): [`LabelLayer`] (cargo feature `tower`).
//!
//! Wrapping the handler's future in [`crate::labeled`] misses what runs
//! before it: axum's extractors (the body read into `Bytes` or `Json`),
//! tonic's decoding. The layer labels the whole of what the service does
//! for a request: its `call` (which may start work at once) runs with the
//! request's labels, and every poll of the future it returns, on whatever
//! thread polls it. Labels come from the request by a function of yours
//! (the route, the tenant from a header); keep their values from a bounded
//! set, as for every label.
//!
//! ```
//! use heapprof::tower::LabelLayer;
//! // With axum: `Router::new().route(…).layer(layer)`; with tonic:
//! // `Server::builder().layer(layer)`; with tower: `ServiceBuilder::new().layer(layer)`.
//! let layer = LabelLayer::new(|req: &http::Request<()>| {
//!     vec![("route", req.uri().path().to_string())]
//! });
//! # drop(layer);
//! ```

use std::task::{Context, Poll};

use crate::engine::labels::{LabelSet, Labeled};

/// A `tower::Layer` that gives each request's work the labels
/// `labels_of(&request)` returns (see the module doc).
#[derive(Clone, Debug)]
pub struct LabelLayer<F> {
    labels_of: F,
}

impl<F> LabelLayer<F> {
    /// Labels each request with `labels_of(&request)`: `(key, value)` pairs.
    pub fn new(labels_of: F) -> LabelLayer<F> {
        LabelLayer { labels_of }
    }
}

impl<S, F: Clone> tower_layer::Layer<S> for LabelLayer<F> {
    type Service = LabelService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        LabelService {
            inner,
            labels_of: self.labels_of.clone(),
        }
    }
}

/// The service [`LabelLayer`] makes: `inner`, with each request labelled.
#[derive(Clone, Debug)]
pub struct LabelService<S, F> {
    inner: S,
    labels_of: F,
}

impl<S, F, B, K, V> tower_service::Service<http::Request<B>> for LabelService<S, F>
where
    S: tower_service::Service<http::Request<B>>,
    F: Fn(&http::Request<B>) -> Vec<(K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Labeled<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let owned = (self.labels_of)(&req);
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        let set = LabelSet::new(&pairs);
        let fut = set.run(|| self.inner.call(req));
        set.wrap(fut)
    }
}
