//! Running blob transfers a few at a time on scoped threads; the first error
//! stops the workers from starting more and is returned.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{RegistryError, Result};

/// Calls `work` on every item, `workers` at a time.
pub fn for_each<T: Sync>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let workers = workers.min(items.len()).max(1);
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            handles.push(scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = work(item) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            }));
        }
        // Joined here so that a panicking worker becomes an error, not a
        // panic of the whole process.
        for handle in handles {
            if handle.join().is_err() {
                failed.store(true, Ordering::Relaxed);
                first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(RegistryError::Protocol {
                        what: "blob transfer".into(),
                        why: "a transfer thread panicked (a kiln bug; please report it)".into(),
                    });
            }
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_all_and_reports_an_error() {
        let seen = AtomicUsize::new(0);
        for_each(&[1, 2, 3, 4, 5], 3, |n| {
            seen.fetch_add(*n, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.into_inner(), 15);
        let err = for_each(&[1, 2, 3], 2, |n| {
            if *n == 2 {
                Err(RegistryError::Protocol {
                    what: "item".into(),
                    why: "two".into(),
                })
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("two"));
        for_each::<u8>(&[], 4, |_| Ok(())).unwrap();
    }
}
