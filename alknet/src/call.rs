//! `alknet call`: one `alknet/call` request from the command line. The JSON result goes to
//! stdout; an error's code and message go to stderr with a non-zero exit status.

use std::process::ExitCode;
use std::time::Duration;

use alknet_call::{CallClient, CallError, CallOptions, ErrorCode};
use alknet_runtime::rt::run_local;
use alknet_runtime::Limits;
use clap::Args;
use serde_json::Value;

use crate::connect::{close_and_wait, ServerArgs};

/// Exit status when the call reached the server and it answered with an error.
const EXIT_CALL_ERROR: u8 = 2;
/// Exit status when the call could not be made (connection, arguments).
const EXIT_FAILURE: u8 = 1;

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Run the call as the identity of this token
    #[arg(long, env = "ALKNET_TOKEN")]
    token: Option<String>,
    /// Ask for a deadline shorter than the server's default, in milliseconds
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print items of a streaming operation one JSON value per line
    #[arg(long)]
    stream: bool,
    /// Pretty-print the result
    #[arg(long)]
    pretty: bool,
    #[command(flatten)]
    server: ServerArgs,
    /// Operation id, e.g. node.info
    operation: String,
    /// Input as JSON (default: null)
    input: Option<String>,
}

fn print(v: &Value, pretty: bool) {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    println!("{}", text.unwrap_or_else(|_| v.to_string()));
}

/// `alknet reload`: asks a running node to re-read its config file (`node.reload`, scope
/// `node:admin`) and prints what changed, one line each.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// Run the call as the identity of this token (it needs scope node:admin)
    #[arg(long, env = "ALKNET_TOKEN")]
    token: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn reload(args: ReloadArgs) -> ExitCode {
    let call = CallArgs {
        token: args.token,
        timeout_ms: None,
        stream: false,
        pretty: false,
        server: args.server,
        operation: "node.reload".into(),
        input: None,
    };
    execute(call, |v| {
        let changed: Vec<&str> = v["changed"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if changed.is_empty() {
            println!("reloaded: nothing changed");
        }
        for c in changed {
            println!("reloaded: {c}");
        }
    })
}

pub fn run(args: CallArgs) -> ExitCode {
    let pretty = args.pretty;
    execute(args, |v| print(v, pretty))
}

/// Makes the call `args` names, handing each result value to `show`.
fn execute(args: CallArgs, show: impl Fn(&Value)) -> ExitCode {
    let input: Value = match args.input.as_deref().map(serde_json::from_str).transpose() {
        Ok(v) => v.unwrap_or(Value::Null),
        Err(e) => {
            eprintln!("alknet call: input is not JSON: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let dial = match args.server.resolve(alknet_call::ALPN) {
        // over WebTransport the session runs as the token's identity too
        Ok(d) => crate::connect::Dial {
            token: args.token.clone(),
            ..d
        },
        Err(e) => {
            eprintln!("alknet call: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let opts = CallOptions {
        auth_token: args.token.clone(),
        timeout: args.timeout_ms.map(Duration::from_millis),
        forwarded_for: None,
    };
    let outcome = run_local(|_| async move {
        let (endpoint, conn) = dial.connect(&Limits::default()).await?;
        let client = CallClient::new(&conn).await.map_err(|e| e.to_string())?;
        client.set_default_token(args.token.clone());
        let result: Result<(), CallError> = if args.stream {
            match client.call_stream(&args.operation, input).await {
                Ok(mut items) => loop {
                    match items.next().await {
                        Some(Ok(v)) => show(&v),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(()),
                    }
                },
                Err(e) => Err(e),
            }
        } else {
            client
                .call_with(&args.operation, input, &opts)
                .await
                .map(|v| show(&v))
        };
        drop(client);
        close_and_wait(&endpoint, conn).await;
        Ok::<_, String>(result)
    });
    match outcome {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("{}: {}", e.code, e.message);
            // a failure of the connection itself is not the operation's answer
            if e.code == ErrorCode::Internal && e.message.starts_with("connection closed") {
                return ExitCode::from(EXIT_FAILURE);
            }
            ExitCode::from(EXIT_CALL_ERROR)
        }
        Ok(Err(e)) => {
            eprintln!("alknet call: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("alknet call: runtime: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
