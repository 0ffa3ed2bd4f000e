//! The Rayon pool every core call runs in.
//!
//! Rayon's threads do not survive `fork()` (PyTorch DataLoader workers fork):
//! a child that used the parent's pool would wait forever for threads that do
//! not exist. The pool is therefore tied to the process id: a forked child
//! builds a fresh pool of its own on first use. The pool size follows
//! `RAYON_NUM_THREADS` (Rayon's default) unless `set_num_threads` chose one.

use std::sync::{Arc, Mutex};

use nuq_core::lut::Exec;
use rayon::{ThreadPool, ThreadPoolBuilder};

struct Owned {
    pid: u32,
    threads: Option<usize>,
    pool: Arc<ThreadPool>,
}

static POOL: Mutex<Option<Owned>> = Mutex::new(None);

fn build(threads: Option<usize>) -> Arc<ThreadPool> {
    let builder = ThreadPoolBuilder::new().thread_name(|i| format!("nuq-rs-{i}"));
    let builder = match threads {
        Some(n) => builder.num_threads(n),
        None => builder,
    };
    Arc::new(
        builder
            .build()
            .expect("nuq-rs: cannot start worker threads"),
    )
}

/// The pool of this process, created (or re-created after a fork) on demand.
fn current() -> Arc<ThreadPool> {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match guard.as_ref() {
        Some(owned) if owned.pid == pid => owned.pool.clone(),
        inherited => {
            let threads = inherited.and_then(|o| o.threads);
            if let Some(old) = guard.take() {
                // The parent's worker threads are gone in this child; dropping
                // the pool would signal threads that do not exist.
                std::mem::forget(old);
            }
            let pool = build(threads);
            *guard = Some(Owned {
                pid,
                threads,
                pool: pool.clone(),
            });
            pool
        }
    }
}

/// Runs `f` on the pool.
pub fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    current().install(f)
}

/// Runs `f`, a core call that will run its tasks as `exec` says: on this
/// thread for `Exec::Serial` (it makes no Rayon call, so handing it to the
/// pool would only add the hand-over), else on the pool.
pub fn run_as<T: Send>(exec: Exec, f: impl FnOnce() -> T + Send) -> T {
    match exec {
        Exec::Serial => f(),
        Exec::Rayon => run(f),
    }
}

/// Replaces the pool by one of `threads` threads (`None`: Rayon's default).
pub fn set_threads(threads: Option<usize>) {
    let pool = build(threads);
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    *guard = Some(Owned {
        pid: std::process::id(),
        threads,
        pool,
    });
}

/// Threads of the current pool.
pub fn threads() -> usize {
    current().current_num_threads()
}
