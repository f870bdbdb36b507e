//! Transactions: appends, entries from peers, table writes and consumer cursors that
//! become durable together or not at all.

use crate::entry::{Append, Entry, NameError, NodeName, Offset, Seq, TopicName, check_symbol};

/// A table's name (same rules as a topic name). Its change feed is the local topic
/// `_table.<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

/// A durable consumer's name (same rules as a topic name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerName(String);

impl TableName {
    /// Checks and wraps a table name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        check_symbol("table", name.into(), 100).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local topic that carries this table's changes.
    pub fn feed(&self) -> TopicName {
        TopicName::new(format!("_table.{}", self.0))
            .expect("a valid table name of at most 100 bytes makes a valid topic name")
    }
}

impl ConsumerName {
    /// Checks and wraps a consumer name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        check_symbol("consumer", name.into(), 128).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of writes that the store applies atomically: all of them become durable in the
/// same flush, or none is applied and the commit returns the first error.
///
/// A service that reads entry N and writes its results puts the cursor move in the same
/// transaction, so a crash can neither skip nor repeat its work.
#[derive(Debug, Default)]
pub struct Txn {
    pub(crate) ops: Vec<Op>,
}

#[derive(Debug)]
pub(crate) enum Op {
    Append {
        topic: TopicName,
        append: Append,
    },
    Insert {
        topic: TopicName,
        entries: Vec<Entry>,
    },
    Skip {
        topic: TopicName,
        origin: NodeName,
        through: Seq,
    },
    Put {
        table: TableName,
        id: String,
        doc: serde_json::Value,
    },
    Delete {
        table: TableName,
        id: String,
    },
    Cursor {
        consumer: ConsumerName,
        topic: TopicName,
        next: Offset,
    },
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it appends or inserts entries (refused while the disk is full).
    pub(crate) fn has_entries(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::Append { .. } | Op::Insert { .. }))
    }

    /// Appends an entry of this node's origin.
    pub fn append(&mut self, topic: &TopicName, append: Append) -> &mut Self {
        self.ops.push(Op::Append {
            topic: topic.clone(),
            append,
        });
        self
    }

    /// Inserts entries that arrived from a peer, by identity: an entry already held is
    /// ignored; per origin, sequences must follow on from what is held.
    pub fn insert(&mut self, topic: &TopicName, entries: Vec<Entry>) -> &mut Self {
        self.ops.push(Op::Insert {
            topic: topic.clone(),
            entries,
        });
        self
    }

    /// Accounts for sequences of `origin` up to `through` that will never arrive: a peer
    /// lost them (its disk budget forced retention and it recorded a gap), or they were
    /// superseded in a latest-value topic.
    pub fn skip(&mut self, topic: &TopicName, origin: &NodeName, through: Seq) -> &mut Self {
        let (topic, origin) = (topic.clone(), origin.clone());
        self.ops.push(Op::Skip {
            topic,
            origin,
            through,
        });
        self
    }

    /// Writes a JSON document into a table, and its change into the table's feed.
    pub fn put(&mut self, table: &TableName, id: &str, doc: serde_json::Value) -> &mut Self {
        let (table, id) = (table.clone(), id.to_owned());
        self.ops.push(Op::Put { table, id, doc });
        self
    }

    /// Deletes a document (a no-op if absent), and records the change in the feed.
    pub fn delete(&mut self, table: &TableName, id: &str) -> &mut Self {
        self.ops.push(Op::Delete {
            table: table.clone(),
            id: id.to_owned(),
        });
        self
    }

    /// Moves a consumer's cursor: `next` is the first offset it has not processed.
    pub fn cursor(
        &mut self,
        consumer: &ConsumerName,
        topic: &TopicName,
        next: Offset,
    ) -> &mut Self {
        let (consumer, topic) = (consumer.clone(), topic.clone());
        self.ops.push(Op::Cursor {
            consumer,
            topic,
            next,
        });
        self
    }

    /// Whether the transaction holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a committed transaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Each append, in the order given: topic, offset and sequence.
    pub appended: Vec<Appended>,
    /// Entries from peers that were new here.
    pub inserted: u64,
    /// Entries from peers that this node already held.
    pub duplicates: u64,
}

/// Where one append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The topic.
    pub topic: TopicName,
    /// Its local offset.
    pub offset: Offset,
    /// Its sequence at this node, the origin.
    pub seq: Seq,
}
