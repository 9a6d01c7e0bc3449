//! loom models of the commit hand-off (`snapshots/src/handoff.rs`): every interleaving of
//! producers, the consumer and `close` up to `LOOM_MAX_PREEMPTIONS` preemptions.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

use loom_tests::handoff::{Handoff, PushError};

/// An item of the models: (producer, index, record count).
type Item = (u8, u8, u64);

/// Checks one batch handed to the consumer: sequences contiguous from `*next_seq`, whole
/// items, within the record budget unless it is a single item.
fn check_batch(batch: &[(u64, Item)], next_seq: &mut u64, max_records: u64) {
    assert!(!batch.is_empty(), "take hands over at least one item");
    let mut records = 0;
    for &(seq, (_, _, count)) in batch {
        assert_eq!(seq, *next_seq, "sequences are contiguous, in queue order");
        *next_seq += count;
        records += count;
    }
    assert!(
        records <= max_records || batch.len() == 1,
        "a batch of {records} records exceeds the budget {max_records}"
    );
}

#[test]
fn two_producers_one_consumer_take_everything_once_in_sequence_order() {
    loom::model(|| {
        let handoff = Arc::new(Handoff::<Item>::new(1, 16));
        // Highest sequence the consumer has taken, stored before it publishes durability.
        let taken = Arc::new(AtomicU64::new(0));

        let producers: Vec<_> = (0..2_u8)
            .map(|producer| {
                let handoff = handoff.clone();
                let taken = taken.clone();
                thread::spawn(move || {
                    let mut pushed = Vec::new();
                    let mut last_durable = 0;
                    for index in 0..2_u8 {
                        let count = u64::from(producer + index) + 1;
                        let seq = handoff.push((producer, index, count), count).expect("open and not full");
                        pushed.push((seq, (producer, index, count)));
                        let durable = handoff.durable();
                        assert!(durable >= last_durable, "durable went back from {last_durable} to {durable}");
                        last_durable = durable;
                        assert!(
                            durable <= taken.load(Ordering::Acquire),
                            "durable {durable} is ahead of what was taken"
                        );
                    }
                    pushed
                })
            })
            .collect();

        let consumer = {
            let handoff = handoff.clone();
            let taken = taken.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut next_seq = 1;
                while got.len() < 4 {
                    let batch = handoff.take(3).expect("not closed");
                    check_batch(&batch, &mut next_seq, 3);
                    got.extend(batch);
                    taken.store(next_seq - 1, Ordering::Release);
                    let before = handoff.durable();
                    handoff.publish_durable(next_seq - 1);
                    assert!(handoff.durable() >= before, "durable is monotone");
                    assert_eq!(handoff.durable(), next_seq - 1);
                }
                got
            })
        };

        let mut pushed: Vec<(u64, Item)> = Vec::new();
        for producer in producers {
            let mine = producer.join().unwrap();
            // Per producer, later pushes get later sequences.
            assert!(mine.windows(2).all(|pair| pair[0].0 < pair[1].0));
            pushed.extend(mine);
        }
        let got = consumer.join().unwrap();
        pushed.sort();
        assert_eq!(got, pushed, "every pushed item is taken exactly once, at the sequence push returned");
        // 1 + 2 + 2 + 3 records.
        assert_eq!(handoff.durable(), 8);
        assert_eq!(handoff.next_seq(), 9);
        assert_eq!(handoff.queued_records(), 0);
    });
}

#[test]
fn close_drains_what_was_pushed_and_refuses_the_rest() {
    loom::model(|| {
        let handoff = Arc::new(Handoff::<Item>::new(5, 16));

        let producers: Vec<_> = (0..2_u8)
            .map(|producer| {
                let handoff = handoff.clone();
                thread::spawn(move || {
                    let mut results = Vec::new();
                    for index in 0..2_u8 {
                        let item = (producer, index, 1);
                        results.push((item, handoff.push(item, 1)));
                    }
                    // Once refused, refused for good.
                    if results[0].1.is_err() {
                        assert_eq!(results[1].1, Err(PushError::Closed));
                    }
                    results
                })
            })
            .collect();

        let consumer = {
            let handoff = handoff.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut next_seq = 5;
                while let Some(batch) = handoff.take(2) {
                    check_batch(&batch, &mut next_seq, 2);
                    got.extend(batch);
                    handoff.publish_durable(next_seq - 1);
                }
                got
            })
        };

        handoff.close();
        assert_eq!(handoff.push((9, 9, 1), 1), Err(PushError::Closed), "a push after close fails");

        let mut accepted: Vec<(u64, Item)> = Vec::new();
        for producer in producers {
            for (item, result) in producer.join().unwrap() {
                match result {
                    Ok(seq) => accepted.push((seq, item)),
                    Err(error) => assert_eq!(error, PushError::Closed),
                }
            }
        }
        let got = consumer.join().unwrap();
        accepted.sort();
        assert_eq!(got, accepted, "everything accepted before close is drained, nothing else");
        assert_eq!(handoff.durable(), 4 + accepted.len() as u64);
        assert!(handoff.take(2).is_none(), "closed and drained stays drained");
    });
}

#[test]
fn full_at_capacity_and_never_more_queued() {
    loom::model(|| {
        let handoff = Arc::new(Handoff::<Item>::new(1, 2));

        let producers: Vec<_> = (0..2_u8)
            .map(|producer| {
                let handoff = handoff.clone();
                thread::spawn(move || {
                    let mut results = Vec::new();
                    for index in 0..2_u8 {
                        let item = (producer, index, 1);
                        results.push((item, handoff.push(item, 1)));
                    }
                    results
                })
            })
            .collect();

        let consumer = {
            let handoff = handoff.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut next_seq = 1;
                // A large budget: each batch is everything queued at that moment.
                while let Some(batch) = handoff.take(100) {
                    check_batch(&batch, &mut next_seq, 2);
                    got.extend(batch);
                }
                got
            })
        };

        let mut accepted: Vec<(u64, Item)> = Vec::new();
        for producer in producers {
            for (item, result) in producer.join().unwrap() {
                match result {
                    Ok(seq) => accepted.push((seq, item)),
                    Err(error) => assert_eq!(error, PushError::Full),
                }
            }
        }
        handoff.close();
        let got = consumer.join().unwrap();
        accepted.sort();
        assert!(accepted.len() >= 2, "an empty-enough queue accepts");
        assert_eq!(got, accepted);
    });
}

#[test]
fn full_is_answered_at_capacity_and_clears_after_take() {
    loom::model(|| {
        let handoff = Handoff::<Item>::new(1, 2);
        assert_eq!(handoff.push((0, 0, 1), 1), Ok(1));
        assert_eq!(handoff.push((0, 1, 1), 1), Ok(2));
        assert_eq!(handoff.push((0, 2, 1), 1), Err(PushError::Full));
        assert_eq!(handoff.next_seq(), 3, "a refused push takes no sequence");
        let batch = handoff.take(1).unwrap();
        assert_eq!(batch, vec![(1, (0, 0, 1))], "the budget is respected");
        assert_eq!(handoff.push((0, 2, 1), 1), Ok(3));
        assert_eq!(handoff.take(10).unwrap(), vec![(2, (0, 1, 1)), (3, (0, 2, 1))]);
        // An item larger than the capacity still goes into an empty queue.
        assert_eq!(handoff.push((0, 3, 5), 5), Ok(4));
        assert_eq!(handoff.push((0, 4, 1), 1), Err(PushError::Full));
        assert_eq!(handoff.take(1).unwrap(), vec![(4, (0, 3, 5))], "an item is never split");
        handoff.publish_durable(8);
        handoff.publish_durable(3);
        assert_eq!(handoff.durable(), 8, "durable never goes back");
    });
}
