//! A bounded pool of pre-generated RSA key pairs, refilled by background
//! threads, so that `generate()` costs little more than the storage write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::CipherSuite;

/// Pre-generated PKCS#8 keys of one size. Keys live only in this process's
/// memory, wiped when taken and used, or when the pool is dropped; they are
/// never written anywhere.
pub(crate) struct KekPool {
    keys: Mutex<Receiver<Zeroizing<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicU64>,
    served: AtomicU64,
    bits: usize,
    size: usize,
    workers: usize,
}

impl KekPool {
    /// Starts `workers` threads that keep up to `size` keys of `bits` ready.
    pub(crate) fn start<C: CipherSuite>(
        suite: Arc<C>,
        bits: usize,
        size: usize,
        workers: usize,
    ) -> Self {
        let (tx, rx) = sync_channel::<Zeroizing<Vec<u8>>>(size);
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicU64::new(0));
        for n in 0..workers.max(1) {
            let (tx, suite, stop, ready) = (
                tx.clone(),
                Arc::clone(&suite),
                Arc::clone(&stop),
                Arc::clone(&ready),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("keyserver-kek-pool-{n}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(key) = suite.generate_rsa(bits) else {
                            tracing::warn!(target: "keyserver::pool", "key generation failed; the pool worker stops");
                            break;
                        };
                        // Blocks while the pool is full; fails once it is dropped.
                        if tx.send(key).is_err() {
                            break;
                        }
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                });
            if spawned.is_err() {
                tracing::warn!(target: "keyserver::pool", "cannot start a pool worker thread");
            }
        }
        KekPool {
            keys: Mutex::new(rx),
            stop,
            ready,
            served: AtomicU64::new(0),
            bits,
            size,
            workers: workers.max(1),
        }
    }

    /// A ready key of `bits`, if the pool holds one.
    pub(crate) fn take(&self, bits: usize) -> Option<Zeroizing<Vec<u8>>> {
        if bits != self.bits {
            return None;
        }
        let keys = self.keys.lock().ok()?;
        match keys.try_recv() {
            Ok(key) => {
                self.ready.fetch_sub(1, Ordering::Relaxed);
                self.served.fetch_add(1, Ordering::Relaxed);
                Some(key)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Keys ready now (approximate while workers run).
    pub(crate) fn ready(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }

    /// Keys handed out so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The number of worker threads.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// The pool's capacity.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Drop for KekPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver wipes every queued key (Zeroizing) and makes
        // blocked workers' sends fail, so they exit; a worker in the middle of
        // a generation exits after it, dropping (wiping) that key.
        if let Ok(keys) = self.keys.lock() {
            while keys.try_recv().is_ok() {}
        }
    }
}
