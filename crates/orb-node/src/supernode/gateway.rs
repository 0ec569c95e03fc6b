//! The HTTP gateway: `/fn/NAME` runs a function and answers with its
//! output (errors mapped to statuses by `http_util`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response as HttpResponse;
use tracing::debug;

use super::{Shared, routing};
use crate::common::http_util;
use crate::common::util::request_id;

pub(super) async fn invoke(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> HttpResponse {
    let rid = request_id();
    let (meta, input) = match http_util::read_call(req, shared.config.max_body, rid.clone()).await {
        Ok(call) => call,
        Err(e) => return http_util::error_response(&e),
    };
    match routing::route_call(&shared, &name, meta, input, shared.id).await {
        Ok((node, outcome, out)) => {
            debug!(function = %name, request = %rid, node = %node.short(), "call served");
            http_util::call_response(node, &outcome, out, &rid)
        }
        Err(e) => http_util::error_response(&e),
    }
}
