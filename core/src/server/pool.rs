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
                        // Counted before it is handed over, so a taker can never
                        // count it out first (the count would wrap below zero);
                        // the count may run ahead by the keys workers hold.
                        ready.fetch_add(1, Ordering::Relaxed);
                        // Blocks while the pool is full; fails once it is dropped.
                        if tx.send(key).is_err() {
                            ready.fetch_sub(1, Ordering::Relaxed);
                            break;
                        }
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
    /// Keys generated and not yet counted out: those in the pool, plus at
    /// most one per worker waiting for room in a full pool and one per
    /// `take` in progress. Never below zero.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MockCipherSuite;

    fn instant_suite() -> Arc<MockCipherSuite> {
        let mut suite = MockCipherSuite::new();
        suite
            .expect_generate_rsa()
            .returning(|_| Ok(Zeroizing::new(vec![7u8; 32])));
        Arc::new(suite)
    }

    /// Several workers refilling while several threads drain: every take
    /// gets a key or none, the `ready` count never goes below zero (it is
    /// unsigned: a wrap would read as a huge number) nor past the pool's
    /// size plus the keys in workers' and takers' hands, and every key taken
    /// is counted as served.
    #[test]
    fn workers_and_takers_race_without_a_wrong_count() {
        let (size, workers) = (8, 4);
        let pool = Arc::new(KekPool::start(instant_suite(), 3072, size, workers));
        let takers_n = 4;
        // In the pool, plus one in a worker's hand, plus one in a taker's
        // hand between taking it and counting it out.
        let bound = (size + workers + takers_n) as u64;
        let takers: Vec<_> = (0..takers_n)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let mut got = 0u64;
                    for _ in 0..20_000 {
                        let ready = pool.ready();
                        assert!(ready <= bound, "ready count {ready} (a wrap below zero?)");
                        if pool.take(3072).is_some() {
                            got += 1;
                        }
                    }
                    got
                })
            })
            .collect();
        let taken: u64 = takers.into_iter().map(|t| t.join().expect("taker")).sum(); // ok: test
        assert_eq!(pool.served(), taken);
        assert!(
            pool.take(2048).is_none(),
            "keys of another size are never served"
        );
        assert!(pool.ready() <= bound);
    }
}
