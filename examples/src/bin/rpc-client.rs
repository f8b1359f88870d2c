//! A command-line client of `rpc-server`.
//!
//! ```text
//! rpc-client --addr 127.0.0.1:9200 echo hello
//! rpc-client --addr 127.0.0.1:9200 put k v
//! rpc-client --addr 127.0.0.1:9200 get k
//! rpc-client --addr 127.0.0.1:9200 list [PREFIX]
//! rpc-client --addr 127.0.0.1:9200 delete k
//! ```
//! Exits 0 on success, 1 with the status on stderr otherwise.
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use ferropoll_examples::pb::{echo, kv};
use ferropoll_rpc::{CallOptions, Client, ClientOptions, Status};

/// Calls echo.Echo or kv.Kv on an rpc-server.
#[derive(Parser, Debug)]
struct Args {
    /// Server address (host:port, or unix:/path).
    #[arg(long, default_value = "127.0.0.1:9200")]
    addr: String,
    /// Call timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// echo.Echo/Echo: prints what comes back.
    Echo {
        /// Text to send.
        text: String,
    },
    /// kv.Kv/Get: prints the value.
    Get {
        /// Key.
        key: String,
    },
    /// kv.Kv/Put: sets a key.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Fail with ALREADY_EXISTS if the key is present.
        #[arg(long)]
        if_absent: bool,
    },
    /// kv.Kv/Delete: removes a key, prints its value.
    Delete {
        /// Key.
        key: String,
    },
    /// kv.Kv/List: prints `key = value` lines.
    List {
        /// Only keys with this prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

fn run(args: Args) -> Result<(), Status> {
    let client = Client::connect(&args.addr, ClientOptions::default())?;
    let opts = CallOptions::new().with_timeout(Duration::from_millis(args.timeout_ms));
    let kv = kv::KvClient::new(client.clone());
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    match args.command {
        Command::Echo { text: t } => {
            let out = echo::EchoClient::new(client)
                .echo_with(&echo::EchoRequest { payload: t.into() }, &opts)?;
            println!("{}", text(&out.payload));
        }
        Command::Get { key } => {
            let out = kv.get_with(&kv::GetRequest { key }, &opts)?;
            println!("{}", text(&out.value));
        }
        Command::Put {
            key,
            value,
            if_absent,
        } => {
            let out = kv.put_with(
                &kv::PutRequest {
                    key,
                    value: value.into(),
                    if_absent,
                },
                &opts,
            )?;
            println!("{}", if out.replaced { "replaced" } else { "created" });
        }
        Command::Delete { key } => {
            let out = kv.delete_with(&kv::DeleteRequest { key }, &opts)?;
            println!("{}", text(&out.value));
        }
        Command::List { prefix } => {
            let out = kv.list_with(
                &kv::ListRequest {
                    prefix,
                    start_after: String::new(),
                    limit: 0,
                },
                &opts,
            )?;
            for e in &out.entries {
                println!("{} = {}", e.key, text(&e.value));
            }
            if out.truncated {
                println!("(more)");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(status) => {
            eprintln!("rpc-client: {status}");
            ExitCode::FAILURE
        }
    }
}
