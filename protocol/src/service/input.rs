//! A service's durable input: one topic read through a consumer named after the service.

use std::collections::VecDeque;

use crate::entry::{Offset, Record, TopicName};
use crate::log::{Consumer, ConsumerName, ReadError, Txn};

use super::{Ctx, ServiceError};

/// How many entries one read takes from the store.
const BATCH: usize = 64;

/// Entries of one topic for one service, each handed out once and committed with the
/// service's writes ([`Input::done`], [`Input::failed`]).
#[derive(Debug)]
pub struct Input {
    ctx: Ctx,
    name: ConsumerName,
    topic: TopicName,
    /// Opened at the first read: a table's change feed exists only after its first write.
    consumer: Option<Consumer>,
    buffered: VecDeque<Record>,
}

impl Input {
    pub(super) fn open(ctx: Ctx, part: &str, topic: &TopicName) -> Result<Input, ServiceError> {
        let name = if part.is_empty() {
            ctx.name.to_owned()
        } else {
            format!("{}.{part}", ctx.name)
        };
        let name = ConsumerName::new(name).map_err(ServiceError::other)?;
        Ok(Input {
            ctx,
            name,
            topic: topic.clone(),
            consumer: None,
            buffered: VecDeque::new(),
        })
    }

    /// Waits for the next entry not yet committed, then the service's processing delay.
    ///
    /// Cancel-safe: dropped before it returns, it hands out the same entry next time.
    pub async fn next(&mut self) -> Result<Record, ServiceError> {
        if self.buffered.is_empty() {
            self.buffered = self.consumer().await?.poll(BATCH).await?.into();
        }
        self.ctx.pace().await;
        self.buffered
            .pop_front()
            .ok_or_else(|| ServiceError::other("the store returned no entry after a wake-up"))
    }

    /// Commits the work done for `record` (`txn`) with the cursor moved past it, and
    /// counts it as processed.
    pub async fn done(&mut self, record: &Record, txn: Txn) -> Result<(), ServiceError> {
        self.commit(record, txn).await?;
        self.ctx.processed();
        Ok(())
    }

    /// Commits `txn` (which records the failure, for whoever reads the output) with the
    /// cursor moved past `record`, and counts it as failed with `why`.
    pub async fn failed(
        &mut self,
        record: &Record,
        txn: Txn,
        why: impl std::fmt::Display,
    ) -> Result<(), ServiceError> {
        self.commit(record, txn).await?;
        self.ctx.failed(why);
        Ok(())
    }

    /// Moves the cursor past `record`, which needed no work (not counted).
    pub async fn skip(&mut self, record: &Record) -> Result<(), ServiceError> {
        self.commit(record, Txn::new()).await
    }

    async fn commit(&mut self, record: &Record, txn: Txn) -> Result<(), ServiceError> {
        let next = Offset(record.offset.0 + 1);
        self.consumer().await?.commit(txn, next).await?;
        Ok(())
    }

    /// The consumer, opened once its topic exists (waiting for it, without polling).
    async fn consumer(&mut self) -> Result<&mut Consumer, ServiceError> {
        if self.consumer.is_none() {
            let store = &self.ctx.store;
            let mut changes = store.changes();
            let consumer = loop {
                changes.borrow_and_update();
                match store.consumer(self.name.clone(), self.topic.clone()) {
                    Ok(consumer) => break consumer,
                    Err(ReadError::UnknownTopic(_)) => changes
                        .changed()
                        .await
                        .map_err(|_| ServiceError::other("the store closed"))?,
                    Err(e) => return Err(e.into()),
                }
            };
            self.consumer = Some(consumer);
        }
        self.consumer
            .as_mut()
            .ok_or_else(|| ServiceError::other("no consumer"))
    }
}
