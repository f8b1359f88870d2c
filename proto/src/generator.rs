//! The [`prost_build::ServiceGenerator`] that writes server traits, server
//! wrappers and client stubs for ferropoll-rpc.

use std::fmt::Write as _;

use prost_build::{Comments, Method, Service};

/// Emits ferropoll-rpc code for each protobuf `service`; see the crate docs
/// for what is generated. [`crate::Builder`] installs it; use it directly
/// only with a hand-made [`prost_build::Config`].
#[derive(Debug, Clone)]
pub struct ServiceGenerator {
    rpc: String,
    server: bool,
    client: bool,
}

impl ServiceGenerator {
    /// A generator whose code names the runtime crate `rpc_path` (usually
    /// `::ferropoll_rpc`), emitting server and/or client code.
    pub fn new(rpc_path: impl Into<String>, server: bool, client: bool) -> Self {
        ServiceGenerator {
            rpc: rpc_path.into(),
            server,
            client,
        }
    }
}

impl prost_build::ServiceGenerator for ServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        if self.server {
            self.server_trait(&service, &full_name, buf);
            self.server_wrapper(&service, &full_name, buf);
            self.async_trait(&service, &full_name, buf);
            self.async_wrapper(&service, &full_name, buf);
        }
        if self.client {
            self.client_stub(&service, &full_name, buf);
        }
    }
}

/// Writes `comments` as doc lines, then `extra` as a last paragraph.
fn docs(comments: &Comments, indent: &str, extra: &str, buf: &mut String) {
    for line in comments.leading.iter().chain(&comments.trailing) {
        let line = line.trim_end();
        if line.is_empty() {
            let _ = writeln!(buf, "{indent}///");
        } else {
            // Proto comments are plain text: keep brackets from being read as links.
            let line = line.replace('[', "\\[").replace(']', "\\]");
            let sep = if line.starts_with(' ') { "" } else { " " };
            let _ = writeln!(buf, "{indent}///{sep}{line}");
        }
    }
    if !comments.leading.is_empty() || !comments.trailing.is_empty() {
        let _ = writeln!(buf, "{indent}///");
    }
    for line in extra.lines() {
        let _ = writeln!(buf, "{indent}/// {line}");
    }
}

/// `name` without a raw-identifier prefix, for building suffixed names.
fn base_ident(name: &str) -> &str {
    name.strip_prefix("r#").unwrap_or(name)
}

impl ServiceGenerator {
    fn server_trait(&self, service: &Service, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let name = &service.name;
        docs(
            &service.comments,
            "",
            &format!(
                "Server side of `{full_name}`: implement this trait, wrap the implementation\n\
                 in [`{name}Server`] and register that on a server. Handlers run on a server\n\
                 thread (inline) or a pool worker, so they must be `Send + Sync`."
            ),
            buf,
        );
        let _ = writeln!(
            buf,
            "pub trait {name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for method in &service.methods {
            docs(
                &method.comments,
                "    ",
                &format!("Handles `{full_name}/{}`.", method.proto_name),
                buf,
            );
            let (params, ret) = self.handler_signature(method);
            let _ = writeln!(
                buf,
                "    fn {}(&self, ctx: &{rpc}::Context, {params}) -> ::core::result::Result<{ret}, {rpc}::Status>;",
                method.name
            );
        }
        buf.push_str("}\n\n");
    }

    /// The parameters and the `Ok` type of a handler of `method`.
    fn handler_signature(&self, method: &Method) -> (String, String) {
        let rpc = &self.rpc;
        let (input, output) = (&method.input_type, &method.output_type);
        match (method.client_streaming, method.server_streaming) {
            (false, false) => (format!("req: {input}"), output.clone()),
            (false, true) => (
                format!("req: {input}, responses: {rpc}::SendSink<{output}>"),
                "()".to_owned(),
            ),
            (true, false) => (
                format!("requests: {rpc}::RecvStream<{input}>"),
                output.clone(),
            ),
            (true, true) => (
                format!(
                    "requests: {rpc}::RecvStream<{input}>, responses: {rpc}::SendSink<{output}>"
                ),
                "()".to_owned(),
            ),
        }
    }

    fn async_trait(&self, service: &Service, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let name = &service.name;
        let _ = write!(
            buf,
            "/// Server side of `{full_name}` with async handlers: implement this trait\n\
             /// (with `async fn`), wrap the implementation in [`{name}AsyncServer`] and\n\
             /// register that on a server. The futures are polled on the connection's\n\
             /// event-loop thread — at once when the request arrives, then whenever\n\
             /// they are woken — so they must not block; a future that needs a\n\
             /// runtime's context (tokio timers and sockets) must be spawned on that\n\
             /// runtime and its join handle awaited. Streams are used through their\n\
             /// async forms (`message`, `send_async`).\n\
             pub trait {name}Async: ::core::marker::Send + ::core::marker::Sync + 'static {{\n"
        );
        for method in &service.methods {
            let (params, ret) = self.handler_signature(method);
            let _ = writeln!(
                buf,
                "    /// Handles `{full_name}/{}`.\n    fn {}(&self, ctx: &{rpc}::Context, {params}) -> impl ::core::future::Future<Output = ::core::result::Result<{ret}, {rpc}::Status>> + ::core::marker::Send;",
                method.proto_name, method.name
            );
        }
        buf.push_str("}\n\n");
    }

    fn async_wrapper(&self, service: &Service, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let name = &service.name;
        let _ = write!(
            buf,
            "/// Adapts a [`{name}Async`] implementation to [`{rpc}::Service`]: every method\n\
             /// of `{full_name}` is served by an async handler on the loop thread.\n\
             #[derive(Debug)]\n\
             pub struct {name}AsyncServer<T> {{\n    inner: ::std::sync::Arc<T>,\n}}\n\n\
             impl<T> ::core::clone::Clone for {name}AsyncServer<T> {{\n\
             \x20   fn clone(&self) -> Self {{\n        Self {{ inner: ::std::sync::Arc::clone(&self.inner) }}\n    }}\n}}\n\n\
             impl<T: {name}Async> {name}AsyncServer<T> {{\n\
             \x20   /// Wraps an implementation.\n\
             \x20   pub fn new(inner: T) -> Self {{\n        Self {{ inner: ::std::sync::Arc::new(inner) }}\n    }}\n\n\
             \x20   /// Wraps a shared implementation.\n\
             \x20   pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {{\n        Self {{ inner }}\n    }}\n\n\
             \x20   /// The implementation.\n\
             \x20   pub fn get_ref(&self) -> &T {{\n        &self.inner\n    }}\n}}\n\n"
        );
        let method_names: Vec<String> = service
            .methods
            .iter()
            .map(|m| format!("{:?}", m.proto_name))
            .collect();
        let _ = write!(
            buf,
            "impl<T: {name}Async> {rpc}::Service for {name}AsyncServer<T> {{\n\
             \x20   fn name(&self) -> &'static str {{\n        {full_name:?}\n    }}\n\n\
             \x20   fn methods(&self) -> &'static [&'static str] {{\n        &[{}]\n    }}\n\n\
             \x20   fn is_async(&self, _method: usize) -> bool {{\n        true\n    }}\n\n\
             \x20   fn call(&self, _method: usize, _ctx: &{rpc}::Context, _request: {rpc}::LinkBuffer, reply: {rpc}::Reply<'_>) {{\n\
             \x20       reply.error({rpc}::Status::internal(\"an async method was called synchronously\"));\n    }}\n",
            method_names.join(", ")
        );
        let is_stream = |m: &Method| m.client_streaming || m.server_streaming;
        if service.methods.iter().any(is_stream) {
            buf.push_str(
                "\n    fn kind(&self, method: usize) -> {rpc}::MethodKind {\n        match method {\n"
                    .replace("{rpc}", rpc)
                    .as_str(),
            );
            for (index, method) in service.methods.iter().enumerate() {
                let kind = match (method.client_streaming, method.server_streaming) {
                    (false, false) => continue,
                    (true, false) => "ClientStreaming",
                    (false, true) => "ServerStreaming",
                    (true, true) => "Bidi",
                };
                let _ = writeln!(buf, "            {index} => {rpc}::MethodKind::{kind},");
            }
            let _ = writeln!(
                buf,
                "            _ => {rpc}::MethodKind::Unary,\n        }}\n    }}"
            );
        }
        // unary
        let _ = write!(
            buf,
            "\n    fn call_async(&self, method: usize, ctx: {rpc}::Context, request: {rpc}::LinkBuffer) -> {rpc}::BoxFuture<{rpc}::AsyncReply> {{\n\
             \x20       let inner = ::std::sync::Arc::clone(&self.inner);\n\
             \x20       match method {{\n"
        );
        for (index, method) in service.methods.iter().enumerate() {
            if is_stream(method) {
                continue;
            }
            let _ = writeln!(
                buf,
                "            {index} => ::std::boxed::Box::pin(async move {{\n\
                 \x20               let req = match {rpc}::AsyncReply::decode(&ctx, request) {{\n\
                 \x20                   ::core::result::Result::Ok(req) => req,\n\
                 \x20                   ::core::result::Result::Err(reply) => return reply,\n\
                 \x20               }};\n\
                 \x20               let result = inner.{}(&ctx, req).await;\n\
                 \x20               {rpc}::AsyncReply::respond(result, ctx.take_response_metadata())\n            }}),",
                method.name
            );
        }
        let _ = write!(
            buf,
            "            _ => {{\n                let _ = (inner, ctx, request);\n\
             \x20               ::std::boxed::Box::pin(::core::future::ready({rpc}::AsyncReply::error({rpc}::Status::unimplemented(\"unknown method\"))))\n            }}\n\
             \x20       }}\n    }}\n"
        );
        if service.methods.iter().any(is_stream) {
            let _ = write!(
                buf,
                "\n    fn call_stream_async(&self, method: usize, ctx: {rpc}::Context, stream: {rpc}::StreamCall) -> {rpc}::BoxFuture<::core::result::Result<(), {rpc}::Status>> {{\n\
                 \x20       let inner = ::std::sync::Arc::clone(&self.inner);\n\
                 \x20       match method {{\n"
            );
            for (index, method) in service.methods.iter().enumerate() {
                let name = &method.name;
                let body = match (method.client_streaming, method.server_streaming) {
                    (false, false) => continue,
                    (false, true) => format!(
                        "let (requests, responses) = stream.into_parts();\n\
                         \x20               let req = {rpc}::RecvStream::single_async(requests).await?;\n\
                         \x20               inner.{name}(&ctx, req, responses).await"
                    ),
                    (true, false) => format!(
                        "let (requests, mut responses) = stream.into_parts();\n\
                         \x20               let resp = inner.{name}(&ctx, requests).await?;\n\
                         \x20               responses.send_async(&resp).await"
                    ),
                    (true, true) => format!(
                        "let (requests, responses) = stream.into_parts();\n\
                         \x20               inner.{name}(&ctx, requests, responses).await"
                    ),
                };
                let _ = writeln!(
                    buf,
                    "            {index} => ::std::boxed::Box::pin(async move {{\n                {body}\n            }}),"
                );
            }
            let _ = write!(
                buf,
                "            _ => {{\n                let _ = (inner, ctx, stream);\n\
                 \x20               ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Err({rpc}::Status::unimplemented(\"unknown method\"))))\n            }}\n\
                 \x20       }}\n    }}\n"
            );
        }
        buf.push_str("}\n\n");
    }

    fn server_wrapper(&self, service: &Service, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let name = &service.name;
        let _ = write!(
            buf,
            "/// Adapts a [`{name}`] implementation to [`{rpc}::Service`] so that a server can\n\
             /// dispatch `{full_name}` requests to it.\n\
             #[derive(Debug, Clone)]\n\
             pub struct {name}Server<T> {{\n    inner: T,\n}}\n\n\
             impl<T: {name}> {name}Server<T> {{\n\
             \x20   /// Wraps an implementation.\n\
             \x20   pub fn new(inner: T) -> Self {{\n        Self {{ inner }}\n    }}\n\n\
             \x20   /// The implementation.\n\
             \x20   pub fn get_ref(&self) -> &T {{\n        &self.inner\n    }}\n\n\
             \x20   /// Unwraps the implementation.\n\
             \x20   pub fn into_inner(self) -> T {{\n        self.inner\n    }}\n}}\n\n"
        );
        let method_names: Vec<String> = service
            .methods
            .iter()
            .map(|m| format!("{:?}", m.proto_name))
            .collect();
        let _ = write!(
            buf,
            "impl<T: {name}> {rpc}::Service for {name}Server<T> {{\n\
             \x20   fn name(&self) -> &'static str {{\n        {full_name:?}\n    }}\n\n\
             \x20   fn methods(&self) -> &'static [&'static str] {{\n        &[{}]\n    }}\n\n\
             \x20   fn call(\n        &self,\n        method: usize,\n        ctx: &{rpc}::Context,\n\
             \x20       request: {rpc}::LinkBuffer,\n        reply: {rpc}::Reply<'_>,\n    ) {{\n",
            method_names.join(", ")
        );
        let is_stream = |m: &Method| m.client_streaming || m.server_streaming;
        if !service.methods.iter().any(|m| !is_stream(m)) {
            buf.push_str(
                "        let _ = (method, ctx, request);\n        reply.unknown_method();\n",
            );
        } else {
            buf.push_str("        match method {\n");
            for (index, method) in service.methods.iter().enumerate() {
                if is_stream(method) {
                    continue;
                }
                let _ = writeln!(
                    buf,
                    "            {index} => reply.unary(ctx, request, |ctx, req| self.inner.{}(ctx, req)),",
                    method.name
                );
            }
            buf.push_str("            _ => reply.unknown_method(),\n        }\n");
        }
        buf.push_str("    }\n");
        if service.methods.iter().any(is_stream) {
            buf.push_str(
                "\n    fn kind(&self, method: usize) -> {rpc}::MethodKind {\n        match method {\n"
                    .replace("{rpc}", rpc)
                    .as_str(),
            );
            for (index, method) in service.methods.iter().enumerate() {
                let kind = match (method.client_streaming, method.server_streaming) {
                    (false, false) => continue,
                    (true, false) => "ClientStreaming",
                    (false, true) => "ServerStreaming",
                    (true, true) => "Bidi",
                };
                let _ = writeln!(buf, "            {index} => {rpc}::MethodKind::{kind},");
            }
            let _ = write!(
                buf,
                "            _ => {rpc}::MethodKind::Unary,\n        }}\n    }}\n\n\
                 \x20   fn call_stream(\n        &self,\n        method: usize,\n        ctx: &{rpc}::Context,\n\
                 \x20       stream: {rpc}::StreamCall,\n    ) -> ::core::result::Result<(), {rpc}::Status> {{\n\
                 \x20       match method {{\n"
            );
            for (index, method) in service.methods.iter().enumerate() {
                let name = &method.name;
                let body = match (method.client_streaming, method.server_streaming) {
                    (false, false) => continue,
                    (false, true) => format!(
                        "{{\n                let (requests, responses) = stream.into_parts();\n\
                         \x20               let req = {rpc}::RecvStream::single(requests)?;\n\
                         \x20               self.inner.{name}(ctx, req, responses)\n            }}"
                    ),
                    (true, false) => format!(
                        "{{\n                let (requests, mut responses) = stream.into_parts();\n\
                         \x20               let resp = self.inner.{name}(ctx, requests)?;\n\
                         \x20               responses.send(&resp)\n            }}"
                    ),
                    (true, true) => format!(
                        "{{\n                let (requests, responses) = stream.into_parts();\n\
                         \x20               self.inner.{name}(ctx, requests, responses)\n            }}"
                    ),
                };
                let _ = writeln!(buf, "            {index} => {body}");
            }
            let _ = write!(
                buf,
                "            _ => ::core::result::Result::Err({rpc}::Status::unimplemented(\"unknown method\")),\n        }}\n    }}\n"
            );
        }
        buf.push_str("}\n\n");
    }

    fn client_stub(&self, service: &Service, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let name = &service.name;
        let _ = write!(
            buf,
            "/// Client stub of `{full_name}`. Per unary RPC: a blocking call, a blocking call\n\
             /// with [`{rpc}::CallOptions`] (timeout, metadata), one that also returns the\n\
             /// response's metadata, and two forms returning a runtime-agnostic\n\
             /// [`{rpc}::CallFuture`]; per streaming RPC, the opening of its stream.\n\
             /// Cheap to clone; usable from any thread.\n\
             #[derive(Debug, Clone)]\n\
             pub struct {name}Client {{\n    inner: {rpc}::Client,\n}}\n\n\
             impl {name}Client {{\n\
             \x20   /// The service's full name on the wire.\n\
             \x20   pub const SERVICE: &'static str = {full_name:?};\n\n\
             \x20   /// A stub calling through `client`.\n\
             \x20   pub fn new(client: {rpc}::Client) -> Self {{\n        Self {{ inner: client }}\n    }}\n\n\
             \x20   /// The client this stub calls through.\n\
             \x20   pub fn client(&self) -> &{rpc}::Client {{\n        &self.inner\n    }}\n"
        );
        for method in &service.methods {
            if method.client_streaming || method.server_streaming {
                self.client_stream_method(method, full_name, buf);
            } else {
                self.client_method(method, full_name, buf);
            }
        }
        buf.push_str("}\n\n");
    }

    fn client_stream_method(&self, method: &Method, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let ident = &method.name;
        let base = base_ident(ident);
        let (input, output, proto) = (&method.input_type, &method.output_type, &method.proto_name);
        let path = format!("{full_name}/{proto}");
        let (doc, req_param, ret, call, req_arg) = if method.client_streaming {
            let what = if method.server_streaming {
                "read the responses from the stream"
            } else {
                "wait for the one response with `RecvStream::single` (or `single_async`)"
            };
            (
                format!(
                    "Opens `{path}`: write requests into the sink (closing or dropping it\n\
                     ends them), {what}. Dropping the stream before its\n\
                     end cancels the call. Blocking (`send`, `recv`) and async\n\
                     (`send_async`, `message`) forms are on the sink and the stream."
                ),
                String::new(),
                format!(
                    "::core::result::Result<({rpc}::SendSink<{input}>, {rpc}::RecvStream<{output}>), {rpc}::Status>"
                ),
                if method.server_streaming {
                    "open_stream"
                } else {
                    "client_stream"
                },
                "",
            )
        } else {
            (
                format!(
                    "Opens `{path}` with its request: read the responses from the\n\
                     stream, blocking (`recv`, or iterate) or async (`message`).\n\
                     Dropping the stream before its end cancels the call."
                ),
                format!("req: &{input}"),
                format!("::core::result::Result<{rpc}::RecvStream<{output}>, {rpc}::Status>"),
                "server_stream",
                "req, ",
            )
        };
        let sep = if req_param.is_empty() { "" } else { ", " };
        for with in [false, true] {
            buf.push('\n');
            if with {
                let _ = writeln!(
                    buf,
                    "    /// As [`Self::{ident}`], with `options` (timeout, metadata)."
                );
                let _ = write!(
                    buf,
                    "    pub fn {base}_with(&self, {req_param}{sep}options: &{rpc}::CallOptions) -> {ret} {{\n\
                     \x20       self.inner.{call}::<{input}, {output}>(Self::SERVICE, {proto:?}, {req_arg}options)\n    }}\n"
                );
            } else {
                docs(&method.comments, "    ", &doc, buf);
                let _ = write!(
                    buf,
                    "    pub fn {ident}(&self{sep}{req_param}) -> {ret} {{\n\
                     \x20       self.inner.{call}::<{input}, {output}>(Self::SERVICE, {proto:?}, {req_arg}&{rpc}::CallOptions::DEFAULT)\n    }}\n"
                );
            }
        }
    }

    fn client_method(&self, method: &Method, full_name: &str, buf: &mut String) {
        let rpc = &self.rpc;
        let ident = &method.name;
        let base = base_ident(ident);
        let (input, output, proto) = (&method.input_type, &method.output_type, &method.proto_name);
        let path = format!("{full_name}/{proto}");
        let forms = [
            (
                ident.clone(),
                format!("Calls `{path}` and blocks until the response, using default options."),
                "",
                format!("::core::result::Result<{output}, {rpc}::Status>"),
                "unary",
                format!("&{rpc}::CallOptions::DEFAULT"),
            ),
            (
                format!("{base}_with"),
                format!("Calls `{path}` with `options` and blocks until the response."),
                ", options: &{rpc}::CallOptions",
                format!("::core::result::Result<{output}, {rpc}::Status>"),
                "unary",
                "options".to_owned(),
            ),
            (
                format!("{base}_with_metadata"),
                format!(
                    "Calls `{path}` with `options`, blocks until the response, and returns it\n\
                     with the metadata of the OK response (the async form:\n\
                     `CallFuture::with_metadata`)."
                ),
                ", options: &{rpc}::CallOptions",
                format!("::core::result::Result<({output}, {rpc}::Metadata), {rpc}::Status>"),
                "unary_with_metadata",
                "options".to_owned(),
            ),
            (
                format!("{base}_async"),
                format!(
                    "Starts `{path}` with default options; the future resolves to the response.\n\
                     The request is on its way when this returns (see `Client::unary_async`);\n\
                     dropping the future cancels the call."
                ),
                "",
                format!("{rpc}::CallFuture<{output}>"),
                "unary_async",
                format!("&{rpc}::CallOptions::DEFAULT"),
            ),
            (
                format!("{base}_async_with"),
                format!(
                    "Starts `{path}` with `options`; the future resolves to the response.\n\
                     The request is on its way when this returns (see `Client::unary_async`);\n\
                     dropping the future cancels the call."
                ),
                ", options: &{rpc}::CallOptions",
                format!("{rpc}::CallFuture<{output}>"),
                "unary_async",
                "options".to_owned(),
            ),
        ];
        for (i, (fn_name, doc, extra_param, ret, call, opts)) in forms.into_iter().enumerate() {
            buf.push('\n');
            if i == 0 {
                docs(&method.comments, "    ", &doc, buf);
            } else {
                let _ = writeln!(buf, "    /// {}", doc.replace('\n', "\n    /// "));
            }
            let extra_param = extra_param.replace("{rpc}", rpc);
            let _ = write!(
                buf,
                "    pub fn {fn_name}(&self, req: &{input}{extra_param}) -> {ret} {{\n\
                 \x20       self.inner.{call}::<{input}, {output}>(Self::SERVICE, {proto:?}, req, {opts})\n    }}\n"
            );
        }
    }
}
