use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub struct JoinError;

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinError")
    }
}

impl std::error::Error for JoinError {}

pub struct JoinHandle<T>
where
    T: Send,
{
    handle: tokio::sync::oneshot::Receiver<T>,
}

#[cfg(target_arch = "wasm32")]
macro_rules! spawn_impl {
    ($fn:expr) => {
        wasm_bindgen_futures::spawn_local($fn)
    };
}

#[cfg(not(target_arch = "wasm32"))]
macro_rules! spawn_impl {
    ($fn:expr) => {
        match LOCAL_SPAWNER.with(std::cell::Cell::get) {
            Some(local) => local(Box::pin($fn)),
            None => {
                tokio::spawn($fn);
            }
        }
    };
}

/// A task handed to a [`LocalSpawner`].
#[cfg(not(target_arch = "wasm32"))]
pub type LocalTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs a task on the calling thread's own executor instead of `tokio::spawn`.
///
/// alknet patch: a thread whose event loop is not tokio's (a monoio worker serving SSH
/// over QUIC) sets one, so that the sessions it starts (`server::run_stream`,
/// `client::connect_stream`) run on that thread, beside the connection carrying them,
/// instead of one cross-thread wake-up away on a tokio runtime. The spawner's tasks must
/// still find a tokio runtime for `tokio::time` (enter a handle while polling them).
#[cfg(not(target_arch = "wasm32"))]
pub type LocalSpawner = fn(LocalTask);

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static LOCAL_SPAWNER: std::cell::Cell<Option<LocalSpawner>> =
        const { std::cell::Cell::new(None) };
}

/// Sets (or with `None` clears) the calling thread's [`LocalSpawner`], returning the one
/// it replaces. Without one, [`spawn`] is `tokio::spawn`.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_local_spawner(spawner: Option<LocalSpawner>) -> Option<LocalSpawner> {
    LOCAL_SPAWNER.with(|cell| cell.replace(spawner))
}

pub fn spawn<F, T>(future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + 'static + Send,
    T: Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    spawn_impl!(async {
        let result = future.await;
        let _ = sender.send(result);
    });
    JoinHandle { handle: receiver }
}

impl<T> Future for JoinHandle<T>
where
    T: Send,
{
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.handle).poll(cx) {
            Poll::Ready(Ok(val)) => Poll::Ready(Ok(val)),
            Poll::Ready(Err(_)) => Poll::Ready(Err(JoinError)),
            Poll::Pending => Poll::Pending,
        }
    }
}
