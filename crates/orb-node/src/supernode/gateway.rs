//! The HTTP gateway: any method on `/fn/NAME` and `/fn/NAME/PATH?QUERY`
//! runs a function and answers with its output: the status and headers of
//! its CGI answer or its deployed content type (see `common::answer`),
//! errors mapped to statuses by `http_util`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response as HttpResponse;
use tracing::debug;

use super::{Shared, routing};
use crate::common::http_util;
use crate::common::util::request_id;

/// Where function calls live on the gateway.
pub(super) const PREFIX: &str = "/fn/";

pub(super) async fn invoke(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
) -> HttpResponse {
    let rid = request_id();
    let (name, meta, input) =
        match http_util::read_call(req, PREFIX, shared.config.max_body, rid.clone()).await {
            Ok(call) => call,
            Err(e) => return http_util::error_response(&e),
        };
    let method = meta.method.clone();
    match routing::route_call(&shared, &name, meta, input, shared.id).await {
        Ok((node, outcome, out)) => {
            debug!(function = %name, request = %rid, node = %node.short(), "call served");
            http_util::call_response(node, &outcome, out, &rid, &method)
        }
        Err(e) => http_util::error_response(&e),
    }
}
