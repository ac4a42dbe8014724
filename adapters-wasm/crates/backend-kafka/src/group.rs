//! The pure parts of a consumer group member: the range assignor the leader runs, and
//! the bookkeeping of which delivered offsets were handled (what may be committed).

use std::collections::{BTreeMap, VecDeque};

/// A topic partition.
pub type Partition = (String, i32);

/// A member's assignment: per topic, its partitions.
pub type Assignment = Vec<(String, Vec<i32>)>;

/// The range assignor (Kafka's `RangeAssignor`): per topic, the members subscribed to it,
/// sorted by id, each take a contiguous range of its partitions; the first
/// `partitions % members` take one more. Returns each member's assignment, in the order
/// of `members`.
pub fn assign_range(
    members: &[(String, Vec<String>)],
    partitions_of: impl Fn(&str) -> usize,
) -> Vec<(String, Assignment)> {
    let mut out: Vec<(String, BTreeMap<String, Vec<i32>>)> = members
        .iter()
        .map(|(id, _)| (id.clone(), BTreeMap::new()))
        .collect();
    let mut topics: Vec<&String> = members.iter().flat_map(|(_, t)| t).collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let mut subscribed: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].1.contains(topic))
            .collect();
        subscribed.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
        let n = partitions_of(topic);
        let m = subscribed.len();
        let mut next = 0;
        for (rank, &member) in subscribed.iter().enumerate() {
            let take = n / m + usize::from(rank < n % m);
            let parts = (next..next + take).map(|p| p as i32).collect::<Vec<_>>();
            next += take;
            if !parts.is_empty() {
                out[member].1.insert(topic.clone(), parts);
            }
        }
    }
    out.into_iter()
        .map(|(id, topics)| (id, topics.into_iter().collect()))
        .collect()
}

/// Which delivered offsets of each partition were handled: the commit position of a
/// partition is one past the highest offset up to which every delivered record was
/// handled (`Ok`), so nothing unhandled is ever committed.
#[derive(Debug, Default)]
pub struct Progress {
    /// Per partition: delivered offsets in order, with whether each was handled.
    delivered: BTreeMap<Partition, VecDeque<(i64, bool)>>,
    /// Per partition: the position to commit, when it moved since the last commit.
    to_commit: BTreeMap<Partition, i64>,
}

impl Progress {
    /// Records that `offset` of `partition` was handed to the handler.
    pub fn delivered(&mut self, partition: &Partition, offset: i64) {
        self.delivered
            .entry(partition.clone())
            .or_default()
            .push_back((offset, false));
    }

    /// Records that the handler returned `Ok` for `offset`.
    pub fn handled(&mut self, partition: &Partition, offset: i64) {
        let Some(queue) = self.delivered.get_mut(partition) else {
            return;
        };
        if let Some(entry) = queue.iter_mut().find(|(o, _)| *o == offset) {
            entry.1 = true;
        }
        while let Some(&(o, true)) = queue.front() {
            queue.pop_front();
            self.to_commit.insert(partition.clone(), o + 1);
        }
    }

    /// Records that the handler failed `offset`: it and everything delivered after it
    /// in that partition count as not delivered (the partition rewinds to it).
    pub fn failed(&mut self, partition: &Partition, offset: i64) {
        if let Some(queue) = self.delivered.get_mut(partition) {
            queue.retain(|(o, _)| *o < offset);
        }
    }

    /// Takes the positions to commit (one past the last handled offset, per partition
    /// whose position moved).
    pub fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.to_commit)
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect()
    }

    /// Puts back positions whose commit failed (newer positions win).
    pub fn restore_commits(&mut self, commits: Vec<(String, i32, i64)>) {
        for (t, p, o) in commits {
            self.to_commit.entry((t, p)).or_insert(o);
        }
    }

    /// Forgets everything about partitions no longer assigned (after their commit).
    pub fn clear(&mut self) {
        self.delivered.clear();
        self.to_commit.clear();
    }

    /// True when some handled position is not committed yet.
    pub fn has_commits(&self) -> bool {
        !self.to_commit.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> (String, Vec<String>) {
        (id.into(), topics.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn range_assignor_like_kafka() {
        let members = [
            member("c", &["t"]),
            member("a", &["t", "u"]),
            member("b", &["t"]),
        ];
        let out = assign_range(&members, |t| if t == "t" { 7 } else { 2 });
        assert_eq!(out[1].0, "a");
        assert_eq!(
            out[1].1,
            [("t".into(), vec![0, 1, 2]), ("u".into(), vec![0, 1])]
        );
        assert_eq!(out[2].1, [("t".into(), vec![3, 4])]);
        assert_eq!(out[0].1, [("t".into(), vec![5, 6])]);
        // More members than partitions: the last ones get nothing.
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
            member("d", &["t"]),
        ];
        let out = assign_range(&members, |_| 3);
        assert_eq!(out[3].1, []);
        assert_eq!(out[2].1, [("t".into(), vec![2])]);
    }

    #[test]
    fn commits_only_the_contiguous_handled_prefix() {
        let p: Partition = ("t".into(), 0);
        let q: Partition = ("t".into(), 1);
        let mut progress = Progress::default();
        for o in [5, 6, 9] {
            progress.delivered(&p, o);
        }
        progress.delivered(&q, 0);
        progress.handled(&p, 6);
        assert!(!progress.has_commits(), "5 is not handled yet");
        progress.handled(&q, 0);
        progress.handled(&p, 5);
        assert_eq!(
            progress.take_commits(),
            [("t".into(), 0, 7), ("t".into(), 1, 1)]
        );
        progress.failed(&p, 9);
        progress.delivered(&p, 9);
        progress.handled(&p, 9);
        let commits = progress.take_commits();
        assert_eq!(commits, [("t".into(), 0, 10)]);
        progress.restore_commits(commits);
        assert!(progress.has_commits());
        progress.clear();
        assert!(!progress.has_commits());
    }

    #[test]
    fn a_failure_rewinds_what_followed() {
        let p: Partition = ("t".into(), 0);
        let mut progress = Progress::default();
        progress.delivered(&p, 1);
        progress.delivered(&p, 2);
        progress.failed(&p, 1);
        progress.handled(&p, 2);
        assert!(!progress.has_commits());
    }
}
